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
LEARNING_RATE_SCHEDULES = ("constant", "cosine")
ROUTING_REGULARIZATION_MODES = ("diagonal", "frobenius")
LOGQ_CORRECTIONS = ("counts", "streaming", "none")
LEGACY_VALUES = {"logq_correction": {True: "counts", False: "none"}}  # the key was a bool before streaming
STRATEGIES = ("auto", "one-device", "mirrored", "multi-worker", "parameter-server")
TRAINING_INPUTS = ("auto", "in_memory", "streaming")
ROUTINGS = ("self_attentive", "comirec_dr", "mind")
READOUTS = ("hard", "label_aware")
CAPSULE_INITIAL_MAPS = ("auto", "random", "identity")  # auto: per routing (models.routing_layer)
INTEREST_SCORINGS = ("hard", "max", "logsumexp", "mixture")  # remi_tf.scoring
INTEREST_WEIGHTS = ("none", "distilled", "served")
INTERESTS_PER_USER = ("fixed", "log2")  # remi_tf.layers.interest_count
MERGES = ("score", "quota", "weighted")  # remi_tf.merging
# Keys that change only how a trained model's K lists are merged: `remi evaluate --set` and `remi export --set`.
EVALUATION_KEYS = ("merge", "merge_lambda", "diversity_coef", "eval_batch_size")


