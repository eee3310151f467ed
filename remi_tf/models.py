"""The REMI two-tower model: a multi-interest query tower, an item tower, and the training objective.

Item indices: 0 is padding, 1 is the out-of-vocabulary bucket, 2.. are the vocabulary's items in
`items.tsv` order (the layout of `tf.keras.layers.StringLookup(mask_token="", num_oov_indices=1)`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import NamedTuple

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from remi_tf import collectives, frequency, losses
from remi_tf.config import RemiConfig
from remi_tf.feature_tables import FeatureTable
from remi_tf.layers import (
    CapsuleRouting,
    InterestMixture,
    InterestWeights,
    ItemEmbedding,
    SelfAttentiveRouting,
    interests_per_user,
    keep_interests,
    label_aware_readout,
)
from remi_tf.layers.feature_embeddings import ItemFeatureEmbedding, UserFeatureEmbedding, feature_vocabulary
from remi_tf.tasks import InterestAwareRetrieval

OOV_INDEX = 1  # index 0 pads histories
FIRST_ITEM_INDEX = 2
DROPPED_INTEREST_LOGIT = -1e4  # the interest-weight logit of an interest a user does not keep: pi_k = 0


def item_lookup(vocabulary: Sequence[str], invert: bool = False) -> tf.keras.layers.StringLookup:
    """StringLookup with the model's index layout (padding "" -> 0, unknown -> 1, items -> 2..). The vocabulary
    goes in as a numpy array: a list would be kept as a tracked list, which every checkpoint and SavedModel
    traversal walks item by item (a 1 M-item export spent minutes there: BENCHMARKS.md 11)."""
    return tf.keras.layers.StringLookup(vocabulary=np.asarray(list(vocabulary), dtype=object), mask_token="",
                                        num_oov_indices=1,
                                        invert=invert, name="item_lookup_inverse" if invert else "item_lookup")


def read_vocabulary(items_tsv: str) -> list[str]:
    """Item ids of an `items.tsv` (item_id<TAB>count), in file order: line i is index i + 2."""
    with tf.io.gfile.GFile(items_tsv) as stream:
        return [line.split("\t", 1)[0] for line in stream if line.strip()]


def routing_layer(config: RemiConfig) -> SelfAttentiveRouting | CapsuleRouting:
    """The routing of `config.routing` (its weights keep the layer's name across runs, for checkpoints)."""
    if config.routing == "self_attentive":
        return SelfAttentiveRouting(config.num_interests, config.max_history,
                                    use_position_embedding=config.use_position_embedding,
                                    name="self_attentive_routing")
    mind = config.routing == "mind"
    initial_maps = config.capsule_initial_maps
    if initial_maps == "auto":  # BENCHMARKS.md 10.5: the identity won for DR on every data set, not for MIND
        initial_maps = "random" if mind else "identity"
    return CapsuleRouting(config.num_interests, config.max_history, bilinear_map="shared" if mind else "per_position",
                          initial_logits="random" if mind else "zeros", iterations=config.routing_iterations,
                          initial_maps=initial_maps, routing_gradient=config.capsule_routing_gradient,
                          name=f"{config.routing}_routing")


class QueryEncoding(NamedTuple):
    """What the query tower makes of a batch of histories."""

    interests: tf.Tensor  # [B, K, d] as scored (unit length with normalize_embeddings)
    routing: tf.Tensor  # [B, K, L]
    weight_logits: tf.Tensor | None  # [B, K] logits of pi(u) for a model with interest weights, else None


class Candidates(NamedTuple):
    """A training batch's candidate columns: the positives (column i is row i's), then extra negatives."""

    ids: tf.Tensor  # [C] item indices
    vectors: tf.Tensor  # [C, d]
    sampling_probability: tf.Tensor | None  # [C] q_j for the logQ correction (None: no correction)
    num_positives: tf.Tensor  # [] the global batch: columns [0, num_positives) are positives


class QueryTower(tf.keras.Model):
    """History of item indices (and the user's profile) -> K interest embeddings.

    An item's vector is its id row, plus its features' embedding when the model has item features
    (`item_vectors`, the item tower, shared with the candidates); with user features, the profile's
    embedding is added to every history item's vector before routing.

    Call: history [batch, L] int (0 = padding, 1 = unknown; both are masked out), user_features
    [batch, C] string raw profile values (models with user features only) ->
    (interests [batch, K, d], routing [batch, K, L]); `encode` adds the interest weights' logits.
    """

    def __init__(self, item_embedding: ItemEmbedding, config: RemiConfig,
                 item_features: ItemFeatureEmbedding | None = None, user_features: UserFeatureEmbedding | None = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.item_embedding = item_embedding
        self.item_features = item_features
        self.user_features = user_features
        self.routing = routing_layer(config)
        self.interest_weights = InterestWeights(config.max_history, name="interest_weights") \
            if config.interest_weights != "none" else None

    def item_vectors(self, indices: tf.Tensor) -> tf.Tensor:
        """Item indices [...] -> the item tower's vectors [..., d] (what the routing reads)."""
        vectors = self.item_embedding(indices)
        return vectors if self.item_features is None else vectors + self.item_features(indices)

    def scoring_vectors(self, vectors: tf.Tensor) -> tf.Tensor:
        """Interests or item vectors [..., d] as they are scored: unit length with `normalize_embeddings`."""
        return tf.math.l2_normalize(vectors, axis=-1) if self.config.normalize_embeddings else vectors

    def candidate_vectors(self, indices: tf.Tensor) -> tf.Tensor:
        """Item indices [...] -> the vectors [..., d] that interests score as candidates."""
        return self.scoring_vectors(self.item_vectors(indices))

    def encode(self, history: tf.Tensor, user_features: tf.Tensor | None = None) -> QueryEncoding:
        """history [B, L] (and user_features [B, C]) -> the interests, routing and interest-weight logits."""
        mask = history >= FIRST_ITEM_INDEX
        vectors = self.item_vectors(history)
        if self.user_features is not None:
            if user_features is None:
                raise ValueError(f"this model reads user features {self.user_features.columns}: pass their values")
            vectors += self.user_features(user_features)[:, tf.newaxis, :]
        interests, routing = self.routing(vectors, mask)
        interests = self.scoring_vectors(interests)
        kept = None
        if self.config.interests_per_user == "log2":
            kept = interests_per_user(mask, self.config.num_interests)  # [B] K_u
            interests = keep_interests(interests, kept)
        weight_logits = None if self.interest_weights is None else \
            self.interest_weights(interests, vectors, mask, routing)
        if kept is not None and weight_logits is not None:  # pi over the kept interests only
            is_kept = tf.range(self.config.num_interests)[tf.newaxis, :] < kept[:, tf.newaxis]
            weight_logits = tf.where(is_kept, weight_logits, tf.cast(DROPPED_INTEREST_LOGIT, weight_logits.dtype))
        return QueryEncoding(interests, routing, weight_logits)

    def call(self, history: tf.Tensor, user_features: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        encoding = self.encode(history, user_features)
        return encoding.interests, encoding.routing

    def get_config(self) -> dict:
        """The run configuration (what SavedModel metadata records; the tower shares its item table with
        RemiModel, which rebuilds it from config.yaml)."""
        return {"config": self.config.to_dict()}


class RemiModel(tfrs.Model):
    """REMI: ComiRec-SA routing + routing regularization + the IHN in-batch softmax.

    Training features: {"history": [batch, L] int, "target": [batch] int}.

    Args:
      config: the resolved run configuration.
      vocabulary_size: number of real items (the table has vocabulary_size + 2 rows).
      target_probability: [vocabulary_size + 2] sampling probability q of each index as a training
        target, for logq_correction "counts" (None: uniform).
      vocabulary: the item ids (index i + 2 is vocabulary[i]); needed for logq_correction "streaming",
        whose estimator hashes the ids.
      item_features: the items' side features, in vocabulary order (their embedding joins the item tower).
      user_vocabularies: {column: values} of the user profile features (`user_vocabularies`); the model
        takes the columns' raw values as features["user_features"] [batch, C], in this order.
    """

    def __init__(self, config: RemiConfig, vocabulary_size: int, target_probability: np.ndarray | None = None,
                 vocabulary: Sequence[str] | None = None, item_features: FeatureTable | None = None,
                 user_vocabularies: Mapping[str, Sequence[str]] | None = None) -> None:
        super().__init__()
        self.config = config
        self.vocabulary_size = vocabulary_size
        num_rows = vocabulary_size + FIRST_ITEM_INDEX
        self.item_embedding = ItemEmbedding(
            num_rows, config.embedding_dim, name="item_embedding",
            embeddings_initializer=tf.keras.initializers.RandomNormal(stddev=math.sqrt(2.0 / config.embedding_dim)))
        self.item_features = None
        if item_features is not None:
            if len(item_features.ids) != vocabulary_size:
                raise ValueError(f"item_features has {len(item_features.ids)} items, expected {vocabulary_size}")
            self.item_features = ItemFeatureEmbedding(
                {column: ["", ""] + values for column, values in item_features.values.items()},
                {column: feature_vocabulary(values) for column, values in item_features.values.items()},
                config.embedding_dim, name="item_features")
        self.user_features = None if user_vocabularies is None else UserFeatureEmbedding(
            user_vocabularies, config.embedding_dim, name="user_features")
        self.query_tower = QueryTower(self.item_embedding, config, self.item_features, self.user_features,
                                      name="query_tower")
        if target_probability is None:
            target_probability = np.full([num_rows], 1.0 / vocabulary_size)
        if len(target_probability) != num_rows:
            raise ValueError(f"target_probability has {len(target_probability)} entries, expected "
                             f"vocabulary_size + 2 = {num_rows}")
        self.target_probability = tf.constant(target_probability, tf.float32)
        self.frequency_estimator = None
        if config.logq_correction == "streaming":
            if vocabulary is None or len(vocabulary) != vocabulary_size:
                raise ValueError("logq_correction 'streaming' needs the vocabulary's item ids (the estimator hashes "
                                 "them)")
            self.item_buckets = tf.constant(frequency.item_buckets(vocabulary, config.logq_buckets,
                                                                   config.logq_hashes))
            self.frequency_estimator = frequency.StreamingFrequencyEstimator(
                config.logq_buckets, config.logq_hashes, config.logq_alpha, name="frequency_estimator")
        self.interest_mixture = InterestMixture(config.mixture_gate_dim, config.interest_temperature,
                                                name="interest_mixture") \
            if config.interest_scoring == "mixture" else None
        self.task = InterestAwareRetrieval(beta=config.beta, temperature=config.temperature,
                                           remove_accidental_hits=config.remove_accidental_hits,
                                           in_batch_negatives=config.negatives != "sampled",
                                           interest_scoring=config.interest_scoring,
                                           interest_temperature=config.interest_temperature,
                                           interest_mixture=self.interest_mixture)
        self.served_task = InterestAwareRetrieval(beta=config.beta, temperature=config.temperature,
                                                  remove_accidental_hits=config.remove_accidental_hits,
                                                  in_batch_negatives=config.negatives != "sampled",
                                                  interest_scoring="max", name="served_score_task") \
            if config.served_score_weight else None
        self.weight_task = InterestAwareRetrieval(temperature=config.temperature,
                                                  remove_accidental_hits=config.remove_accidental_hits,
                                                  in_batch_negatives=config.negatives != "sampled",
                                                  interest_scoring="max", name="interest_weight_task")
        self.loss_tracker = tf.keras.metrics.Mean("loss")
        self.retrieval_loss_tracker = tf.keras.metrics.Mean("retrieval_loss")
        self.routing_regularization_tracker = tf.keras.metrics.Mean("routing_regularization")
        self.interest_weight_tracker = tf.keras.metrics.Mean("interest_weight_loss")
        self.mixture_balance_tracker = tf.keras.metrics.Mean("mixture_balance")
        self.distribute_reduction_method = "first"  # the trackers hold global values (train_step)
        self.build_towers()

    def get_config(self) -> dict:
        """The run configuration and vocabulary size (rebuild with RemiModel(RemiConfig(**config), ...))."""
        return {"config": self.config.to_dict(), "vocabulary_size": self.vocabulary_size}

    def build_towers(self) -> None:
        """Creates every weight now, so that checkpoints restore before the first batch (Keras's
        BackupAndRestore only restores into a built model)."""
        profile = None if self.user_features is None else tf.fill([1, len(self.user_features.columns)], "")
        interests, _ = self.interests(tf.zeros([1, self.config.max_history], tf.int64), profile)
        if self.interest_mixture is not None:
            self.interest_mixture(interests, interests[0])
        self.built = True

    @tf.function(reduce_retracing=True)
    def interests(self, history: tf.Tensor, user_features: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        """The query tower in a graph: history [B, L] (and user_features [B, C] string with user features) ->
        (interests [B, K, d], routing [B, K, L]).

        Call this, not the tower, outside training: eagerly, a lookup into an item table sharded across
        parameter servers first concatenates the whole table on the caller (a 10 M x 64 table: 2.6 GB per
        call); in a graph TensorFlow looks the rows up shard by shard.
        """
        return self.query_tower(history, user_features)

    @tf.function(reduce_retracing=True)
    def encode(self, history: tf.Tensor, user_features: tf.Tensor | None = None
               ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """`interests` with the interest weights: (interests [B, K, d], routing [B, K, L], pi [B, K]); pi is
        uniform (1 / K) for a model without interest weights."""
        encoding = self.query_tower.encode(history, user_features)
        return encoding.interests, encoding.routing, interest_distribution(encoding)

    def candidate_embeddings(self) -> tf.Tensor:
        """[vocabulary_size, d] item-tower vectors of the real items (index i + 2 of the table is row i); a
        table sharded across parameter servers is read whole."""
        real_items = tf.range(FIRST_ITEM_INDEX, FIRST_ITEM_INDEX + self.vocabulary_size)
        return self.query_tower.candidate_vectors(real_items)

    def vectors_by_index(self) -> tf.Tensor:
        """[vocabulary_size + 2, d] the candidate vector of every item index (zeros for padding and OOV), for
        gathering by the indices a retrieval returned."""
        candidates = self.candidate_embeddings()
        return tf.concat([tf.zeros([FIRST_ITEM_INDEX, candidates.shape[1]], candidates.dtype), candidates], axis=0)

    def candidate_chunks(self, max_rows: int) -> Iterator[tuple[int, tf.Tensor]]:
        """The real items' item-tower vectors in chunks of at most `max_rows` rows: (index of the first item of
        the chunk among the real items, [rows, d]). Rows are gathered where the table lives, so a table
        sharded across parameter servers never travels whole."""
        table = self.item_embedding.embeddings
        shard_start = 0  # table row of the shard's first row
        for shard in getattr(table, "variables", [table]):
            shard_rows = int(shard.shape[0])
            first = max(FIRST_ITEM_INDEX - shard_start, 0)
            for start in range(first, shard_rows, max_rows):
                rows = tf.range(start, min(start + max_rows, shard_rows))
                vectors = tf.gather(shard, rows)
                if self.item_features is not None:
                    vectors += self.item_features(rows + shard_start)
                yield shard_start + start - FIRST_ITEM_INDEX, self.query_tower.scoring_vectors(vectors)
            shard_start += shard_rows

    def compute_loss(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """This replica's loss (`objective`), recorded in the trackers."""
        loss, terms = self.objective(features, training)
        self._track(terms)
        return loss

    def objective(self, features: dict[str, tf.Tensor], training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        """The loss to differentiate, and the terms the trackers report, composed in a fixed order: the
        query tower; the candidates (`sample_candidates`); the queries the task scores them with (the K
        interests, combined by `interest_scoring`, or MIND's label-aware read-out); the task; the
        regularizers (routing regularization, the interest weights' term, `interest_weight_loss`, the mixture
        gate's imbalance, losses.gate_imbalance).

        Under a synchronous strategy with R replicas (one global batch), each replica's loss is its share
        of the global objective: its rows' per-example losses summed and divided by the global batch, plus
        its rows' routing regularization (a sum over rows); the gradients summed over replicas are then
        the one-process gradients at the global batch.

        Returns:
          loss: [] this replica's loss.
          terms: [5] this replica's shares of (retrieval loss, routing regularization, loss, the interest
            weights' term, the mixture gate's imbalance); summed over the replicas they are the global batch's
            values (one replica: the values themselves; the imbalance: the mean of the replicas' own).
        """
        history, target = features["history"], features["target"]
        encoding = self.query_tower.encode(history, features.get("user_features"))
        positive_embeddings = self.query_tower.candidate_vectors(target)  # [B, d]
        candidates = self.sample_candidates(target, positive_embeddings, training)
        queries = encoding.interests  # [B, K, d]: the task's interest_scoring combines them
        if self.config.readout == "label_aware":
            queries = label_aware_readout(encoding.interests, positive_embeddings, self.config.readout_power)
        retrieval_loss = self.task(queries, candidates.vectors,
                                   candidate_sampling_probability=candidates.sampling_probability,
                                   candidate_ids=candidates.ids)
        if self.served_task is not None:  # the same candidates scored as served: max over the K interests
            retrieval_loss += self.config.served_score_weight * self.served_task(
                encoding.interests, candidates.vectors, candidate_sampling_probability=candidates.sampling_probability,
                candidate_ids=candidates.ids)
        weight_loss = self.interest_weight_loss(encoding, positive_embeddings, candidates)
        imbalance = tf.zeros([], retrieval_loss.dtype)
        if self.interest_mixture is not None and self.config.mixture_balance_lambda:  # this replica's rows' mean gate
            imbalance = losses.gate_imbalance(self.interest_mixture.gate(encoding.interests, positive_embeddings))
        mask = history >= FIRST_ITEM_INDEX if self.config.routing_exclude_padding else None
        regularization = losses.routing_regularization(encoding.routing, self.config.embedding_dim,
                                                       self.config.routing_regularization_mode, mask)
        replica = tf.distribute.get_replica_context()
        if collectives.gathers_candidates(replica):  # both terms are means over this replica's rows
            rows = tf.cast(tf.shape(target)[0], retrieval_loss.dtype)
            share = rows / (tf.cast(candidates.num_positives, retrieval_loss.dtype)
                            if self.config.negatives != "sampled" else rows * replica.num_replicas_in_sync)
            retrieval_loss *= share
            weight_loss *= share
            imbalance /= replica.num_replicas_in_sync  # summed over replicas: the mean of theirs
        loss = (retrieval_loss + self.config.routing_lambda * regularization
                + self.config.interest_weight_lambda * weight_loss + self.config.mixture_balance_lambda * imbalance)
        return loss, tf.stack([retrieval_loss, regularization, loss, weight_loss, imbalance])

    def interest_weight_loss(self, encoding: QueryEncoding, positive_embeddings: tf.Tensor,
                             candidates: Candidates) -> tf.Tensor:
        """[] the interest weights' training term, a mean over this replica's rows (0 without weights):
        "distilled": KL(p || pi) towards the teacher softmax_k(cos(u_k, v_target) / T) (TiMiRec);
        "served": the in-batch softmax of the weighted merge's score, max_k (<u_k, v_j> + log pi_k), over the
        batch's candidates (the task with one more coordinate: [u_k, log pi_k] . [v_j, 1]), so that pi learns
        what the merge needs, which interest to trust and by how much its scores are to be moved. Either way
        the gradient reaches the predictor only (interests and candidates are read as constants)."""
        if encoding.weight_logits is None:
            return tf.zeros([], encoding.interests.dtype)
        if self.config.interest_weights == "distilled":
            return tf.reduce_mean(losses.interest_weight_distillation(
                encoding.interests, positive_embeddings, encoding.weight_logits,
                self.config.interest_weight_temperature))
        log_weights = tf.nn.log_softmax(encoding.weight_logits, axis=-1)[:, :, tf.newaxis]  # [B, K, 1]
        queries = tf.concat([tf.stop_gradient(encoding.interests), log_weights], axis=-1)  # [B, K, d + 1]
        vectors = tf.stop_gradient(candidates.vectors)
        vectors = tf.concat([vectors, tf.ones_like(vectors[:, :1])], axis=-1)  # [C, d + 1]
        return self.weight_task(queries, vectors, candidate_sampling_probability=candidates.sampling_probability,
                                candidate_ids=candidates.ids)

    def sample_candidates(self, target: tf.Tensor, positive_embeddings: tf.Tensor, training: bool) -> Candidates:
        """The candidate columns of a training batch: the positives (of every replica's rows under a
        synchronous strategy with in-batch negatives, this replica's first), then the uniformly sampled
        negatives of `negatives`, with each column's q for the logQ correction.

        Args:
          target: [b] this replica's positive item indices; positive_embeddings: [b, d] their vectors.
        """
        candidate_ids = tf.cast(target, tf.int64)
        vectors = positive_embeddings
        replica = tf.distribute.get_replica_context()
        if collectives.gathers_candidates(replica) and self.config.negatives != "sampled":
            candidate_ids = collectives.gather_candidate_ids(replica, candidate_ids)
            vectors = self.query_tower.candidate_vectors(candidate_ids)
        num_positives = tf.shape(candidate_ids)[0]
        if self.config.negatives != "in_batch":
            sampled_ids = tf.random.uniform([self.config.num_sampled_negatives], FIRST_ITEM_INDEX,
                                            self.vocabulary_size + FIRST_ITEM_INDEX, dtype=tf.int64)
            candidate_ids = tf.concat([candidate_ids, sampled_ids], axis=0)
            vectors = tf.concat([vectors, self.query_tower.candidate_vectors(sampled_ids)], axis=0)
        sampling_probability = None
        if self.config.logq_correction != "none":
            # TFRS subtracts log(clip(p, 1e-6, 1)); with p = clip(q, 1e-6, 1) ** weight, weight in [0, 1], p
            # stays in range, so that is weight * log clip(q)
            sampling_probability = tf.clip_by_value(
                self._sampling_probability(candidate_ids, num_positives, training), 1e-6, 1.0
            ) ** self.config.logq_weight
        return Candidates(candidate_ids, vectors, sampling_probability, num_positives)

    def _track(self, terms: tf.Tensor) -> None:
        """Records [5] (retrieval loss, routing regularization, loss, the interest weights' term, the mixture
        gate's imbalance) of a training batch."""
        for tracker, value in zip((self.retrieval_loss_tracker, self.routing_regularization_tracker,
                                   self.loss_tracker, self.interest_weight_tracker, self.mixture_balance_tracker),
                                  tf.unstack(terms), strict=True):
            tracker.update_state(value)

    def train_step(self, inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """One optimizer step (TFRS's), logging the trackers' results.

        Under a synchronous strategy the gradients and the trackers' terms are summed over the replicas
        in one collective (`collectives.sum_gradients`), so every replica's trackers hold the global
        batch's values, and the step reports this replica's and Keras the first replica's
        (`distribute_reduction_method = "first"`) instead of all-reducing each metric every step.
        """
        with tf.GradientTape() as tape:
            loss, terms = self.objective(inputs, training=True)
        gradients = tape.gradient(loss, self.trainable_variables)
        replica = tf.distribute.get_replica_context()
        if not collectives.gathers_candidates(replica):
            self.optimizer.apply_gradients(zip(gradients, self.trainable_variables, strict=True))
            self._track(terms)
            return {metric.name: metric.result() for metric in self.metrics}
        varying = {weight.ref() for layer in (self.item_features, self.user_features) if layer is not None
                   for weight in layer.trainable_weights}  # rows per batch row: its number of feature values
        gradients, terms = collectives.sum_gradients(
            replica, gradients, terms, [variable.ref() in varying for variable in self.trainable_variables])
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables, strict=True),
                                       skip_gradients_aggregation=True)
        self._track(terms)
        # Every replica's trackers hold the same values: read this replica's (Metric.result() would
        # all-reduce each tracker's total and count, two collectives per metric per step).
        return {tracker.name: tf.math.divide_no_nan(tracker.total, tracker.count) for tracker in self.metrics}

    def _sampling_probability(self, candidate_ids: tf.Tensor, batch_size: tf.Tensor, training: bool) -> tf.Tensor:
        """[C] q_j: in-batch columns get their target frequency (from the counts, or the streaming
        estimate after it has seen this batch's targets), uniformly sampled columns 1 / N.

        With negatives="sampled" every column, the positive included, comes from the uniform sampler's
        point of view (as the reference code), so all columns get 1 / N.
        """
        uniform = 1.0 / self.vocabulary_size
        if self.config.negatives == "sampled":
            return tf.fill(tf.shape(candidate_ids), uniform)
        in_batch = candidate_ids[:batch_size]
        if self.frequency_estimator is None:
            q = tf.gather(self.target_probability, in_batch)
        else:  # occurrences per step / examples per step: the per-example q, on the uniform columns' scale
            occurrences = self.frequency_estimator(tf.gather(self.item_buckets, in_batch, axis=1), training)
            q = occurrences / tf.cast(batch_size, occurrences.dtype)
        if self.config.negatives == "in_batch":
            return q
        return tf.concat([q, tf.fill([self.config.num_sampled_negatives], uniform)], axis=0)

    @property
    def metrics(self) -> list[tf.keras.metrics.Metric]:
        trackers = [self.loss_tracker, self.retrieval_loss_tracker, self.routing_regularization_tracker]
        return (trackers + ([self.interest_weight_tracker] if self.config.interest_weights != "none" else [])
                + ([self.mixture_balance_tracker] if self.config.mixture_balance_lambda else []))


def interest_distribution(encoding: QueryEncoding) -> tf.Tensor:
    """[B, K] pi(u): softmax of the predictor's logits, or uniform without interest weights."""
    if encoding.weight_logits is None:
        shape = tf.shape(encoding.interests)[:2]
        return tf.fill(shape, 1.0 / tf.cast(shape[1], encoding.interests.dtype))
    return tf.nn.softmax(encoding.weight_logits, axis=-1)


def user_vocabularies(user_features: FeatureTable) -> dict[str, list[str]]:
    """{column: its values, most frequent first} of a user feature table (what RemiModel embeds)."""
    return {column: feature_vocabulary(values) for column, values in user_features.values.items()}


def target_probability(train_sequences: Iterable[np.ndarray], vocabulary_size: int, min_cut: int) -> np.ndarray:
    """q: the probability that each index is the target of a random-cut training example.

    A user with n items yields target x_k for k uniform in [min_cut, n), so index i gets
    mean over users of (occurrences of i in x_min_cut..x_{n-1}) / (n - min_cut).

    Returns:
      [vocabulary_size + 2] probabilities (0 for padding and OOV), summing to 1.
    """
    probability = np.zeros(vocabulary_size + FIRST_ITEM_INDEX, np.float64)
    eligible = 0
    for sequence in train_sequences:
        if len(sequence) > min_cut:
            targets = sequence[min_cut:]
            np.add.at(probability, targets, 1.0 / len(targets))
            eligible += 1
    return probability / max(eligible, 1)
