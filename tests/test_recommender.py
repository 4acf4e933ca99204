"""The TFRS model learns: it beats popularity on planted preferences."""
import dataclasses

import numpy as np
import tensorflow as tf

from tfgan_rec import baselines, evaluate, layers
from tfgan_rec.data import Examples
from tfgan_rec.recommender import model as model_lib
from tfgan_rec.recommender import training


def test_model_beats_most_popular_on_synthetic(trained):
  config, ready, result = trained
  k = config.eval.k
  model_report = evaluate.evaluate_retrieval(
      lambda users: training.score_all_items(result.model, users),
      ready.matrices["train"], ready.matrices["test"], k, ready.user_slices)
  popular = evaluate.evaluate_retrieval(
      baselines.MostPopular(ready.matrices["train"]).scores,
      ready.matrices["train"], ready.matrices["test"], k, ready.user_slices)
  for part in ("overall", "sparse", "dense"):
    assert model_report[part][f"recall@{k}"] > 1.3 * popular[part][f"recall@{k}"], part


def test_rating_head_beats_global_mean(trained):
  _, ready, result = trained
  data, test = ready.data, ready.split.test
  predicted = training.predict_ratings(result.model, data.user[test],
                                       data.item[test])
  global_mean = np.full(len(test), data.rating[ready.split.train].mean())
  assert evaluate.rmse(predicted, data.rating[test]) < evaluate.rmse(
      global_mean, data.rating[test])


def test_early_stopping_recorded_best_epoch(trained):
  config, _, result = trained
  validation = [r for r in result.history if "refit" not in r]
  best = max(validation, key=lambda r: r[f"val_recall@{config.eval.k}"])
  assert result.best_epoch == best["epoch"]
  refit = [r for r in result.history if r.get("refit")]
  assert len(refit) == result.best_epoch


def test_history_table_latest_items_first():
  table = model_lib.history_table(
      user=np.array([1, 1, 1, 2, 2, 2]), item=np.array([5, 6, 7, 8, 9, 4]),
      timestamp=np.array([3.0, 1.0, 2.0, 0.0, 0.0, 0.0]), num_users=3,
      length=2)
  # User 2's items tie in time: the later rows are the later items.
  assert table.tolist() == [[0, 0], [5, 7], [4, 9], [0, 0]]


def test_causal_history_holds_only_earlier_items_latest_first():
  # User 1 in time order: 12 (t=1), 11 (t=3), 14 (t=3, after 11 in row
  # order), then a generated 15, which is no one's history.
  rows = Examples(user=np.array([2, 1, 1, 2, 1, 1]),
                  item=np.array([10, 11, 12, 13, 14, 15]),
                  rating=np.ones(6, np.float32),
                  timestamp=np.array([5.0, 3.0, 1.0, 1.0, 3.0, 9.0]),
                  weight=np.array([1, 1, 1, 1, 1, 0.5], np.float32))
  earlier = training.EarlierItems.of_rows(rows, rows.weight >= 1, length=2)
  batch = next(iter(training.make_dataset(rows, 6, seed=0, shuffle=False,
                                          earlier=earlier)))
  assert batch["history"].numpy().tolist() == [
      [13, 0], [12, 0], [0, 0], [0, 0], [11, 12], [14, 11]]


def test_a_batch_history_replaces_the_stored_one(trained):
  _, ready, result = trained
  batch = next(iter(training.make_dataset(
      Examples.of_rows(ready.data, ready.split.train[:256]), 256,
      seed=0, shuffle=False)))
  stored = tf.gather(result.model.history_items, batch["user"])

  def loss(**history):
    tf.random.set_seed(0)  # the same sampled negatives
    return float(result.model.compute_loss(dict(batch, **history)))

  assert loss() == loss(history=stored) != loss(history=tf.zeros_like(stored))


