"""The REMI two-tower model: a multi-interest query tower and an item tower, composed with a candidate sampler, the
training objective and the item corpus (remi_tf.candidate_sampler, remi_tf.objective, remi_tf.corpus). Item
indices follow remi_tf.item_index."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from remi_tf import collectives
from remi_tf.candidate_sampler import CandidateSampler, streaming_estimator, target_probability_table
from remi_tf.config import RemiConfig
from remi_tf.corpus import ItemCorpus
from remi_tf.feature_tables import FeatureTable
from remi_tf.item_index import FIRST_ITEM_INDEX
from remi_tf.layers import CapsuleRouting, CausalSelfAttentionEncoder, ItemEmbedding, LastPosition, SelfAttentiveRouting
from remi_tf.layers.feature_embeddings import ItemFeatureEmbedding, UserFeatureEmbedding, feature_vocabulary
from remi_tf.objective import RetrievalObjective
from remi_tf.tasks import InterestAwareRetrieval

CAPSULE_ROUTING_ITERATIONS = 3  # ComiRec-DR's and MIND's rounds


def routing_layer(config: RemiConfig) -> SelfAttentiveRouting | CapsuleRouting | LastPosition:
    """The routing of `config.routing` (its weights keep the layer's name across runs, for checkpoints)."""
    if config.routing == "last_position":
        return LastPosition(name="last_position")
    if config.routing == "self_attentive":
        return SelfAttentiveRouting(config.num_interests, config.max_history,
                                    use_position_embedding=config.use_position_embedding,
                                    name="self_attentive_routing")
    mind = config.routing == "mind"
    # BENCHMARKS.md 10.5: maps started at the identity won for ComiRec-DR on every data set, not for MIND on ml-1m
    return CapsuleRouting(config.num_interests, config.max_history, bilinear_map="shared" if mind else "per_position",
                          initial_logits="random" if mind else "zeros", iterations=CAPSULE_ROUTING_ITERATIONS,
                          initial_maps="random" if mind else "identity",
                          routing_gradient=config.capsule_routing_gradient, name=f"{config.routing}_routing")


class QueryTower(tf.keras.Model):
    """History of item indices (and the user's profile) -> K interest embeddings.

    An item's vector is its id row, plus its features' embedding when the model has item features
    (`item_vectors`, the item tower, shared with the candidates); with user features, the profile's
    embedding is added to every history item's vector before routing. With encoder "sasrec" the routing reads
    SASRec's contextual vectors of the history instead of the item vectors (`contextual`).

    Call: history [batch, L] int (0 = padding, 1 = unknown; both are masked out), user_features
    [batch, C] string raw profile values (models with user features only) ->
    (interests [batch, K, d], routing [batch, K, L]).
    """

    def __init__(self, item_embedding: ItemEmbedding, config: RemiConfig,
                 item_features: ItemFeatureEmbedding | None = None, user_features: UserFeatureEmbedding | None = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.item_embedding = item_embedding
        self.item_features = item_features
        self.user_features = user_features
        self.encoder = None if config.encoder == "embeddings" else CausalSelfAttentionEncoder(
            config.max_history, config.encoder_blocks, config.encoder_heads, config.encoder_dropout, name="encoder")
        self.routing = routing_layer(config)

    def item_vectors(self, indices: tf.Tensor) -> tf.Tensor:
        """Item indices [...] -> the item tower's vectors [..., d]: what the routing reads and interests score."""
        vectors = self.item_embedding(indices)
        return vectors if self.item_features is None else vectors + self.item_features(indices)

    def contextual(self, history: tf.Tensor, user_features: tf.Tensor | None = None, training: bool | None = None
                   ) -> tuple[tf.Tensor, tf.Tensor]:
        """history [B, L] (and user_features [B, C]) -> (what the routing reads [B, L, d], mask [B, L] bool)."""
        mask = history >= FIRST_ITEM_INDEX
        vectors = self.item_vectors(history)
        if self.user_features is not None:
            if user_features is None:
                raise ValueError(f"this model reads user features {self.user_features.columns}: pass their values")
            vectors += self.user_features(user_features)[:, tf.newaxis, :]
        if self.encoder is not None:
            vectors = self.encoder(vectors, mask, training=training)
        return vectors, mask

    def call(self, history: tf.Tensor, user_features: tf.Tensor | None = None, training: bool | None = None
             ) -> tuple[tf.Tensor, tf.Tensor]:
        """history [B, L] (and user_features [B, C]) -> (interests [B, K, d], routing [B, K, L])."""
        return self.routing(*self.contextual(history, user_features, training))

    def prefix_interests(self, history: tf.Tensor, user_features: tf.Tensor | None = None,
                         training: bool | None = None) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """The interests after every prefix of the histories (routing "last_position" or "self_attentive"):
        (interests [B, L, K, d], the whole histories' routing [B, K, L], mask [B, L] of the real items)."""
        vectors, mask = self.contextual(history, user_features, training)
        return (*self.routing.prefix_interests(vectors, mask), mask)

    def get_config(self) -> dict:
        """The run configuration (what SavedModel metadata records; the tower shares its item table with
        RemiModel, which rebuilds it from config.yaml)."""
        return {"config": self.config.to_dict()}


class RemiModel(tfrs.Model):
    """REMI: ComiRec-SA routing + routing regularization + the IHN in-batch softmax, as TFRS composes a model:
    `compute_loss` is the query tower, the candidate sampler and the objective.

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
        self.item_embedding = ItemEmbedding(
            vocabulary_size + FIRST_ITEM_INDEX, config.embedding_dim, name="item_embedding",
            embeddings_initializer=tf.keras.initializers.RandomNormal(stddev=math.sqrt(2.0 / config.embedding_dim)))
        self.item_features = None if item_features is None else item_feature_embedding(
            item_features, vocabulary_size, config.embedding_dim)
        self.user_features = None if user_vocabularies is None else UserFeatureEmbedding(
            user_vocabularies, config.embedding_dim, name="user_features")
        self.query_tower = QueryTower(self.item_embedding, config, self.item_features, self.user_features,
                                      name="query_tower")
        self.frequency_estimator, buckets = None, None
        if config.logq_correction == "streaming":
            self.frequency_estimator, buckets = streaming_estimator(config, vocabulary, vocabulary_size)
        self.sampler = CandidateSampler(config, vocabulary_size, self.query_tower.item_vectors,
                                        target_probability_table(target_probability, vocabulary_size),
                                        self.frequency_estimator, buckets)
        self.task = InterestAwareRetrieval(beta=config.beta, temperature=config.temperature,
                                           in_batch_negatives=config.negatives != "sampled",
                                           interest_scoring=config.interest_scoring)
        self.served_task = InterestAwareRetrieval(beta=config.beta, temperature=config.temperature,
                                                  in_batch_negatives=config.negatives != "sampled",
                                                  interest_scoring="max", name="served_score_task") \
            if config.served_score_weight else None
        self.objective = RetrievalObjective(config, self.task, self.served_task)
        self.corpus = ItemCorpus(self.item_embedding, self.item_features, self.query_tower.item_vectors,
                                 vocabulary_size)
        self.loss_tracker = tf.keras.metrics.Mean("loss")
        self.retrieval_loss_tracker = tf.keras.metrics.Mean("retrieval_loss")
        self.routing_regularization_tracker = tf.keras.metrics.Mean("routing_regularization")
        self.distribute_reduction_method = "first"  # the trackers hold global values (train_step)
        self.build_towers()

    def get_config(self) -> dict:
        """The run configuration and vocabulary size (rebuild with RemiModel(RemiConfig(**config), ...))."""
        return {"config": self.config.to_dict(), "vocabulary_size": self.vocabulary_size}

    def build_towers(self) -> None:
        """Creates every weight now, so that checkpoints restore before the first batch (Keras's
        BackupAndRestore only restores into a built model)."""
        profile = None if self.user_features is None else tf.fill([1, len(self.user_features.columns)], "")
        self.interests(tf.zeros([1, self.config.max_history], tf.int64), profile)
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

    def compute_loss(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """This replica's loss (`loss_and_terms`), recorded in the trackers."""
        loss, terms = self.loss_and_terms(features, training)
        self._track(terms)
        return loss

    def loss_and_terms(self, features: dict[str, tf.Tensor], training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        """The query tower, the candidates, the objective: ([] this replica's loss, [3] its shares of (retrieval
        loss, routing regularization, loss); remi_tf.objective)."""
        positive_embeddings = self.query_tower.item_vectors(features["target"])  # [b, d]
        candidates = self.sampler(features["target"], positive_embeddings, training)
        if self.config.training_positions == "every":
            interests, routing, mask = self.query_tower.prefix_interests(features["history"],
                                                                         features.get("user_features"), training)
            return self.objective.every_position(interests, routing, mask, features["history"], features["target"],
                                                 candidates, self.query_tower.item_vectors,
                                                 self.sampler.target_probability_of)
        interests, routing = self.query_tower(features["history"], features.get("user_features"), training=training)
        return self.objective(interests, routing, positive_embeddings, candidates)

    def _track(self, terms: tf.Tensor) -> None:
        """Records [3] (retrieval loss, routing regularization, loss) of a training batch."""
        for tracker, value in zip((self.retrieval_loss_tracker, self.routing_regularization_tracker,
                                   self.loss_tracker), tf.unstack(terms), strict=True):
            tracker.update_state(value)

    def train_step(self, inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """One optimizer step (TFRS's), logging the trackers' results.

        Under a synchronous strategy the gradients and the trackers' terms are summed over the replicas
        in one collective (`collectives.sum_gradients`), so every replica's trackers hold the global
        batch's values, and the step reports this replica's and Keras the first replica's
        (`distribute_reduction_method = "first"`) instead of all-reducing each metric every step.
        """
        with tf.GradientTape() as tape:
            loss, terms = self.loss_and_terms(inputs, training=True)
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

    @property
    def metrics(self) -> list[tf.keras.metrics.Metric]:
        return [self.loss_tracker, self.retrieval_loss_tracker, self.routing_regularization_tracker]


def item_feature_embedding(item_features: FeatureTable, vocabulary_size: int, dim: int) -> ItemFeatureEmbedding:
    """The items' side-feature embedding, rows by item index (padding and OOV: no values)."""
    if len(item_features.ids) != vocabulary_size:
        raise ValueError(f"item_features has {len(item_features.ids)} items, expected {vocabulary_size}")
    return ItemFeatureEmbedding({column: ["", ""] + values for column, values in item_features.values.items()},
                                {column: feature_vocabulary(values) for column, values in item_features.values.items()},
                                dim, name="item_features")


def user_vocabularies(user_features: FeatureTable) -> dict[str, list[str]]:
    """{column: its values, most frequent first} of a user feature table (what RemiModel embeds)."""
    return {column: feature_vocabulary(values) for column, values in user_features.values.items()}