@dataclasses.dataclass(frozen=True)
class RemiConfig:
    """Every setting of a REMI run. Defaults are the paper's amazon settings with in-batch negatives.

    Model:
      embedding_dim: d, size of item and interest embeddings.
      num_interests: K, number of interest embeddings per user.
      max_history: L, the number of most recent items the query tower reads.
      use_position_embedding: add a learned [L, d] position embedding before routing (as the reference;
        self-attentive routing only).
      routing: how a history becomes K interests: "self_attentive" (ComiRec-SA, REMI's backbone),
        "comirec_dr" (dynamic routing, a bilinear map per interest and position) or "mind" (MIND's
        behaviour-to-interest routing: one shared map, fixed random routing logits); remi_tf.layers.
      routing_iterations: dynamic-routing rounds (comirec_dr, mind).
      capsule_initial_maps: the bilinear maps' start (comirec_dr, mind): "identity" (plus small noise; each
        prediction starts as the item's own embedding), "random" (He-normal, as the ComiRec and MIND codes)
        or "auto": identity for comirec_dr (it won on every data set), random for mind (it did not win on
        ml-1m); BENCHMARKS.md 10.5.
      capsule_routing_gradient: let the gradient through the capsule routing's rounds (comirec_dr, mind), so
        that the routing regularization trains the maps (ComiRec's code stops it, and RR then acts on nothing).
      readout: which user vector scores a training example's candidates: "hard" (the K interests score
        them as `interest_scoring` says) or "label_aware" (MIND's attention over the interests, softmax of
        (v_k . e)^readout_power; with interest_scoring "hard" only).
      readout_power: the power of "label_aware" (1: a softmax of the affinities; larger: closer to the max).
      interest_scoring: how the K interests score every candidate in training (remi_tf.scoring): "hard"
        (the interest closest to the positive, as ComiRec and REMI), "max" (max_k <u_k, v_j>, the score
        serving ranks by), "logsumexp" (interest_temperature * log sum_k exp(<u_k, v_j> / that)) or "mixture"
        (sum_k pi_k(u, j) <u_k, v_j> with a learned item-dependent gate: remi_tf.layers.InterestMixture).
        Evaluation and the exported models score as training did.
      interest_temperature: tau of "logsumexp" and of the "mixture" gate's soft max (> 0; small tau approaches
        "max").
      mixture_gate_dim: the rank m of the "mixture" gate's bilinear affinity <P u_k, Q v_j>.
      mixture_balance_lambda: with interest_scoring "mixture", the weight of a term that keeps every interest in
        use: log K minus the entropy of the batch's mean gate on its positives, mean_b pi(u_b, v_target_b) (0:
        off; >= 0). Without it the gate can leave an interest no item (BENCHMARKS.md 10.16).
      served_score_weight: with interest_scoring "hard", the weight of a second in-batch softmax term in which
        every candidate is scored as served (max_k <u_k, v_j>), added to the retrieval loss: the hard read-out
        keeps the interests apart, the second term makes their scores comparable for the merge (0: off).
      interests_per_user: "fixed" (every user has K interests) or "log2" (MIND's K_u = max(1, min(K,
        floor(log2 n))) for n known history items; the other interests repeat the kept ones, so the lookup and
        training see K_u: remi_tf.layers.interest_count). Not with interest_weights "distilled". It lost on every
        Amazon set, most for short histories (BENCHMARKS.md 10.13).
      interest_weights: "none", "distilled" or "served": a small predictor outputs pi(u) over the K interests
        (remi_tf.layers.InterestWeights). "distilled" trains it by KL(p || pi) towards the teacher
        p_k = softmax_k(cos(u_k, v_target) / interest_weight_temperature) (TiMiRec); "served" by the in-batch
        softmax of the weighted merge's score max_k(<u_k, v_j> + log pi_k) (RemiModel.interest_weight_loss).
        Either term has weight interest_weight_lambda and trains the predictor only. The merges "quota" and
        "weighted" read pi.
      interest_weight_temperature: T of the "distilled" teacher (> 0).
      interest_weight_lambda: the weight of the interest weights' training term (>= 0).
      use_item_features: when the data has item features (`remi prepare --item-features`), an item's
        embedding is its id row plus, per feature column, the mean embedding of its values.
      use_user_features: when the data has user features (`--user-features`), the user's profile embedding
        (summed over columns) is added to every history item's embedding before routing.
    Objective:
      beta: hardness of the interest-aware hard-negative weights (0 = plain in-batch softmax).
      temperature: logits are divided by it.
      normalize_embeddings: score with unit-length interests and item-tower vectors (cosine similarity;
        pair it with a temperature below 1). Training, evaluation and the exported models all score the
        normalised vectors; the routing still reads the raw item vectors.
      routing_lambda: weight of the routing regularization (0 = ComiRec-SA, no RR).
      routing_regularization_mode: "diagonal" (the reference code's scale) or "frobenius" (the paper's).
      routing_exclude_padding: compute the routing covariance over valid positions only.
      negatives: "in_batch", "in_batch_plus_sampled" (mixed negative sampling) or "sampled" (only
        `num_sampled_negatives` uniformly sampled items shared by the batch, as the reference code).
      num_sampled_negatives: number of uniformly sampled extra negatives per batch.
      logq_correction: subtract log q_j from every logit (sampling-bias correction): "counts" (q of each
        item as a random-cut target, written by prepare; `true` means this), "streaming" (q estimated
        from the training stream itself, remi_tf.frequency: for logs whose popularity drifts and
        warm-started models) or "none" (`false`).
      logq_buckets: the streaming estimator's hash buckets per hash function.
      logq_hashes: the streaming estimator's number of hash functions.
      logq_alpha: the streaming estimator's moving-average rate, in (0, 1].
      logq_weight: the share of the correction to apply, in [0, 1]: the logits lose logq_weight * log q_j
        (1 = the full correction; 0.5 leaves part of the popularity in the scores; 0 is the same as "none").
      remove_accidental_hits: drop negatives whose item equals the row's positive.
    Training:
      optimizer: "lazy_adam" (Adam that updates only the embedding rows of the batch: several times
        faster on CPU with a large item table) or "adam" (stock Adam, the reference's).
      learning_rate_schedule: "constant" (learning_rate throughout) or "cosine" (cosine decay from
        learning_rate to 0 over max_steps).
      batch_size: examples per training step (the global batch).
      learning_rate: Adam's learning rate (the start of "cosine").
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
        the train shards exceed in_memory_max_bytes.
      shuffle_buffer: users in the streaming shuffle buffer.
      in_memory_max_bytes: the train shards' size up to which "auto" reads them into memory.
      cluster_timeout_s: how long a task waits for the rest of its cluster before failing.
    Warm start:
      warm_start_shrink: `remi train --warm-start` multiplies the carried item table by it (1 = as it was).
      warm_start_recent_fraction: the share of each warm-start batch whose targets are events the parent
        did not train on (from the parent data's time boundary on; in-memory input); the rest are drawn as
        always. 0 = every example drawn alike.
    Evaluation:
      eval_batch_size: users per retrieval batch during evaluation.
      merge: how the K retrievals become one list (remi_tf.merging): "score" (by score, the paper's),
        "quota" (interest k gets round(N * pi_k) of the N slots) or "weighted" (interest k's scores gain
        merge_lambda * log pi_k before the merge by score); the last two need interest weights.
        An evaluation-time key (`remi evaluate --set merge=quota`, `remi export --set merge=quota`).
      merge_lambda: the weight of log pi_k in the "weighted" merge (>= 0).
      diversity_coef: 0 merges the K retrievals by score; > 0 merges them with ComiRec's greedy
        category-aware merge (remi_tf.diversity; needs item categories: `remi prepare --item-features`).
        An evaluation-time key: `remi evaluate --set diversity_coef=0.1`.
    """

    embedding_dim: int = 64
    num_interests: int = 4
    max_history: int = 20
    use_position_embedding: bool = True
    routing: str = "self_attentive"
    routing_iterations: int = 3
    capsule_initial_maps: str = "auto"
    capsule_routing_gradient: bool = False
    readout: str = "hard"
    readout_power: int = 1
    interest_scoring: str = "hard"
    interest_temperature: float = 1.0
    mixture_gate_dim: int = 16
    mixture_balance_lambda: float = 0.0
    served_score_weight: float = 0.0
    interests_per_user: str = "fixed"
    interest_weights: str = "none"
    interest_weight_temperature: float = 0.1
    interest_weight_lambda: float = 1.0
    use_item_features: bool = True
    use_user_features: bool = True

    beta: float = 0.0
    temperature: float = 1.0
    normalize_embeddings: bool = False
    routing_lambda: float = 100.0
    routing_regularization_mode: str = "diagonal"
    routing_exclude_padding: bool = False
    negatives: str = "in_batch"
    num_sampled_negatives: int = 1280
    logq_correction: str = "counts"
    logq_buckets: int = 1 << 20
    logq_hashes: int = 2
    logq_alpha: float = 0.01
    logq_weight: float = 1.0
    remove_accidental_hits: bool = True

    batch_size: int = 128
    optimizer: str = "lazy_adam"
    learning_rate: float = 3e-3
    learning_rate_schedule: str = "constant"
    max_steps: int = 10_000
    eval_every: int = 1_000
    patience: int = 5
    valid_users: int = 3_000
    valid_score_budget: int = 100_000_000
    checkpoint_every: int = 1_000
    steps_per_execution: int = 50
    seed: int = 0

    strategy: str = "auto"
    training_input: str = "auto"
    in_memory_max_bytes: int = 2 << 30
    shuffle_buffer: int = 100_000
    cluster_timeout_s: float = 300.0

    warm_start_shrink: float = 0.3
    warm_start_recent_fraction: float = 0.0

    eval_batch_size: int = 512
    diversity_coef: float = 0.0
    merge: str = "score"
    merge_lambda: float = 1.0

    def validate(self) -> RemiConfig:
        """Raises ValueError naming the offending field; returns self so calls can be chained."""
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"config field {field.name!r} must be a finite number, got {value!r}")
        positive_ints = ("embedding_dim", "num_interests", "max_history", "batch_size", "max_steps",
                         "eval_every", "checkpoint_every", "steps_per_execution", "eval_batch_size", "shuffle_buffer",
                         "in_memory_max_bytes", "logq_buckets", "logq_hashes", "routing_iterations", "mixture_gate_dim")
        for name in positive_ints:
            if getattr(self, name) < 1:
                raise ValueError(f"config field {name!r} must be >= 1, got {getattr(self, name)!r}")
        if self.temperature <= 0:
            raise ValueError(f"config field 'temperature' must be > 0, got {self.temperature!r}")
        if self.learning_rate <= 0:
            raise ValueError(f"config field 'learning_rate' must be > 0, got {self.learning_rate!r}")
        for name in ("interest_temperature", "interest_weight_temperature"):
            if getattr(self, name) <= 0:
                raise ValueError(f"config field {name!r} must be > 0, got {getattr(self, name)!r}")
        for name in ("beta", "routing_lambda", "patience", "valid_users", "valid_score_budget", "readout_power",
                     "diversity_coef", "interest_weight_lambda", "merge_lambda"):
            if getattr(self, name) < 0:
                raise ValueError(f"config field {name!r} must be >= 0, got {getattr(self, name)!r}")
        if self.negatives not in NEGATIVE_MODES:
            raise ValueError(f"config field 'negatives' must be one of {NEGATIVE_MODES}, got {self.negatives!r}"
                             f"{did_you_mean(self.negatives, NEGATIVE_MODES)}")
        if self.negatives != "in_batch" and self.num_sampled_negatives < 1:
            raise ValueError("config field 'num_sampled_negatives' must be >= 1 when negatives="
                             f"{self.negatives!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"config field 'optimizer' must be one of {OPTIMIZERS}, got {self.optimizer!r}"
                             f"{did_you_mean(self.optimizer, OPTIMIZERS)}")
        if self.routing_regularization_mode not in ROUTING_REGULARIZATION_MODES:
            raise ValueError("config field 'routing_regularization_mode' must be one of "
                             f"{ROUTING_REGULARIZATION_MODES}, got {self.routing_regularization_mode!r}"
                             f"{did_you_mean(self.routing_regularization_mode, ROUTING_REGULARIZATION_MODES)}")
        if not 0.0 < self.warm_start_shrink <= 1.0:
            raise ValueError(f"config field 'warm_start_shrink' must be in (0, 1], got {self.warm_start_shrink!r}")
        if not 0.0 <= self.warm_start_recent_fraction < 1.0:
            raise ValueError("config field 'warm_start_recent_fraction' must be in [0, 1), got "
                             f"{self.warm_start_recent_fraction!r}")
        if not 0.0 <= self.logq_weight <= 1.0:
            raise ValueError(f"config field 'logq_weight' must be in [0, 1], got {self.logq_weight!r}")
        if not 0.0 < self.logq_alpha <= 1.0:
            raise ValueError(f"config field 'logq_alpha' must be in (0, 1], got {self.logq_alpha!r}")
        for name, allowed in (("strategy", STRATEGIES), ("training_input", TRAINING_INPUTS),
                              ("logq_correction", LOGQ_CORRECTIONS), ("routing", ROUTINGS), ("readout", READOUTS),
                              ("learning_rate_schedule", LEARNING_RATE_SCHEDULES),
                              ("capsule_initial_maps", CAPSULE_INITIAL_MAPS), ("interest_scoring", INTEREST_SCORINGS),
                              ("interest_weights", INTEREST_WEIGHTS), ("merge", MERGES),
                              ("interests_per_user", INTERESTS_PER_USER)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"config field {name!r} must be one of {allowed}, got {getattr(self, name)!r}"
                                 f"{did_you_mean(getattr(self, name), allowed)}")
        if self.readout == "label_aware" and self.interest_scoring != "hard":
            raise ValueError(f"config field 'interest_scoring' must be 'hard' with readout 'label_aware' (the read-out "
                             f"already combines the interests), got {self.interest_scoring!r}")
        if not self.mixture_balance_lambda >= 0:
            raise ValueError(f"config field 'mixture_balance_lambda' must be >= 0, got {self.mixture_balance_lambda!r}")
        if self.mixture_balance_lambda and self.interest_scoring != "mixture":
            raise ValueError("config field 'mixture_balance_lambda' balances the mixture gate: it needs "
                             f"interest_scoring 'mixture' (got {self.interest_scoring!r})")
        if not self.served_score_weight >= 0:
            raise ValueError(f"config field 'served_score_weight' must be >= 0, got {self.served_score_weight!r}")
        if self.served_score_weight and (self.interest_scoring != "hard" or self.readout != "hard"):
            raise ValueError("config field 'served_score_weight' adds the served score to the hard read-out: it needs "
                             f"interest_scoring 'hard' and readout 'hard' (got {self.interest_scoring!r}, "
                             f"{self.readout!r})")
        if self.interests_per_user == "log2" and self.interest_weights == "distilled":
            raise ValueError("config field 'interests_per_user' 'log2' does not combine with interest_weights "
                             "'distilled' (its teacher would spread weight over repeated interests): use 'served'")
        if self.merge in ("quota", "weighted") and self.interest_weights == "none":
            raise ValueError(f"config field 'merge' {self.merge!r} reads learned interest weights, and this model has "
                             "none (interest_weights 'none'): train with --set interest_weights=distilled, or keep "
                             "merge 'score'")
        if self.cluster_timeout_s <= 0:
            raise ValueError(f"config field 'cluster_timeout_s' must be > 0, got {self.cluster_timeout_s!r}")
        return self

    def replace(self, **changes: Any) -> RemiConfig:
        """A validated copy with `changes` applied."""
        return dataclasses.replace(self, **changes).validate()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def with_merge(config: RemiConfig, merge: str | None = None, merge_lambda: float | None = None) -> RemiConfig:
    """`config` with the merge settings given (None: the config's own), validated: a merge by interest weights
    is refused for a model without them, naming the fix."""
    changes = {name: value for name, value in (("merge", merge), ("merge_lambda", merge_lambda)) if value is not None}
    return config.replace(**changes)


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


