"""tf.data input of prepared data: the random-cut training sampler and the evaluation protocol's cut.

Item ids become the model's indices here, once (padding 0, unknown 1, items 2..; see remi_tf.models).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from remi_tf import data_directory, feature_tables, item_index, metrics
from remi_tf.config import RemiConfig
from remi_tf.data_directory import MIN_CUT
from remi_tf.item_index import FIRST_ITEM_INDEX, item_lookup

logger = logging.getLogger(__name__)

EVAL_CUT_FRACTION = 0.8
PREFETCH_BATCHES = 16
IN_MEMORY_MAX_BYTES = 2 << 30  # training_input "auto": the train shards' size up to which they are read into memory
MIN_VALID_USERS = 100  # the smallest validation sample the score budget shrinks to
VALID_SAMPLE_STREAM = 7_919  # the user sample's random stream beside the seed (other draws use the seed alone)


def read_vocabulary(data_dir: str) -> list[str]:
    """Item ids of `items.tsv` in file order (most frequent first)."""
    path = data_directory.items_path(data_dir)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{path} not found: is {data_dir!r} a directory written by `remi prepare`?")
    return data_directory.read_item_ids(path)


def read_target_probability(data_dir: str) -> np.ndarray:
    """q from items.tsv (written by `remi prepare`), as [items + 2] by model index (0 for padding and OOV)."""
    return np.concatenate([np.zeros(FIRST_ITEM_INDEX), data_directory.read_target_probability(
        data_directory.items_path(data_dir))])


class IndexedSequence(NamedTuple):
    """One sequence record with item indices: user id, items [n] int64, history_length (where a time
    split's evaluation targets begin; -1: at the protocol's cut) and the events' timestamps [n]."""

    user_id: str
    items: np.ndarray
    history_length: int
    timestamps: np.ndarray


def read_indexed_sequences(files: Sequence[str], vocabulary: Sequence[str]) -> Iterator[IndexedSequence]:
    """The sequence records of `files` with item indices, in file order.

    Raises:
      ValueError naming the file when a shard is truncated or corrupt.
    """
    lookup = item_lookup(vocabulary)
    for path in files:
        dataset = data_directory.record_batches([path], 1024).map(data_directory.parse_sequences)
        dataset = dataset.map(lambda record: (record["user_id"], lookup(record["item_ids"]),
                                              record["history_length"], record["timestamps"]))
        try:
            for user_ids, items, history_lengths, timestamps in data_directory.until_end_marker(dataset):
                for user_id, user_items, history_length, times in zip(user_ids, items, history_lengths.tolist(),
                                                                      timestamps, strict=True):
                    yield IndexedSequence(user_id.decode("utf-8"), user_items, history_length, times)
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
            reason = " ".join(error.message.split()).split("[Op:")[0].split("}} ")[-1].strip()
            raise ValueError(f"{path}: a truncated or corrupt TFRecord shard ({reason}); prepare the data again "
                             "(`remi prepare ... --overwrite`)") from None


def read_user_ids(data_dir: str) -> list[str]:
    """The distinct user ids of every split's sequence records, sorted."""
    files = [path for split in data_directory.SPLITS for path in data_directory.split_files(data_dir, split)]
    user_ids: set[str] = set()
    user_id_batches = data_directory.record_batches(files, 4096).map(
        lambda serialized: data_directory.parse_sequences(serialized)["user_id"])
    for batch in data_directory.until_end_marker(user_id_batches):
        user_ids.update(user_id.decode("utf-8") for user_id in batch)
    return sorted(user_ids)


def load_sequences(data_dir: str, split: str, vocabulary: Sequence[str]) -> tuple[list[str], list[np.ndarray]]:
    """(user ids, item-index arrays) of one split, in memory."""
    records = list(read_indexed_sequences(data_directory.split_files(data_dir, split), vocabulary))
    return [record.user_id for record in records], [record.items for record in records]


def load_evaluation_split(data_dir: str, split: str, vocabulary: Sequence[str], max_history: int
                          ) -> tuple[list[str], np.ndarray, list[np.ndarray]]:
    """(user ids, histories [users, L], targets per user) of a valid or test split (evaluation_examples)."""
    records = list(read_indexed_sequences(data_directory.split_files(data_dir, split), vocabulary))
    if not records:
        raise ValueError(f"{data_dir}: the {split} split holds no users (manifest.json's splits); nothing to evaluate "
                         "on: prepare data with more users")
    histories, targets = evaluation_examples([record.items for record in records], max_history,
                                             [record.history_length for record in records])
    return [record.user_id for record in records], histories, targets


