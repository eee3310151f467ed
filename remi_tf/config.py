"""Typed, validated configuration for training and evaluating REMI.

Resolution order: dataclass defaults -> a YAML preset (``configs/<dataset>.yaml``) -> ``--set key=value``
overrides from the command line. The resolved configuration is written next to the checkpoints
(``<model_dir>/config.yaml``) so that evaluation and export rebuild exactly the trained model.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from remi_tf.suggestions import did_you_mean

NEGATIVE_MODES = ("in_batch", "in_batch_plus_sampled", "sampled")
OPTIMIZERS = ("lazy_adam", "adam")
ROUTING_REGULARIZATION_MODES = ("diagonal", "frobenius")
LOGQ_CORRECTIONS = ("counts", "streaming", "none")
LEGACY_VALUES = {"logq_correction": {True: "counts", False: "none"}}  # the key was a bool before streaming
STRATEGIES = ("auto", "one-device", "mirrored", "multi-worker", "parameter-server")
TRAINING_INPUTS = ("auto", "in_memory", "streaming")
ROUTINGS = ("self_attentive", "comirec_dr", "mind", "last_position")
ENCODERS = ("embeddings", "sasrec")
TRAINING_POSITIONS = ("last", "every")
READOUTS = ("hard", "label_aware")
INTEREST_SCORINGS = ("hard", "max")  # remi_tf.scoring
# Keys that change only how a trained model's K lists are merged: `remi evaluate --set` and `remi export --set`.
EVALUATION_KEYS = ("diversity_coef", "eval_batch_size")


# Keys retired in remi-tf 0.2.0 (issue 38: levers that BENCHMARKS.md shows losing, or constants no run tuned), each
# with the value that 0.2.0 behaves as (ANY_VALUE: a setting that changed nothing in a model 0.2.0 can build). A
# config that sets one to that value loads as before; any other value is refused, naming the last version with it.
ANY_VALUE = object()
RETIRED_KEYS: dict[str, Any] = {
    "interest_temperature": ANY_VALUE, "mixture_gate_dim": ANY_VALUE, "mixture_balance_lambda": 0.0,
    "interests_per_user": "fixed", "interest_weights": "none", "interest_weight_temperature": ANY_VALUE,
    "interest_weight_lambda": ANY_VALUE, "merge": "score", "merge_lambda": ANY_VALUE, "logq_weight": 1.0,
    "normalize_embeddings": False, "learning_rate_schedule": "constant", "routing_exclude_padding": False,
    "remove_accidental_hits": True, "in_memory_max_bytes": 2 << 30, "capsule_initial_maps": "auto",
    "routing_iterations": 3, "logq_hashes": 2}
RETIRED_VALUES = {"interest_scoring": ("logsumexp", "mixture")}
LAST_VERSION_WITH_RETIRED = "0.1.0 (git tag retired-levers-last)"
# Keys added in 0.3.0 (issue 39: the SASRec encoder, now the default), with the value that earlier versions behaved
# as. A model directory's config.yaml holds every key of the version that wrote it, so a key it lacks predates
# the key: `load_saved` reads it as that value, and a 0.2.0 model loads, evaluates and exports unchanged.
KEYS_ADDED_IN_0_3_0 = {"encoder": "embeddings", "training_positions": "last"}
# The 0.2.0 defaults that a 0.3.0 default replaced: a preset written for REMI's model may lean on them.
DEFAULTS_BEFORE_0_3_0 = {"encoder": "embeddings", "routing": "self_attentive", "num_interests": 4,
                         "training_positions": "last", "negatives": "in_batch"}
ALLOWED = "allowed"  # the metadata key of a field's choices or range


@dataclasses.dataclass(frozen=True)
class Choices:
    """The values a string field takes."""

    values: tuple[str, ...]

    def admits(self, value: Any) -> bool:
        return value in self.values

    def __str__(self) -> str:
        return "one of " + ", ".join(repr(value) for value in self.values)


@dataclasses.dataclass(frozen=True)
class Range:
    """The numbers a numeric field takes: low < or <= value < or <= high (None: unbounded)."""

    low: float | None = None
    high: float | None = None
    low_inclusive: bool = True
    high_inclusive: bool = True

    def admits(self, value: Any) -> bool:
        if self.low is not None and (value < self.low if self.low_inclusive else value <= self.low):
            return False
        return self.high is None or (value <= self.high if self.high_inclusive else value < self.high)

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>=' if self.low_inclusive else '>'} {self.low:g}"
        opening, closing = "[" if self.low_inclusive else "(", "]" if self.high_inclusive else ")"
        return f"in {opening}{self.low:g}, {self.high:g}{closing}"


def one_of(choices: tuple[str, ...], default: str | None = None) -> Any:
    """A string field taking one of `choices` (default: the first)."""
    return dataclasses.field(default=choices[0] if default is None else default, metadata={ALLOWED: Choices(choices)})


def at_least(low: float, default: float) -> Any:
    """A numeric field >= low."""
    return dataclasses.field(default=default, metadata={ALLOWED: Range(low)})


def above(low: float, default: float) -> Any:
    """A numeric field > low."""
    return dataclasses.field(default=default, metadata={ALLOWED: Range(low, low_inclusive=False)})


def bounded(default: float, *, above: float | None = None, at_least: float | None = None, below: float | None = None,
            at_most: float | None = None) -> Any:
    """A numeric field in an interval: one lower bound (above / at_least) and one upper (below / at_most)."""
    low, high = (above if at_least is None else at_least), (below if at_most is None else at_most)
    return dataclasses.field(default=default, metadata={ALLOWED: Range(low, high, at_least is not None,
                                                                         at_most is not None)})


@dataclasses.dataclass(frozen=True)
class RemiConfig:
    """Every setting of a REMI run. The defaults are the design measured best on the four shared data sets
    (BENCHMARKS.md 13): SASRec's query tower (encoder "sasrec", routing "last_position", one vector) trained on
    every position with in-batch plus 1,280 uniform negatives and logQ. REMI's multi-interest model is
    `encoder: embeddings`, `routing: self_attentive`, `num_interests: 4`, `training_positions: last`,
    `negatives: in_batch`.

    Model:
      embedding_dim: d, size of item and interest embeddings.
      num_interests: K, number of interest embeddings per user.
      max_history: L, the number of most recent items the query tower reads.
      use_position_embedding: add a learned [L, d] position embedding before routing (as the reference;
        self-attentive routing only).
      encoder: what the routing reads: "embeddings" (the history's item vectors, as ComiRec and REMI) or
        "sasrec" (SASRec's causal self-attention blocks over them: each position's vector reads the items up to
        it; remi_tf.layers.causal_encoder).
      encoder_blocks: the sasrec encoder's transformer blocks.
      encoder_heads: its attention heads (they divide embedding_dim).
      encoder_dropout: its dropout rate, in [0, 1) (after the input, attention weights and feed-forward layers).
      routing: how a history becomes K interests: "self_attentive" (ComiRec-SA, REMI's backbone),
        "comirec_dr" (dynamic routing, a bilinear map per interest and position), "mind" (MIND's
        behaviour-to-interest routing: one shared map, fixed random routing logits) or "last_position" (one
        interest: the encoder's vector at the last item, SASRec's user vector; num_interests 1); remi_tf.layers.
        The capsule routings run 3 rounds, ComiRec-DR's maps start at the identity, MIND's at random
        (models.routing_layer; BENCHMARKS.md 10.5).
      capsule_routing_gradient: let the gradient through the capsule routing's rounds (comirec_dr, mind), so
        that the routing regularization trains the maps (ComiRec's code stops it, and RR then acts on nothing).
      readout: which user vector scores a training example's candidates: "hard" (the K interests score
        them as `interest_scoring` says) or "label_aware" (MIND's attention over the interests, softmax of
        (v_k . e)^readout_power; with interest_scoring "hard" only).
      readout_power: the power of "label_aware" (1: a softmax of the affinities; larger: closer to the max).
      interest_scoring: how the K interests score every candidate in training (remi_tf.scoring): "hard"
        (the interest closest to the positive, as ComiRec and REMI) or "max" (max_k <u_k, v_j>, the score
        serving ranks by).
      served_score_weight: with interest_scoring "hard", the weight of a second in-batch softmax term in which
        every candidate is scored as served (max_k <u_k, v_j>), added to the retrieval loss: the hard read-out
        keeps the interests apart, the second term makes their scores comparable for the merge (0: off).
      use_item_features: when the data has item features (`remi prepare --item-features`), an item's
        embedding is its id row plus, per feature column, the mean embedding of its values.
      use_user_features: when the data has user features (`--user-features`), the user's profile embedding
        (summed over columns) is added to every history item's embedding before routing.
    Objective:
      training_positions: "last" (each training sequence is one example: its history and the next item, at a random
        cut) or "every" (SASRec's objective: the vector at every position t of the history scores item t + 1,
        the last one the cut's target; the candidates are the batch's targets, as with "last"; with routing
        "self_attentive" each position's K interests route the items up to it; not with the capsule routings).
      beta: hardness of the interest-aware hard-negative weights (0 = plain in-batch softmax).
      temperature: logits are divided by it.
      routing_lambda: weight of the routing regularization (0 = ComiRec-SA, no RR).
      routing_regularization_mode: "diagonal" (the reference code's scale) or "frobenius" (the paper's).
      negatives: "in_batch", "in_batch_plus_sampled" (mixed negative sampling) or "sampled" (only
        `num_sampled_negatives` uniformly sampled items shared by the batch, as the reference code).
      num_sampled_negatives: number of uniformly sampled extra negatives per batch.
      logq_correction: subtract log q_j from every logit (sampling-bias correction): "counts" (q of each
        item as a random-cut target, written by prepare; `true` means this), "streaming" (q estimated
        from the training stream itself, remi_tf.frequency: for logs whose popularity drifts and
        warm-started models) or "none" (`false`).
      logq_buckets: the streaming estimator's hash buckets per hash function (it has two:
        remi_tf.frequency.NUM_HASHES).
      logq_alpha: the streaming estimator's moving-average rate, in (0, 1].
    Training:
      optimizer: "lazy_adam" (Adam that updates only the embedding rows of the batch: several times
        faster on CPU with a large item table) or "adam" (stock Adam, the reference's).
      batch_size: examples per training step (the global batch).
      learning_rate: Adam's learning rate.
      max_steps: training steps, exactly (an evaluation at the end).
      eval_every: steps between valid evaluations (one Keras "epoch").
      patience: evaluations without valid Recall@50 improvement before stopping (0: no early stopping).
      valid_users: how many valid users each validation during training reads: a fixed sample, drawn with
        `seed`, the same at every evaluation (0: the whole split, whatever the budget; more than the split:
        the whole split).
        `remi evaluate` reads the whole split unless given --users.
      valid_score_budget: the most user x item scores one validation computes (0: no bound): on a catalogue
        of N items the sample holds at most valid_score_budget / N users (at least 100), so that validation
        costs the same on a large catalogue as on a small one (BENCHMARKS.md 11).
      checkpoint_every: steps between resumable backups (each evaluation takes one too).
      steps_per_execution: training steps per tf.function call (larger is faster).
      seed: the initial weights, the sampler's passes and the user split's hash start from it.
    Distribution and input:
      strategy: "auto" (from TF_CONFIG: ps tasks -> parameter-server, several workers -> multi-worker,
        else one-device), "one-device", "mirrored", "multi-worker" or "parameter-server" (remi_tf.distribute).
        batch_size is the global batch, split over the replicas of a synchronous strategy.
      training_input: "in_memory" (the train split in one ragged tensor per input pipeline), "streaming"
        (each worker reads its share of the shards, users shuffled in a buffer) or "auto": streaming when
        the train shards exceed 2 GiB (remi_tf.input.IN_MEMORY_MAX_BYTES).
      shuffle_buffer: users in the streaming shuffle buffer.
      cluster_timeout_s: how long a task waits for the rest of its cluster before failing.
    Warm start:
      warm_start_shrink: `remi train --warm-start` multiplies the carried item table by it (1 = as it was).
      warm_start_recent_fraction: the share of each warm-start batch whose targets are events the parent
        did not train on (from the parent data's time boundary on; in-memory input); the rest are drawn as
        always. 0 = every example drawn alike.
    Evaluation:
      eval_batch_size: users per retrieval batch during evaluation.
      diversity_coef: 0 merges the K retrievals by score (the paper's); > 0 merges them with ComiRec's greedy
        category-aware merge (remi_tf.diversity; needs item categories: `remi prepare --item-features`).
        An evaluation-time key: `remi evaluate --set diversity_coef=0.1`.
    """

    embedding_dim: int = at_least(1, 64)
    num_interests: int = at_least(1, 1)
    max_history: int = at_least(1, 20)
    use_position_embedding: bool = True
    encoder: str = one_of(ENCODERS, "sasrec")
    encoder_blocks: int = at_least(1, 2)
    encoder_heads: int = at_least(1, 1)
    encoder_dropout: float = bounded(0.5, at_least=0, below=1)
    routing: str = one_of(ROUTINGS, "last_position")
    capsule_routing_gradient: bool = False
    readout: str = one_of(READOUTS)
    readout_power: int = at_least(0, 1)
    interest_scoring: str = one_of(INTEREST_SCORINGS)
    served_score_weight: float = at_least(0, 0.0)
    use_item_features: bool = True
    use_user_features: bool = True

    beta: float = at_least(0, 0.0)
    temperature: float = above(0, 1.0)
    routing_lambda: float = at_least(0, 100.0)
    routing_regularization_mode: str = one_of(ROUTING_REGULARIZATION_MODES)
    training_positions: str = one_of(TRAINING_POSITIONS, "every")
    negatives: str = one_of(NEGATIVE_MODES, "in_batch_plus_sampled")
    num_sampled_negatives: int = at_least(0, 1280)
    logq_correction: str = one_of(LOGQ_CORRECTIONS)
    logq_buckets: int = at_least(1, 1 << 20)
    logq_alpha: float = bounded(1e-2, above=0, at_most=1)

    batch_size: int = at_least(1, 128)
    optimizer: str = one_of(OPTIMIZERS)
    learning_rate: float = above(0, 3e-3)
    max_steps: int = at_least(1, 10_000)
    eval_every: int = at_least(1, 1_000)
    patience: int = at_least(0, 5)
    valid_users: int = at_least(0, 3_000)
    valid_score_budget: int = at_least(0, 100_000_000)
    checkpoint_every: int = at_least(1, 1_000)
    steps_per_execution: int = at_least(1, 50)
    seed: int = 0

    strategy: str = one_of(STRATEGIES)
    training_input: str = one_of(TRAINING_INPUTS)
    shuffle_buffer: int = at_least(1, 100_000)
    cluster_timeout_s: float = above(0, 300.0)

    warm_start_shrink: float = bounded(0.3, above=0, at_most=1)
    warm_start_recent_fraction: float = bounded(0.0, at_least=0, below=1)

    eval_batch_size: int = at_least(1, 512)
    diversity_coef: float = at_least(0, 0.0)

    def validate(self) -> RemiConfig:
        """Raises ValueError naming the offending field; returns self so calls can be chained. Each field's
        choices or range are declared beside it (its metadata); the rules between fields follow."""
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"config field {field.name!r} must be a finite number, got {value!r}")
            allowed = field.metadata.get(ALLOWED)
            if allowed is not None and not allowed.admits(value):
                hint = did_you_mean(value, allowed.values) if isinstance(allowed, Choices) else ""
                raise ValueError(f"config field {field.name!r} must be {allowed}, got {value!r}{hint}")
        self.validate_encoder()
        if self.negatives != "in_batch" and self.num_sampled_negatives < 1:
            raise ValueError("config field 'num_sampled_negatives' must be >= 1 when negatives="
                             f"{self.negatives!r}")
        if self.readout == "label_aware" and self.interest_scoring != "hard":
            raise ValueError(f"config field 'interest_scoring' must be 'hard' with readout 'label_aware' (the read-out "
                             f"already combines the interests), got {self.interest_scoring!r}")
        if self.served_score_weight and (self.interest_scoring != "hard" or self.readout != "hard"):
            raise ValueError("config field 'served_score_weight' adds the served score to the hard read-out: it needs "
                             f"interest_scoring 'hard' and readout 'hard' (got {self.interest_scoring!r}, "
                             f"{self.readout!r})")
        return self

    def validate_encoder(self) -> None:
        """The rules between the encoder's, the routing's and the objective's fields."""
        if self.encoder == "sasrec" and self.embedding_dim % self.encoder_heads:
            raise ValueError(f"config field 'encoder_heads' must divide embedding_dim {self.embedding_dim}, got "
                             f"{self.encoder_heads}")
        if self.routing == "last_position" and self.num_interests != 1:
            raise ValueError("config field 'num_interests' must be 1 with routing 'last_position' (one vector per "
                             f"user), got {self.num_interests}; since 0.3.0 that routing and the SASRec encoder are "
                             "the defaults: for REMI's multi-interest model set "
                             + ", ".join(f"{key}: {value}" for key, value in DEFAULTS_BEFORE_0_3_0.items()
                                         if key != "num_interests"))
        if self.training_positions == "every" and self.routing not in ("last_position", "self_attentive"):
            raise ValueError("config field 'training_positions' 'every' routes every prefix of a history: it needs "
                             f"routing 'last_position' or 'self_attentive', got {self.routing!r}")
        if self.training_positions == "every" and (self.readout != "hard" or self.served_score_weight):
            raise ValueError("config field 'training_positions' 'every' scores with interest_scoring alone: it needs "
                             "readout 'hard' and served_score_weight 0")

    def replace(self, **changes: Any) -> RemiConfig:
        """A validated copy with `changes` applied."""
        return dataclasses.replace(self, **changes).validate()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(name: str, value: Any, field_type: type) -> Any:
    """Converts a YAML/command-line value to the field's type, or raises a ValueError naming the field."""
    legacy = LEGACY_VALUES.get(name, {})
    if isinstance(value, bool) and value in legacy:
        return legacy[value]
    if field_type is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ValueError(f"config field {name!r} expects true/false, got {value!r}")
    try:
        if isinstance(value, bool) and field_type is not str:  # bool is an int to Python: true would be 1
            raise ValueError
        if field_type is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        return field_type(value)
    except (TypeError, ValueError):
        raise ValueError(f"config field {name!r} expects {field_type.__name__}, got {value!r}") from None


def from_mapping(values: Mapping[str, Any], base: RemiConfig | None = None, source: str = "config",
                 validate: bool = True) -> RemiConfig:
    """Applies `values` on top of `base` (default: the defaults), validated unless `validate` is False (a stage of
    `load`); unknown keys raise a ValueError, and so do retired keys set to anything but what this version does
    (RETIRED_KEYS)."""
    base = base or RemiConfig()
    values = without_retired_keys(values, source)
    types = {f.name: type(getattr(base, f.name)) for f in dataclasses.fields(RemiConfig)}
    unknown = sorted(set(values) - set(types))
    if unknown:
        hints = {key: did_you_mean(key, types) for key in unknown}
        known = "" if all(hints.values()) else f"; known keys: {sorted(types)}"
        raise ValueError(f"{source}: unknown config key(s) {', '.join(repr(key) + hint for key, hint in hints.items())}"
                         f"{known}")
    changes = {name: _coerce(name, value, types[name]) for name, value in values.items()}
    config = dataclasses.replace(base, **changes)
    return config.validate() if validate else config


def without_retired_keys(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    """`values` less the retired keys that hold what this version does; a retired key or value set otherwise is
    refused, naming it and the last version that had it."""
    kept = {}
    for name, value in values.items():
        if name in RETIRED_KEYS:
            behaves_as = RETIRED_KEYS[name]
            if behaves_as is ANY_VALUE or value == behaves_as:
                continue
            raise ValueError(f"{source}: config key {name!r} ({value!r}) was retired in remi-tf 0.2.0, measured to "
                             f"lose (BENCHMARKS.md); the last version with it is {LAST_VERSION_WITH_RETIRED}. Remove "
                             f"the key (0.2.0 behaves as {name}={behaves_as!r}), or use that version for this model")
        if value in RETIRED_VALUES.get(name, ()):
            raise ValueError(f"{source}: {name} {value!r} was retired in remi-tf 0.2.0, measured to lose "
                             f"(BENCHMARKS.md 10.12-10.16); the last version with it is {LAST_VERSION_WITH_RETIRED}")
        kept[name] = value
    return kept


def parse_overrides(overrides: Iterable[str]) -> dict[str, Any]:
    """Parses ``key=value`` strings (values read as YAML scalars: 0.1, true, in_batch)."""
    parsed: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects key=value, got {item!r}")
        parsed[key.strip()] = yaml.safe_load(value) if value.strip() else value
    return parsed


def reference_markdown() -> str:
    """The configuration reference (docs/configuration.md): every key with its default and its description,
    from RemiConfig's docstring, by section."""
    entries: dict[str, tuple[str, str]] = {}
    section, current = "", ""
    for line in (RemiConfig.__doc__ or "").splitlines():
        heading = re.fullmatch(r"    (\w[\w ]*):", line)
        entry = re.fullmatch(r"      (\w+): (.*)", line)
        if heading:
            section, current = heading.group(1), ""
        elif entry:
            current = entry.group(1)
            entries[current] = (section, entry.group(2))
        elif current and line.startswith("        "):
            entries[current] = (section, f"{entries[current][1]} {line.strip()}")
    lines = ["# Configuration reference", "",
             "Every key of `RemiConfig` (remi_tf/config.py): a YAML preset (`--config`) and `--set key=value` "
             "override the defaults. Generated from the class's docstring (`python -m remi_tf.config`); a test "
             "keeps this page equal to it."]
    for title in dict.fromkeys(section for section, _ in entries.values()):
        lines += ["", f"## {title}", "", "| key | default | allowed | meaning |", "|---|---|---|---|"]
        for field in dataclasses.fields(RemiConfig):
            if entries.get(field.name, ("",))[0] == title:
                text = entries[field.name][1].replace("|", "\\|")
                allowed = field.metadata.get(ALLOWED, field.type)
                lines.append(f"| `{field.name}` | `{field.default!r}` | {allowed} | {text} |")
    return "\n".join(lines) + "\n"


def load(config_file: str | os.PathLike | None = None, overrides: Iterable[str] = ()) -> RemiConfig:
    """defaults -> YAML file -> overrides, validated."""
    config = RemiConfig()
    if config_file is not None:
        if os.path.isdir(config_file):
            raise ValueError(f"--config {config_file}: a directory; expected a YAML preset such as "
                             "configs/amazon-cds.yaml")
        config = from_mapping(read_mapping(config_file), config, source=str(config_file), validate=False)
    return from_mapping(parse_overrides(overrides), config, source="--set", validate=False).validate()


def load_saved(config_file: str | os.PathLike) -> RemiConfig:
    """A config.yaml that `save` wrote (a model directory's), the keys added since its version read as the
    behaviour of that version (KEYS_ADDED_IN_0_3_0)."""
    return from_mapping({**KEYS_ADDED_IN_0_3_0, **read_mapping(config_file)}, source=str(config_file))


def read_mapping(config_file: str | os.PathLike) -> dict[str, Any]:
    """A YAML file's mapping of config keys (empty file: none), or a ValueError naming the file."""
    with open(config_file, encoding="utf-8") as stream:
        try:
            values = yaml.safe_load(stream) or {}
        except yaml.YAMLError as error:
            raise ValueError(f"{config_file}: not valid YAML ({' '.join(str(error).split())})") from None
    if not isinstance(values, dict):
        raise ValueError(f"{config_file}: expected a mapping of config keys, got {type(values).__name__}")
    return values


def save(config: RemiConfig, path: str | os.PathLike) -> None:
    """Writes the resolved config as YAML, atomically."""
    from remi_tf import atomic  # TensorFlow's file systems: imported when needed, so the config loads quickly

    atomic.write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))


if __name__ == "__main__":
    print(reference_markdown(), end="")