def test_sample_weight_changes_the_loss(trained):
  config, ready, result = trained
  batch = next(iter(training.make_dataset(
      Examples.of_rows(ready.data, ready.split.train[:256]), 256,
      seed=0, shuffle=False)))
  tf.random.set_seed(0)
  full = float(result.model.compute_loss(batch))
  tf.random.set_seed(0)
  half = float(result.model.compute_loss(dict(batch, weight=batch["weight"] * 0.5)))
  assert half < full


def test_train_step_does_not_retrace_after_its_first_call(prepared):
  config, ready = prepared
  # 3000 rows in batches of 512: the last batch is smaller, which must not
  # retrace either.
  rows = Examples.of_rows(ready.data, ready.split.fit[:3000])
  model = training.build_model(config, ready.data, rows)
  dataset = training.make_dataset(rows, 512, seed=0)
  model.fit(dataset.take(1), epochs=1, verbose=0)
  # The first call may trace twice (tf.function re-traces once after it
  # creates the optimizer's variables); after that, never again.
  traces = model.train_function.experimental_get_tracing_count()
  model.fit(dataset, epochs=2, verbose=0)
  model.fit(dataset, epochs=1, verbose=0)
  assert model.train_function.experimental_get_tracing_count() == traces


def test_pooled_embedding_is_the_mean_of_present_ids_with_a_dense_gradient():
  layer = layers.PooledEmbedding(6, 3)
  bags = tf.constant([[1, 2, 0, 2], [0, 0, 0, 0], [5, 0, 0, 0]])
  with tf.GradientTape() as tape:
    pooled = layer(bags)
    loss = tf.reduce_sum(pooled)
  table = layer.embeddings.numpy()
  expected = [(table[1] + 2 * table[2]) / 3, np.zeros(3), table[5]]
  np.testing.assert_allclose(pooled.numpy(), expected, rtol=1e-6, atol=1e-7)
  gradient = tape.gradient(loss, layer.embeddings)
  # One dense row per id, not one slice per position.
  assert isinstance(gradient, tf.Tensor)
  np.testing.assert_allclose(gradient.numpy()[:, 0],
                             [0, 1 / 3, 2 / 3, 0, 0, 1], rtol=1e-6)


def test_new_user_dropout_trains_the_new_user_id(prepared):
  config, ready = prepared
  rows = Examples.of_rows(ready.data, ready.split.fit[:3000])
  rows_of_new_user = {}
  for dropout in (0.0, 0.3):
    with_dropout = dataclasses.replace(config, model=dataclasses.replace(
        config.model, new_user_dropout=dropout))
    model = training.build_model(with_dropout, ready.data, rows)
    table = model.query_tower.id_embedding
    model.fit(training.make_dataset(rows, 512, seed=0).take(1), epochs=1,
              verbose=0)  # builds the variables
    before = table.embeddings.numpy()[0].copy()
    model.fit(training.make_dataset(rows, 512, seed=0), epochs=1, verbose=0)
    rows_of_new_user[dropout] = np.abs(table.embeddings.numpy()[0] -
                                       before).max()
  # Without it nobody trains as user 0; with it, user 0's row learns.
  assert rows_of_new_user[0.0] == 0.0
  assert rows_of_new_user[0.3] > 1e-4


def test_without_pooled_history_the_query_ignores_the_history(prepared):
  config, ready = prepared
  config = config.copy()
  config.model.pooled_history = False
  rows = Examples.of_rows(ready.data, ready.split.fit[:3000])
  model = training.build_model(config, ready.data, rows)
  assert model.query_tower.history_embedding is None
  user = tf.constant([1, 2])
  features = model.user_feature_rows(user)
  empty = tf.zeros([2, 5], tf.int32)
  full = tf.constant([[1, 2, 3, 4, 5], [6, 7, 0, 0, 0]])
  np.testing.assert_array_equal(
      model.query_tower(user, features, empty, preprocessed=True).numpy(),
      model.query_tower(user, features, full, preprocessed=True).numpy())
