"""The SASRec encoder (encoder "sasrec"), its user vector (routing "last_position") and its every-position objective
(training_positions "every"): the causal mask, the loss against numpy, and planted sequential data that it learns
and a bag of items cannot."""

import numpy as np
import pytest
import tensorflow as tf

from remi_tf import config as config_lib
from remi_tf import losses, models, train
from remi_tf.candidate_sampler import Candidates
from remi_tf.input import sequence_dataset
from remi_tf.layers import CausalSelfAttentionEncoder, LastPosition, SelfAttentiveRouting
from remi_tf.objective import RetrievalObjective, next_item_targets
from remi_tf.tasks import InterestAwareRetrieval
from tests import numpy_reference


def test_an_output_does_not_change_when_later_items_change():
    tf.keras.utils.set_random_seed(0)
    encoder = CausalSelfAttentionEncoder(max_length=8, num_blocks=2, num_heads=2, dropout=0.3)
    items = tf.random.normal([3, 8, 16])
    mask = tf.constant([[True] * 8, [True] * 5 + [False] * 3, [True] * 2 + [False] * 6])
    changed = tf.concat([items[:, :4], tf.random.normal([3, 4, 16])], axis=1)  # positions 4.. replaced
    before, after = encoder(items, mask).numpy(), encoder(changed, mask).numpy()
    np.testing.assert_allclose(before[:, :4], after[:, :4], atol=1e-6)
    assert np.abs(before[0, 4:] - after[0, 4:]).min() > 1e-4  # the later positions did read them
    assert np.all(before[1, 5:] == 0) and np.all(before[2, 2:] == 0)  # padding is zero
    # masking a position out is the same as the history never having held it: user 2's first two positions
    shorter = encoder(items[:, :2], mask[:, :2]).numpy()
    np.testing.assert_allclose(before[:, :2], shorter, atol=1e-5)


def test_dropout_acts_in_training_only():
    tf.keras.utils.set_random_seed(0)
    encoder = CausalSelfAttentionEncoder(max_length=6, num_blocks=1, num_heads=1, dropout=0.5)
    items, mask = tf.random.normal([2, 6, 8]), tf.ones([2, 6], tf.bool)
    np.testing.assert_allclose(encoder(items, mask).numpy(), encoder(items, mask, training=False).numpy())
    assert not np.allclose(encoder(items, mask, training=True).numpy(), encoder(items, mask).numpy())


def test_the_user_vector_is_the_last_real_position():
    vectors = tf.reshape(tf.range(2 * 5 * 2, dtype=tf.float32), [2, 5, 2])
    mask = tf.constant([[True, True, True, False, False], [True, False, True, True, False]])  # an unknown item at 1
    interests, routing = LastPosition()(vectors, mask)
    np.testing.assert_array_equal(interests.numpy(), [[[4.0, 5.0]], [[16.0, 17.0]]])
    np.testing.assert_array_equal(routing.numpy(), [[[0, 0, 1, 0, 0]], [[0, 0, 0, 1, 0]]])
    next_items = next_item_targets(tf.constant([[5, 6, 7, 0, 0], [5, 1, 8, 9, 0]], tf.int64),
                                   tf.constant([11, 12], tf.int64), mask)
    np.testing.assert_array_equal(next_items.numpy(), [[6, 7, 11, 0, 0], [1, 8, 9, 12, 0]])


@pytest.mark.parametrize("beta,negatives,num_interests,scoring", [
    (0.0, "in_batch", 1, "hard"), (0.5, "in_batch", 1, "hard"), (0.0, "in_batch_plus_sampled", 1, "hard"),
    (0.0, "sampled", 1, "hard"), (0.5, "in_batch", 3, "hard"), (0.0, "in_batch_plus_sampled", 3, "max")])
