"""The user generator: simulated thin profiles, training, the serving blend,
and the export that carries it."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from tfgan_rec import pipeline, saved_models, thin_users
from tfgan_rec.config import UserGANConfig
from tfgan_rec.gan import loop
from tfgan_rec.gan import user_generator as user_gan
from tfgan_rec.recommender import training

SMALL = UserGANConfig(steps=30, batch_size=32, hidden=32)


def histories_of(lengths):
  """Users 1..n whose items are 100 * user + position (time order)."""
  items = np.zeros((len(lengths) + 1, max(lengths)), np.int32)
  for user, length in enumerate(lengths, start=1):
    items[user, :length] = 100 * user + np.arange(length)
  return {"items": tf.constant(items),
          "lengths": tf.constant(np.r_[0, lengths].astype(np.int32))}


@pytest.mark.parametrize("returning", [0.0, 1.0])
def test_episodes_keep_at_most_max_thin_and_look_after_them(returning):
  config = dataclasses.replace(SMALL, new_user_share=0.0,
                               returning_share=returning)
  users = tf.constant(np.arange(1, 201) % 4 + 1, tf.int32)
  histories = histories_of([30, 40, 25, 60])
  thin, following = user_gan.episodes(histories, users, config,
                                      tf.constant([3, 4], tf.int64))
  thin, following = thin.numpy(), following.numpy()
  assert (thin > 0).sum(axis=1).max() <= config.max_thin
  for row_thin, row_next in zip(thin, following):
    positions = row_thin[row_thin > 0] % 100  # position in the user's time
    after = row_next[row_next > 0] % 100
    assert len(after) > 0
    # Latest first, consecutive; what follows is later in time.
    assert (np.diff(positions) == -1).all()
    assert after.min() > positions.max(initial=-1)
    if returning:  # the user's first items; the latest ones follow
      assert positions.min(initial=0) == 0
      assert after.max() >= 20


def test_new_user_episodes_keep_nothing():
  config = dataclasses.replace(SMALL, new_user_share=1.0)
  thin, following = user_gan.episodes(histories_of([30]),
                                      tf.constant([1, 1]), config,
                                      tf.constant([0, 1], tf.int64))
  assert not thin.numpy().any() and (following.numpy() > 0).any()


def test_user_histories_keep_the_latest_in_time_order():
  histories = user_gan.UserHistories.from_interactions(
      np.array([2, 1, 2, 2]), np.array([5, 6, 7, 8]),
      np.array([3.0, 1.0, 1.0, 2.0]), num_users=2, length=2)
  assert histories.items.tolist() == [[0, 0], [6, 0], [8, 5]]
  assert histories.lengths.tolist() == [0, 1, 2]


@pytest.fixture(scope="module")
def user_trainer(trained):
  config, ready, result = trained
  config = dataclasses.replace(config, user_gan=SMALL)
  trainer = thin_users.train_user_generator(config, ready, result.model,
                                            ready.examples("train"))
  return config, ready, result, trainer


def test_trainer_traces_once_and_holds_out_validation_users(user_trainer):
  _, _, _, trainer = user_trainer
  assert trainer.trace_count == 1
  train = set(trainer.train_users.numpy())
  assert len(trainer.validation_users) and not train & set(
      trainer.validation_users)


def test_new_user_episodes_score_a_users_first_items(user_trainer):
  _, ready, _, trainer = user_trainer
  users, first = user_gan.new_user_episodes(trainer)
  data = ready.data
  for user, items in zip(users[:5], first):
    rows = np.flatnonzero(data.user[ready.split.train] == user)
    rows = ready.split.train[rows]
    oldest = data.item[rows][np.lexsort((data.timestamp[rows],))]
    assert items[items > 0].tolist() == oldest[:len(items)].tolist()


def test_blend_weight_zero_keeps_tower_and_one_gives_generated(user_trainer):
  config, ready, result, trainer = user_trainer
  model = result.model
  users = tf.constant([1, 2, 3], tf.int32)
  tower = model.user_embeddings(users).numpy()
  layer = thin_users.thin_user_query(config, trainer.generator, np.zeros(4))
  model.attach_thin_user_query(layer)
  try:
    np.testing.assert_allclose(model.user_embeddings(users), tower,
                               atol=1e-6)
    layer.blend_weights.assign(np.ones(4, np.float32))
    history = tf.gather(model.history_items, users)
    features = {k: tf.gather(v, users) for k, v in model.user_features.items()}
    np.testing.assert_allclose(
        model.user_embeddings(users),
        layer.generated(history[:, :config.user_gan.max_thin], features),
        atol=1e-5)
    # Training passes the history itself and never gets the blend.
    np.testing.assert_allclose(
        model.user_embeddings(users, history), tower, atol=1e-6)
  finally:
    model.attach_thin_user_query(None)


def test_export_serves_the_blend_exactly(user_trainer, tmp_path):
  config, ready, result, trainer = user_trainer
  model, data = result.model, ready.data
  model.attach_thin_user_query(thin_users.thin_user_query(
      config, trainer.generator, np.array([1.0, 0.5, 0.5, 0.0])))
  try:
    train = ready.split.train
    paths = saved_models.export_models(
        model, data.user_ids, data.item_ids, data.user[train],
        data.item[train], str(tmp_path), top_k=5,
        user_columns=list(data.user_features.columns))
    serve = tf.saved_model.load(paths["retrieval"]).signatures[
        "serving_default"]
    counts = np.bincount(data.user[train], minlength=data.num_users + 1)
    user = int(np.flatnonzero((counts > 0) & (counts < 6))[0])
    out = serve(user_id=tf.constant([data.user_ids[user - 1]]))
    expected = training.score_all_items(model, np.array([user]))[0]
    index = {item: i + 1 for i, item in enumerate(data.item_ids)}
    first = [index[i.decode()] for i in out["item_ids"].numpy()[0]]
    np.testing.assert_allclose(out["scores"].numpy()[0], expected[first],
                               rtol=1e-4, atol=1e-5)
  finally:
    model.attach_thin_user_query(None)


def test_early_stopping_excludes_only_real_interactions(prepared,
                                                        monkeypatch):
  config, ready = prepared
  config = dataclasses.replace(
      config, train=dataclasses.replace(config.train, epochs=1, refit=False))
  seen = []
  monkeypatch.setattr(training, "validation_recall",
                      lambda model, validation, k: seen.append(
                          validation.seen) or 0.0)
  fit_rows = ready.examples("fit")
  generated = ready.examples("validation")  # as if the GAN guessed them
  generated.weight[:] = 0.1
  pipeline.train_recommender(config, ready, fit_rows + generated, fit_rows)
  assert (seen[0] != ready.matrices["fit"]).nnz == 0


def test_new_users_are_served_through_features_not_an_untrained_id(trained):
  _, ready, result = trained
  model = result.model
  history = model.history_items.numpy()
  user = int(np.flatnonzero(history.any(axis=1))[0])
  features = {k: tf.gather(v, [user]) for k, v in model.user_features.items()}
  as_new = model.query_tower(tf.constant([0]), features,
                             tf.zeros([1, history.shape[1]], tf.int32),
                             preprocessed=True)
  model.history_items.assign(np.where(np.arange(len(history))[:, None] ==
                                      user, 0, history))
  try:
    np.testing.assert_allclose(model.user_embeddings(tf.constant([user])),
                               as_new, atol=1e-6)
  finally:
    model.history_items.assign(history)


def test_a_diverging_user_generator_stops_with_a_message(trained):
  config, ready, result = trained
  config = dataclasses.replace(config, user_gan=dataclasses.replace(
      SMALL, divergence_threshold=1e-9))
  with pytest.raises(loop.GANDivergedError, match="step 1 .*Lower"):
    thin_users.train_user_generator(config, ready, result.model,
                                    ready.examples("train"))