def from_mapping(values: Mapping[str, Any], base: RemiConfig | None = None, source: str = "config") -> RemiConfig:
    """Applies `values` on top of `base` (default: the defaults); unknown keys raise a ValueError."""
    base = base or RemiConfig()
    types = {f.name: type(getattr(base, f.name)) for f in dataclasses.fields(RemiConfig)}
    unknown = sorted(set(values) - set(types))
    if unknown:
        hints = {key: did_you_mean(key, types) for key in unknown}
        known = "" if all(hints.values()) else f"; known keys: {sorted(types)}"
        raise ValueError(f"{source}: unknown config key(s) {', '.join(repr(key) + hint for key, hint in hints.items())}"
                         f"{known}")
    changes = {name: _coerce(name, value, types[name]) for name, value in values.items()}
    return dataclasses.replace(base, **changes).validate()


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
        lines += ["", f"## {title}", "", "| key | default | meaning |", "|---|---|---|"]
        for field in dataclasses.fields(RemiConfig):
            if entries.get(field.name, ("",))[0] == title:
                text = entries[field.name][1].replace("|", "\\|")
                lines.append(f"| `{field.name}` | `{field.default!r}` | {text} |")
    return "\n".join(lines) + "\n"


def load(config_file: str | os.PathLike | None = None, overrides: Iterable[str] = ()) -> RemiConfig:
    """defaults -> YAML file -> overrides, validated."""
    config = RemiConfig()
    if config_file is not None:
        if os.path.isdir(config_file):
            raise ValueError(f"--config {config_file}: a directory; expected a YAML preset such as "
                             "configs/amazon-cds.yaml")
        with open(config_file, encoding="utf-8") as stream:
            try:
                values = yaml.safe_load(stream) or {}
            except yaml.YAMLError as error:
                raise ValueError(f"{config_file}: not valid YAML ({' '.join(str(error).split())})") from None
        if not isinstance(values, dict):
            raise ValueError(f"{config_file}: expected a mapping of config keys, got {type(values).__name__}")
        config = from_mapping(values, config, source=str(config_file))
    return from_mapping(parse_overrides(overrides), config, source="--set")


def save(config: RemiConfig, path: str | os.PathLike) -> None:
    """Writes the resolved config as YAML, atomically."""
    from remi_tf import atomic  # TensorFlow's file systems: imported when needed, so the config loads quickly

    atomic.write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))


if __name__ == "__main__":
    print(reference_markdown(), end="")