def test_the_every_position_loss_equals_numpy(beta, negatives, num_interests, scoring):
    rng = np.random.default_rng(3)
    vocabulary_size, dim = 12, 4
    table = rng.normal(size=(vocabulary_size + 2, dim))
    history = np.array([[2, 3, 4, 0], [5, 3, 0, 0], [6, 7, 8, 9], [0, 0, 0, 0]])  # item 3 twice; an empty row
    target = np.array([3, 10, 2, 4])  # row 0's target 3 is also row 1's next item: an accidental hit
    candidate_ids = np.concatenate([target, [7, 13]]) if negatives != "in_batch" else target
    probability = rng.uniform(0.01, 0.3, size=vocabulary_size + 2)
    interests = rng.normal(size=(4, 4, num_interests, dim))  # after each prefix
    routing = tf.nn.softmax(tf.constant(rng.normal(size=(4, num_interests, 4))))
    config = config_lib.RemiConfig(negatives=negatives, beta=beta, temperature=0.7, embedding_dim=dim,
                                   num_interests=num_interests, interest_scoring=scoring, routing_lambda=2.0,
                                   routing="last_position" if num_interests == 1 else "self_attentive",
                                   training_positions="every")
    task = InterestAwareRetrieval(beta=beta, temperature=0.7, in_batch_negatives=negatives != "sampled",
                                  interest_scoring=scoring)
    sampled = negatives == "sampled"  # every column's q, and the positives', is 1 / N then (the sampler's)
    candidate_q = np.where(np.arange(len(candidate_ids)) < 4, probability[candidate_ids], 1 / 12)
    candidate_q = np.full(len(candidate_ids), 1 / 12) if sampled else candidate_q
    positive_q = np.full_like(probability, 1 / 12) if sampled else probability
    candidates = Candidates(tf.constant(candidate_ids, tf.int64), tf.constant(table[candidate_ids]),
                            tf.constant(candidate_q), tf.constant(4))
    loss, terms = RetrievalObjective(config, task, None).every_position(
        tf.constant(interests), routing, tf.constant(history >= 2), tf.constant(history, tf.int64),
        tf.constant(target, tf.int64), candidates, lambda ids: tf.gather(tf.constant(table), ids),
        lambda ids, _: tf.gather(tf.constant(positive_q), ids))
    expected = numpy_reference.every_position_numpy(interests, history, target, table, candidate_ids, candidate_q,
                                                    positive_q, beta, 0.7, in_batch=not sampled, num_positives=4,
                                                    mode=scoring)
    regularization = 0.0 if num_interests == 1 else float(losses.routing_regularization(routing, dim))
    assert float(terms[0]) == pytest.approx(expected, rel=1e-9)
    assert float(terms[1]) == pytest.approx(regularization, rel=1e-9, abs=1e-12)
    assert float(loss) == pytest.approx(expected + 2.0 * regularization, rel=1e-9)


def test_prefix_interests_are_the_routing_of_each_prefix_alone():
    tf.keras.utils.set_random_seed(1)
    routing = SelfAttentiveRouting(num_interests=3, max_length=6)
    items = tf.random.normal([2, 6, 8])
    mask = tf.constant([[True] * 6, [True] * 4 + [False] * 2])
    routing(items, mask)
    prefixes, whole = routing.prefix_interests(items, mask)  # [2, 6, 3, 8], [2, 3, 6]
    for t in range(6):
        alone, _ = routing(items, tf.logical_and(mask, tf.range(6) <= t))  # later items masked out
        np.testing.assert_allclose(prefixes[:, t].numpy(), alone.numpy(), atol=1e-5)
    np.testing.assert_allclose(whole.numpy(), routing(items, mask)[1].numpy(), atol=1e-6)


def successor_walks(num_users: int, num_items: int, length: int, follow: float, seed: int) -> list[np.ndarray]:
    """Walks in which the item after x is succ(x) (a fixed random permutation) with probability `follow`, else any
    item: what comes next is told by the last item only. Item indices 2..num_items + 1."""
    rng = np.random.default_rng(seed)
    successor = rng.permutation(num_items)
    walks = []
    for _ in range(num_users):
        walk = [rng.integers(num_items)]
        for _ in range(length - 1):
            walk.append(successor[walk[-1]] if rng.random() < follow else rng.integers(num_items))
        walks.append(np.asarray(walk, np.int64) + 2)
    return walks


def next_item_hit_rate(model, walks: list[np.ndarray], history_length: int, top_n: int) -> float:
    """The share of walks whose item after the first `history_length` is in the model's top_n (history included)."""
    histories = np.stack([walk[:history_length] for walk in walks])
    interests, _ = model.interests(tf.constant(histories))
    scores = tf.reduce_max(tf.einsum("ukd,nd->ukn", interests, model.corpus.embeddings()), axis=1).numpy()
    top = np.argsort(-scores, axis=1)[:, :top_n] + 2
    return float(np.mean([walk[history_length] in row for walk, row in zip(walks, top)]))


def train_on_walks(walks, steps: int, **overrides):
    tf.keras.utils.set_random_seed(0)
    config = config_lib.RemiConfig(**{**config_lib.DEFAULTS_BEFORE_0_3_0, "num_interests": 1}, embedding_dim=16,
                                   max_history=10, batch_size=64, learning_rate=0.005, max_steps=steps,
                                   steps_per_execution=50, logq_correction="none").replace(**overrides)
    model = models.RemiModel(config, 200)
    train.compile_model(model, config)
    model.fit(sequence_dataset(walks, config.batch_size, config.max_history, seed=0), epochs=1, steps_per_epoch=steps,
              verbose=0)
    return model