def user_sample(num_users: int, size: int, seed: int) -> np.ndarray:
    """Indices of a seeded sample of `size` of `num_users` users, ascending (every user when size is 0 or at
    least num_users). The same arguments choose the same users."""
    if size <= 0 or size >= num_users:
        return np.arange(num_users)
    return np.sort(np.random.default_rng([seed, VALID_SAMPLE_STREAM]).choice(num_users, size, replace=False))


def validation_sample_size(config: RemiConfig, num_items: int) -> int:
    """Users one validation reads (0: all): config.valid_users, at most valid_score_budget / num_items users
    (at least MIN_VALID_USERS) when both are set."""
    if not config.valid_users or not config.valid_score_budget:
        return config.valid_users
    return min(config.valid_users, max(MIN_VALID_USERS, config.valid_score_budget // max(num_items, 1)))


def random_cut(items: tf.RaggedTensor, max_history: int, min_cut: int | tf.Tensor = MIN_CUT) -> dict[str, tf.Tensor]:
    """Vectorised random-cut sampler: one training example per sequence of the batch.

    For a sequence x_0..x_{n-1}, k is uniform in [min_cut, n); history = the last <= L items before k,
    left-aligned and 0-padded at the end (as the reference); target = x_k.

    Args:
      items: [batch, None] int64 ragged item indices; every row must have n > min_cut.
      min_cut: the first cut, for every row or per row ([batch] int64).

    Returns:
      {"history": [batch, L] int64, "target": [batch] int64}.
    """
    lengths = tf.cast(items.row_lengths(), tf.int64)  # [B]
    row_starts = tf.cast(items.row_starts(), tf.int64)  # [B]
    min_cut = tf.cast(min_cut, tf.int64)
    num_choices = tf.cast(lengths - min_cut, tf.float32)
    cut = min_cut + tf.cast(tf.floor(tf.random.uniform(tf.shape(lengths)) * num_choices), tf.int64)
    cut = tf.minimum(cut, lengths - 1)  # guards the float rounding at u -> 1
    start = tf.maximum(cut - max_history, 0)
    positions = start[:, tf.newaxis] + tf.range(max_history, dtype=tf.int64)[tf.newaxis, :]  # [B, L]
    valid = positions < cut[:, tf.newaxis]
    gathered = tf.gather(items.values, row_starts[:, tf.newaxis] + tf.minimum(positions, cut[:, tf.newaxis] - 1))
    history = tf.where(valid, gathered, tf.zeros_like(gathered))
    target = tf.gather(items.values, row_starts + cut)
    return {"history": history, "target": target}


def shard_for_input_pipeline(files: Sequence[str], input_context: tf.distribute.InputContext | None) -> list[str]:
    """This input pipeline's share of `files` (every num_input_pipelines-th file); all files when there are
    fewer files than pipelines (then the pipelines differ by their seeds)."""
    if input_context is None or len(files) < input_context.num_input_pipelines:
        return list(files)
    return list(files[input_context.input_pipeline_id::input_context.num_input_pipelines])


def sequence_dataset(sequences: Sequence[np.ndarray], batch_size: int, max_history: int,
                     seed: int | None = None, user_features: np.ndarray | None = None,
                     recent_starts: np.ndarray | None = None, recent_fraction: float = 0.0) -> tf.data.Dataset:
    """Endless random-cut batches from in-memory item-index sequences: each pass visits every user once
    with a fresh random cut.

    The sequences are held in one ragged tensor; each pass draws a random permutation of the users
    (stateless, from a per-pass seed) and slices it into batches, so that the per-batch work is one gather
    and the vectorised cut (no per-user dataset ops: the step and the input share two cores).
    Sequences with at most MIN_CUT items are skipped (they have no valid cut).
    `user_features`: [users, C] raw profile values of the sequences' users, when the model reads them.
    `recent_starts`, `recent_fraction`: round(recent_fraction * batch_size) rows of every batch come from
    a second stream whose cuts (targets) are among each user's events from recent_starts[u] on (users
    with such events; a warm start's new events); the other rows are drawn as above.

    Returns:
      Dataset of {"history": [batch, L] int64, "target": [batch] int64} (and "user_features" [batch, C]
      string); the users left over after the last full batch of a pass are skipped in that pass (a
      different few each pass).
    """
    lengths = np.array([len(items) for items in sequences])
    all_items = tf.RaggedTensor.from_row_lengths(np.concatenate(sequences).astype(np.int64), lengths)
    profiles = None if user_features is None else tf.constant(user_features.astype(str))  # [users, C]
    recent_rows = round(recent_fraction * batch_size) if recent_starts is not None else 0
    streams = [(np.flatnonzero(lengths > MIN_CUT), np.full(len(sequences), MIN_CUT), batch_size - recent_rows)]
    if recent_starts is not None and recent_rows:
        first_cuts = np.maximum(recent_starts, MIN_CUT)
        streams.append((np.flatnonzero(first_cuts < lengths), first_cuts, recent_rows))
    datasets = []
    for stream, (users, first_cuts, rows) in enumerate(streams):
        if len(users) < rows:
            raise ValueError(f"{len(users)} training users with {'new events past' if stream else 'more than'} "
                             f"{MIN_CUT} items, fewer than one batch of {rows}; lower batch_size")
        datasets.append(_cut_stream(all_items, users, tf.constant(first_cuts, tf.int64), profiles, rows, max_history,
                                    None if seed is None else seed + stream))
    dataset = datasets[0] if len(datasets) == 1 else tf.data.Dataset.zip(tuple(datasets)).map(
        lambda *parts: {key: tf.concat([part[key] for part in parts], axis=0) for key in parts[0]})
    return _without_autotune(_endless(dataset).prefetch(PREFETCH_BATCHES))


def _cut_stream(all_items: tf.RaggedTensor, users: np.ndarray, first_cuts: tf.Tensor, profiles: tf.Tensor | None,
                batch_size: int, max_history: int, seed: int | None) -> tf.data.Dataset:
    """Endless batches of `batch_size` of `users` (indices into all_items), each pass a fresh permutation,
    each user cut at or after first_cuts[user]."""
    num_users, batches_per_pass = len(users), len(users) // batch_size
    users = tf.constant(users, tf.int64)

    def one_pass(pass_seed: tf.Tensor) -> tf.data.Dataset:
        keys = tf.random.stateless_uniform([num_users], seed=tf.stack([pass_seed, tf.constant(0, tf.int64)]))
        permutation = tf.gather(users, tf.argsort(keys)[:batches_per_pass * batch_size])
        return tf.data.Dataset.from_tensor_slices(tf.reshape(permutation, [batches_per_pass, batch_size]))

    def cut(batch_users: tf.Tensor) -> dict[str, tf.Tensor]:
        example = random_cut(tf.gather(all_items, batch_users), max_history, tf.gather(first_cuts, batch_users))
        if profiles is not None:
            example["user_features"] = tf.gather(profiles, batch_users)
        return example

    return tf.data.Dataset.random(seed=seed).flat_map(one_pass).map(cut)


def items_tsv_lookup(items_tsv: str) -> tf.lookup.StaticHashTable:
    """Item id -> model index (line i of items.tsv -> i + 2, unknown -> OOV), read by TensorFlow from the
    file where the table is built: a large vocabulary never travels inside a dataset's graph."""
    initializer = tf.lookup.TextFileInitializer(items_tsv, tf.string, 0, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER,
                                                delimiter="\t", value_index_offset=FIRST_ITEM_INDEX)
    return tf.lookup.StaticHashTable(initializer, default_value=item_index.OOV_INDEX)


def user_features_lookup(user_features_tsv: str, num_columns: int) -> Callable[[tf.Tensor], tf.Tensor]:
    """User ids [N] -> raw profile values [N, C] from a `user_features.tsv` ("" for unlisted users), read by
    TensorFlow from the file where the tables are built (one per column)."""
    tables = [tf.lookup.StaticHashTable(tf.lookup.TextFileInitializer(
        user_features_tsv, tf.string, 0, tf.string, column, delimiter="\t"), default_value="")
        for column in range(1, num_columns + 1)]  # the header line maps "user_id" to the column names: unused
    return lambda user_ids: tf.stack([table.lookup(user_ids) for table in tables], axis=-1)


def streaming_dataset(files: Sequence[str], items_tsv: str, batch_size: int, max_history: int,
                      seed: int | None = None, shuffle_buffer: int = 100_000,
                      user_features: Callable[[tf.Tensor], tf.Tensor] | None = None) -> tf.data.Dataset:
    """Endless random-cut batches read from sequence shards, for training data larger than memory.

    Each pass reads the files in a fresh order, shuffles users through a buffer of `shuffle_buffer` and
    cuts one example per user, as `sequence_dataset` does (the same cut distribution); every user with a
    cut appears once per pass. Memory: the buffer and the id table, not the split.

    Args:
      items_tsv: the vocabulary file (item ids in its first column).
      user_features: user ids [N] -> profile values [N, C] (`user_features_lookup`), when the model reads them.

    Returns:
      Dataset of {"history": [batch, L] int64, "target": [batch] int64} (and "user_features" [batch, C]).
    """
    lookup = items_tsv_lookup(items_tsv)
    compression = data_directory.compression_type(files)
    paths = tf.data.Dataset.from_tensor_slices(list(files)).shuffle(len(files), seed=seed,
                                                                    reshuffle_each_iteration=True)
    records = paths.interleave(lambda path: tf.data.TFRecordDataset(path, compression_type=compression),
                               cycle_length=min(len(files), 4))

    def parse(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        record = data_directory.parse_sequences(serialized)
        parsed = {"items": tf.ragged.map_flat_values(lookup.lookup, record["item_ids"])}
        if user_features is not None:
            parsed["user_features"] = user_features(record["user_id"])
        return parsed

    def cut(users: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return {**random_cut(users.pop("items"), max_history), **users}

    users = records.batch(256).map(parse).unbatch().filter(lambda user: tf.size(user["items"]) > MIN_CUT)
    users = users.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True).repeat()
    dataset = users.ragged_batch(batch_size, drop_remainder=True).map(cut)
    return _without_autotune(_endless(dataset).prefetch(PREFETCH_BATCHES))


def _endless(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """`dataset` (which never ends) declared infinite. tf.data cannot tell through flat_map / filter, and a
    multi-worker iterator over a dataset of unknown length all-reduces "does any worker still have a
    batch?" before every step: one cross-process round trip per step."""
    return dataset.apply(tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY))


def _without_autotune(dataset: tf.data.Dataset) -> tf.data.Dataset:
    # The maps cost microseconds per batch: a fixed prefetch, and tf.data's autotuning off, whose
    # background work was seen to pace whole training runs at one step per ~10 ms tick on two cores.
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def evaluation_examples(item_sequences: Sequence[np.ndarray], max_history: int,
                        history_lengths: Sequence[int] | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """The evaluation cut k: the record's history_length where given (>= 0: a time split's boundary),
    else the protocol's floor(0.8 n); history = last <= L items before k, targets = x_k..

    Returns:
      (histories [users, L] int64, left-aligned and 0-padded; targets per user).
    """
    histories = np.zeros((len(item_sequences), max_history), np.int64)
    targets = []
    for row, sequence in enumerate(item_sequences):
        cut = history_lengths[row] if history_lengths is not None and history_lengths[row] >= 0 else int(
            len(sequence) * EVAL_CUT_FRACTION)
        history = sequence[max(cut - max_history, 0):cut]
        histories[row, :len(history)] = history
        targets.append(np.asarray(sequence[cut:], np.int64))
    return histories, targets


class TrainingInputs(NamedTuple):
    """Everything `remi train` reads from a prepared data directory."""

    vocabulary: list[str]
    target_probability: np.ndarray  # [vocabulary + 2] q of each index as a training target
    valid_histories: np.ndarray  # [valid users, L]
    valid_targets: list[np.ndarray]
    dataset_fn: Callable[[tf.distribute.InputContext | None], tf.data.Dataset]  # endless batches per pipeline
    streaming: bool
    item_features: feature_tables.FeatureTable | None  # what the model reads (config.use_item_features)
    user_features: feature_tables.FeatureTable | None  # (config.use_user_features)
    valid_user_features: np.ndarray | None  # [valid users, C] raw profile values


def use_streaming(config: RemiConfig, files: Sequence[str]) -> bool:
    """config.training_input, or for "auto": streaming when the train shards exceed IN_MEMORY_MAX_BYTES."""
    if config.training_input != "auto":
        return config.training_input == "streaming"
    return sum(tf.io.gfile.stat(path).length for path in files) > IN_MEMORY_MAX_BYTES


def validation_users(data_dir: str, config: RemiConfig, vocabulary: Sequence[str]
                     ) -> tuple[list[str], np.ndarray, list[np.ndarray]]:
    """The valid split's users that each validation during training reads (user ids, histories [users, L],
    targets): a fixed seeded sample of validation_sample_size users, or all of them."""
    valid_users, valid_histories, valid_targets = load_evaluation_split(data_dir, "valid", vocabulary,
                                                                        config.max_history)
    sample_size = validation_sample_size(config, len(vocabulary))
    chosen = user_sample(len(valid_users), sample_size, config.seed)
    if len(chosen) < len(valid_users):
        logger.info(f"validating on a sample of {len(chosen):,} of the {len(valid_users):,} valid users (valid_users "
                    f"{config.valid_users:,}, valid_score_budget {config.valid_score_budget:,} scores over "
                    f"{len(vocabulary):,} items; 0: the whole split)")
        return ([valid_users[index] for index in chosen], valid_histories[chosen],
                [valid_targets[index] for index in chosen])
    if sample_size > len(valid_users):
        logger.info(f"valid_users {sample_size:,} is more than the split's {len(valid_users):,} valid users: "
                    "validating on all of them")
    return valid_users, valid_histories, valid_targets


def training_inputs(data_dir: str, config: RemiConfig, parameter_server: bool = False,
                    vocabulary: list[str] | None = None, recent_from: int | None = None) -> TrainingInputs:
    """Reads the vocabulary, q, the valid split, and builds the training stream.

    `dataset_fn(input_context)` gives one input pipeline's batches (the per-replica batch under a
    strategy), from its share of the train shards: in memory (read when the pipeline is built) or
    streaming. Pipelines get different seeds. Parameter-server workers build their datasets inside a
    function on the worker, which cannot read data eagerly, and their input contexts do not tell them
    apart: they stream, with random seeds. `vocabulary`: items.tsv's ids when the caller has read them.
    Side features are read when the data directory has them and the config uses them; the batches then
    carry each user's raw profile values ("user_features"). `recent_from` (unix seconds): with
    config.warm_start_recent_fraction > 0, that share of every batch targets events from then on.
    """
    vocabulary = read_vocabulary(data_dir) if vocabulary is None else vocabulary
    if len(vocabulary) < max(metrics.TOP_NS):
        raise ValueError(f"{data_directory.items_path(data_dir)}: {len(vocabulary)} items, fewer than the "
                         f"{max(metrics.TOP_NS)} that evaluation ranks (Recall/NDCG/HitRate@{max(metrics.TOP_NS)} over "
                         "the whole catalogue): prepare data with more items")
    files = data_directory.split_files(data_dir, "train")
    streaming = parameter_server or use_streaming(config, files)
    recent_fraction = config.warm_start_recent_fraction if recent_from is not None else 0.0
    if recent_fraction and streaming:
        raise ValueError("warm_start_recent_fraction needs the in-memory training input (training_input=in_memory)")
    probability = read_target_probability(data_dir)
    valid_users, valid_histories, valid_targets = validation_users(data_dir, config, vocabulary)
    item_table = feature_tables.read_item_table(data_dir, vocabulary) if config.use_item_features else None
    user_table = feature_tables.read_user_table(data_dir) if config.use_user_features else None
    valid_user_features = None if user_table is None else feature_tables.values_of(user_table, valid_users,
                                                                                   list(user_table.values))

    def dataset_fn(input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
        batch_size = config.batch_size if input_context is None else \
            input_context.get_per_replica_batch_size(config.batch_size)
        pipeline = 0 if input_context is None else input_context.input_pipeline_id
        seed = None if parameter_server else config.seed + 1_000_003 * pipeline
        shard = shard_for_input_pipeline(files, input_context)
        if streaming:
            profile_lookup = None if user_table is None else user_features_lookup(
                os.path.join(data_dir, feature_tables.USER_FEATURES_FILE), len(user_table.values))
            return streaming_dataset(shard, data_directory.items_path(data_dir), batch_size, config.max_history, seed,
                                     config.shuffle_buffer, profile_lookup)
        records = list(read_indexed_sequences(shard, vocabulary))
        profiles = None if user_table is None else feature_tables.values_of(
            user_table, [record.user_id for record in records], list(user_table.values))
        recent_starts = None if recent_from is None or not recent_fraction else np.array(
            [np.searchsorted(record.timestamps, recent_from) for record in records])
        return sequence_dataset([record.items for record in records], batch_size, config.max_history, seed, profiles,
                                recent_starts, recent_fraction)

    return TrainingInputs(vocabulary, probability, valid_histories, valid_targets, dataset_fn, streaming, item_table,
                          user_table, valid_user_features)