def test_sasrec_learns_what_follows_the_last_item_and_a_bag_of_items_cannot():
    walks = successor_walks(1500, 200, 20, follow=0.7, seed=0)
    sasrec = train_on_walks(walks[:1200], 600, encoder="sasrec", routing="last_position", training_positions="every",
                            encoder_blocks=1, encoder_dropout=0.1)
    bag = train_on_walks(walks[:1200], 600, use_position_embedding=False, routing_lambda=0.0)
    held_out = walks[1200:]
    sasrec_hits, bag_hits = next_item_hit_rate(sasrec, held_out, 10, 10), next_item_hit_rate(bag, held_out, 10, 10)
    # The next item is succ(last) 70% of the time (+ 10/200 by chance): an encoder that reads the order finds it;
    # a bag of the 10 history items holds 10 candidate successors and cannot tell which is the last's.
    assert sasrec_hits > 0.6, (sasrec_hits, bag_hits)
    assert sasrec_hits > bag_hits + 0.2, (sasrec_hits, bag_hits)


@pytest.mark.parametrize("settings,message", [
    ({"encoder": "transformer"}, "'encoder' must be one of 'embeddings', 'sasrec'"),
    ({"encoder": "sasrec", "encoder_heads": 3}, "'encoder_heads' must divide embedding_dim 64, got 3"),
    ({"encoder_dropout": 1.0}, "'encoder_dropout' must be in [0, 1)"),
    ({"max_history": 0}, "'max_history' must be >= 1"),
    ({"num_interests": 4}, "'num_interests' must be 1 with routing 'last_position'"),
    ({"training_positions": "every", "routing": "mind"}, "needs routing 'last_position' or 'self_attentive'"),
    ({"training_positions": "every", "served_score_weight": 0.5}, "needs readout 'hard' and served_score_weight 0"),
])
def test_bad_encoder_settings_are_refused_by_name(settings, message):
    with pytest.raises(ValueError) as refused:
        config_lib.RemiConfig(**settings).validate()
    assert message in str(refused.value)


def test_a_checkpoint_without_the_encoders_weights_is_refused_naming_them(tmp_path):
    """A best checkpoint must hold every weight of the model its config builds: a model directory whose config
    gained the encoder (or was trained by another version) is refused, not evaluated with random weights."""
    from remi_tf import model_directory

    remi = config_lib.RemiConfig(embedding_dim=8, **config_lib.DEFAULTS_BEFORE_0_3_0).validate()
    trained = models.RemiModel(remi, 30)
    model_directory.weights_checkpoint(trained).write(model_directory.best_checkpoint_prefix(str(tmp_path)))
    same = models.RemiModel(remi, 30)
    model_directory.restore_best(same, str(tmp_path))
    np.testing.assert_array_equal(same.item_embedding.embeddings.numpy(), trained.item_embedding.embeddings.numpy())
    grown = models.RemiModel(remi.replace(encoder="sasrec"), 30)
    with pytest.raises(ValueError, match="does not hold every weight.*missing: query_tower/encoder/"):
        model_directory.restore_best(grown, str(tmp_path))


def test_a_config_written_before_the_encoder_builds_the_same_model(tmp_path):
    """A model directory's config.yaml from 0.2.0 holds every key of 0.2.0 and none of the encoder's: it reads as
    encoder "embeddings" and training_positions "last" (what 0.2.0 did), not as 0.3.0's defaults, and builds
    exactly the weights it was trained with. A preset (`--config`) that sets only num_interests 4 is refused
    naming the keys of REMI's model."""
    import yaml

    from remi_tf import model_directory

    written = config_lib.RemiConfig(embedding_dim=8, **config_lib.DEFAULTS_BEFORE_0_3_0).to_dict()
    for key in ("encoder", "encoder_blocks", "encoder_heads", "encoder_dropout", "training_positions"):
        written.pop(key)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(written))
    config = model_directory.read_config(str(tmp_path))
    assert (config.encoder, config.training_positions, config.routing, config.num_interests) == (
        "embeddings", "last", "self_attentive", 4)
    names = [variable.name for variable in models.RemiModel(config, 30).trainable_variables]
    assert names == ["query_tower/item_embedding/embeddings:0", "query_tower/self_attentive_routing/position_embedding:0",
                     "query_tower/self_attentive_routing/kernel:0", "query_tower/self_attentive_routing/kernel:0"]
    (tmp_path / "preset.yaml").write_text("num_interests: 4\n")
    with pytest.raises(ValueError, match="for REMI's multi-interest model set encoder: embeddings, routing: "
                                         "self_attentive, training_positions: last, negatives: in_batch"):
        config_lib.load(str(tmp_path / "preset.yaml"))
    assert config_lib.load(str(tmp_path / "preset.yaml"), ["routing=self_attentive"]).num_interests == 4
