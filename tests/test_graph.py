"""The graph tower: LightGCN propagation checked by hand on a small graph,
the fallback of nodes without edges, the adjacency of the trained rows only,
one propagation per training step, and exports that need no graph op."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from tfgan_rec import baselines, config as config_lib, evaluate, pipeline
from tfgan_rec import saved_models, signatures
from tfgan_rec.data import Examples
from tfgan_rec.errors import InputError
from tfgan_rec.recommender import graph, training

# 3 users, 3 items; user 3 and item 3 have no edge; (2, 2) is generated.
USER, ITEM = np.array([1, 1, 2, 2]), np.array([1, 2, 1, 2])
WEIGHT = np.array([1.0, 1.0, 1.0, 0.5])
NUM_USERS = NUM_ITEMS = 3


def hand_adjacency():
  """The dense normalised adjacency, node u = user u, node 4 + i = item i."""
  a = np.zeros((8, 8))
  for u, i, w in zip(USER, ITEM, WEIGHT):
    a[u, 4 + i] = a[4 + i, u] = w
  degree = a.sum(1)
  scale = np.where(degree > 0, 1 / np.sqrt(np.maximum(degree, 1e-12)), 0)
  return scale[:, None] * a * scale[None, :]


def densified(adjacency):
  dense = np.zeros((adjacency.num_nodes,) * 2)
  dense[tuple(adjacency.indices.T)] = adjacency.values
  return dense


def test_adjacency_is_the_symmetric_normalisation_of_weighted_edges():
  adjacency = graph.normalized_adjacency(USER, ITEM, WEIGHT, NUM_USERS,
                                         NUM_ITEMS)
  expected = hand_adjacency()
  # e.g. user 2 (degree 1.5) and item 2 (degree 1.5): 0.5 / 1.5.
  assert expected[2, 6] == pytest.approx(0.5 / 1.5)
  np.testing.assert_allclose(densified(adjacency), expected, rtol=1e-6)
  assert adjacency.connected.tolist() == [False, True, True, False,
                                          False, True, True, False]
  # Canonical row-major order, as tf.sparse ops expect.
  order = np.lexsort((adjacency.indices[:, 1], adjacency.indices[:, 0]))
  assert order.tolist() == list(range(len(order)))


def test_row_normalisation_makes_each_step_a_weighted_mean():
  adjacency = graph.normalized_adjacency(USER, ITEM, WEIGHT, NUM_USERS,
                                         NUM_ITEMS, normalization="row")
  a = np.zeros((8, 8))
  for u, i, w in zip(USER, ITEM, WEIGHT):
    a[u, 4 + i] = a[4 + i, u] = w
  degree = a.sum(1, keepdims=True)
  expected = np.divide(a, degree, out=np.zeros_like(a), where=degree > 0)
  # e.g. user 2: item 1 (weight 1) and item 2 (0.5), degree 1.5.
  assert expected[2, 5] == pytest.approx(1 / 1.5)
  assert expected[2, 6] == pytest.approx(0.5 / 1.5)
  np.testing.assert_allclose(densified(adjacency), expected, rtol=1e-6)
  layer = graph.GraphEmbedding(adjacency, num_users=NUM_USERS, dim=4,
                               layers=2)
  table = layer.table.numpy().astype(np.float64)
  propagated = (table + expected @ table + expected @ expected @ table) / 3
  propagated[[0, 3, 4, 7]] = 0.0
  np.testing.assert_allclose(layer.propagate().numpy(), propagated,
                             rtol=1e-5, atol=1e-7)
  with pytest.raises(ValueError, match="normalization"):
    graph.normalized_adjacency(USER, ITEM, WEIGHT, NUM_USERS, NUM_ITEMS,
                               normalization="left")


def test_repeated_interactions_sum_their_weights():
  adjacency = graph.normalized_adjacency(
      np.array([1, 1]), np.array([1, 1]), np.array([1.0, 0.5]), 1, 1)
  # One edge of weight 1.5 between the only user and item: 1.5 / 1.5.
  np.testing.assert_allclose(adjacency.values, [1.0, 1.0])


@pytest.mark.parametrize("combination", ["mean", "learned"])
def test_propagation_matches_numpy(combination):
  layer = graph.GraphEmbedding(
      graph.normalized_adjacency(USER, ITEM, WEIGHT, NUM_USERS, NUM_ITEMS),
      num_users=NUM_USERS, dim=4, layers=2, combination=combination)
  if combination == "learned":
    layer.layer_logits.assign([0.0, 1.0, -1.0])
    assert layer.layer_logits.trainable
  table, a = layer.table.numpy().astype(np.float64), hand_adjacency()
  weights = np.exp(layer.layer_logits.numpy())
  weights /= weights.sum()
  expected = (weights[0] * table + weights[1] * a @ table +
              weights[2] * a @ a @ table)
  expected[[0, 3, 4, 7]] = 0.0  # nodes without edges
  np.testing.assert_allclose(layer.propagate().numpy(), expected, rtol=1e-5,
                             atol=1e-7)
  # Users and items gather their own rows of a training step's propagation.
  np.testing.assert_allclose(
      layer.item_rows(tf.constant([2]), layer.step_rows()).numpy(),
      expected[[6]], rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(
      layer.user_rows(tf.constant([1]), layer.step_rows()).numpy(),
      expected[[1]], rtol=1e-5, atol=1e-7)


def test_edge_dropout_only_in_training():
  layer = graph.GraphEmbedding(
      graph.normalized_adjacency(USER, ITEM, WEIGHT, NUM_USERS, NUM_ITEMS),
      num_users=NUM_USERS, dim=4, layers=1, edge_dropout=0.5)
  a, table = hand_adjacency(), layer.table.numpy()
  expected = (table + a @ table) / 2 * hand_adjacency().any(1)[:, None]
  np.testing.assert_allclose(layer.propagate(training=False).numpy(),
                             expected, rtol=1e-5, atol=1e-7)
  tf.random.set_seed(0)
  dropped = [layer.propagate(training=True).numpy() for _ in range(5)]
  assert any(not np.allclose(d, expected, atol=1e-6) for d in dropped)


@pytest.fixture(scope="module")
def graph_config(prepared):
  config, _ = prepared
  config = config.copy()
  config.model.tower = "graph"
  return config


@pytest.fixture(scope="module")
def graph_trained(graph_config, prepared):
  _, ready = prepared
  config = graph_config.copy()
  config.train.epochs = 6
  result = pipeline.train_recommender(config, ready, ready.examples("fit"),
                                      ready.examples("train"))
  return config, ready, result


def pairs(user, item):
  return set(zip(np.asarray(user).tolist(), np.asarray(item).tolist()))


def test_adjacency_holds_only_the_rows_trained_on(graph_config, prepared):
  _, ready = prepared
  data = ready.data
  fit = ready.examples("fit")
  model = training.build_model(graph_config, data, fit)
  indices = model.graph.edge_indices.numpy()
  users = indices[indices[:, 0] <= data.num_users]
  edges = pairs(users[:, 0], users[:, 1] - data.num_users - 1)
  assert edges == pairs(fit.user, fit.item)
  validation = ready.split.validation
  assert not edges & pairs(data.user[validation], data.item[validation])
  assert model.query_tower.id_embedding is None
  assert model.candidate_tower.id_embedding is None


def test_nodes_without_edges_fall_back_to_features_and_history(
    graph_trained):
  _, ready, result = graph_trained
  model, data = result.model, ready.data
  fit = ready.examples("train")
  unseen_items = np.setdiff1d(np.arange(1, data.num_items + 1), fit.item)
  rows = model.graph.item_rows(tf.constant(np.r_[0, unseen_items],
                                           tf.int32)).numpy()
  assert not rows.any()
  assert not model.graph.user_rows(tf.constant([0])).numpy().any()
  # A user with edges served as the unknown user 0 (same features and
  # history) differs only by the graph embedding, which is then 0.
  user = tf.constant([int(fit.user[0])])
  history = tf.gather(model.history_items, user)
  features = model.user_feature_rows(user)
  known = model.query_tower(user, features, history, preprocessed=True)
  unknown = model.query_tower(tf.zeros_like(user), features, history,
                              preprocessed=True)
  assert model.graph.user_rows(user).numpy().any()
  assert not np.allclose(known.numpy(), unknown.numpy())


def test_graph_tower_learns(graph_trained):
  config, ready, result = graph_trained
  k = config.eval.k
  model_report = evaluate.evaluate_retrieval(
      lambda users: training.score_all_items(result.model, users),
      ready.matrices["train"], ready.matrices["test"], k)
  popular = evaluate.evaluate_retrieval(
      baselines.MostPopular(ready.matrices["train"]).scores,
      ready.matrices["train"], ready.matrices["test"], k)
  assert (model_report["overall"][f"recall@{k}"] >
          1.3 * popular["overall"][f"recall@{k}"])


def test_fit_leaves_the_cache_equal_to_the_propagation(graph_trained):
  _, _, result = graph_trained
  model = result.model
  np.testing.assert_allclose(model.graph.cached.numpy(),
                             model.graph.propagate(training=False).numpy(),
                             rtol=1e-6, atol=1e-7)
  assert np.abs(model.graph.cached.numpy()).sum() > 0


def model_counting_propagations(config, ready):
  """A model on 3,000 fit rows, its dataset, and the list to which every
  propagation (the sparse matmuls) inside a traced function appends its
  `training`."""
  rows = Examples.of_rows(ready.data, ready.split.fit[:3000])
  model = training.build_model(config, ready.data, rows)
  traced = []
  layers = model.graph._layers  # pylint: disable=protected-access

  def counting(training=None, seed=None):
    if tf.inside_function():
      traced.append(training)
    return layers(training, seed)

  model.graph._layers = counting  # pylint: disable=protected-access
  return model, training.make_dataset(rows, 512, seed=0), traced


def test_a_training_step_propagates_once_and_does_not_retrace(
    graph_config, prepared):
  _, ready = prepared
  config = graph_config.copy()
  config.model.graph_edge_dropout = 0.1
  model, dataset, traced = model_counting_propagations(config, ready)
  model.fit(dataset.take(1), epochs=1, verbose=0)
  traces = model.train_function.experimental_get_tracing_count()
  # Each trace of the step propagates exactly once, in training mode.
  assert traced == [True] * traces
  model.fit(dataset, epochs=2, verbose=0)
  assert model.train_function.experimental_get_tracing_count() == traces


def test_epoch_propagation_trains_own_rows_against_the_kept_layers():
  layer = graph.GraphEmbedding(
      graph.normalized_adjacency(USER, ITEM, WEIGHT, NUM_USERS, NUM_ITEMS),
      num_users=NUM_USERS, dim=4, layers=1, propagation="epoch")
  a, kept = hand_adjacency(), layer.table.numpy()
  connected = a.any(1)[:, None]
  layer.refresh()
  np.testing.assert_allclose(layer.cached.numpy(),
                             (kept + a @ kept) / 2 * connected, rtol=1e-5,
                             atol=1e-7)
  # The table moves; until the next refresh a step reads the new own rows
  # and the layer propagated from the old table.
  moved = kept + 1.0
  layer.table.assign(moved)
  nodes = tf.constant([1, 5, 3])
  with tf.GradientTape() as tape:
    rows = layer.step_rows(training=True)(nodes)
    loss = tf.reduce_sum(rows)
  expected = ((moved + a @ kept) / 2 * connected)[[1, 5, 3]]
  np.testing.assert_allclose(rows.numpy(), expected, rtol=1e-5, atol=1e-7)
  # Only the step's nodes get a gradient (their own rows), not their
  # neighbours; node 3 has no edge, so none either.
  gradient = tape.gradient(loss, layer.table)
  dense = tf.convert_to_tensor(gradient).numpy()
  assert isinstance(gradient, tf.IndexedSlices)
  np.testing.assert_allclose(dense[[1, 5]], 0.5, rtol=1e-6)
  assert not np.delete(dense, [1, 5], axis=0).any()


class _CheckKeptLayers(tf.keras.callbacks.Callback):
  """At each epoch's first step, whether the kept layers are the
  propagation of the table as it is then."""

  def __init__(self, graph_layer):
    super().__init__()
    self.graph, self.fresh = graph_layer, []

  def on_train_batch_begin(self, batch, logs=None):
    if batch == 0:
      propagated = self.graph._layers(training=False)  # pylint: disable=protected-access
      self.fresh.append(np.allclose(self.graph.kept_layers.numpy(),
                                    tf.stack(propagated, axis=1).numpy(),
                                    rtol=1e-5, atol=1e-6))


def test_epoch_propagation_steps_never_propagate(graph_config, prepared):
  _, ready = prepared
  config = graph_config.copy()
  config.model.graph_propagation = "epoch"
  model, dataset, traced = model_counting_propagations(config, ready)
  check = _CheckKeptLayers(model.graph)
  model.fit(dataset.take(2), epochs=3, verbose=0, callbacks=[check])
  assert traced == []
  # Every epoch, the first included, trains against the layers of the
  # table it starts from; after fit the cache is the propagation of the
  # trained weights.
  assert check.fresh == [True] * 3
  np.testing.assert_allclose(model.graph.cached.numpy(),
                             model.graph.propagate(training=False).numpy(),
                             rtol=1e-5, atol=1e-6)
  # The kept layers stay out of the weights (and so of checkpoints and
  # exports): they are recomputed before any step reads them.
  kept = model.graph.kept_layers.ref()
  assert all(w.ref() != kept for w in model.weights)


def test_epoch_propagation_refuses_edge_dropout(graph_config):
  config = graph_config.copy()
  config.model.graph_propagation = "epoch"
  config.model.graph_edge_dropout = 0.1
  with pytest.raises(InputError, match="--graph-propagation step"):
    config.check()


def test_export_bakes_the_propagation_in(graph_trained, tmp_path):
  _, ready, result = graph_trained
  model, data, train = result.model, ready.data, ready.split.train
  module = signatures.RecommendModule(
      model, data.user_ids, data.item_ids, data.user[train],
      data.item[train], user_columns=list(data.user_features.columns))
  for function in (module.recommend, module.recommend_group,
                   module.recommend_for_features):
    read = {v.ref() for v in function.get_concrete_function().variables}
    # The signatures gather from the cached propagation, never propagate.
    assert model.graph.cached.ref() in read
    assert model.graph.table.ref() not in read
  paths = saved_models.export_models(
      model, data.user_ids, data.item_ids, data.user[train],
      data.item[train], str(tmp_path), top_k=10,
      user_columns=list(data.user_features.columns))
  retrieval = tf.saved_model.load(paths["retrieval"])
  users = np.array([1, 2, 3])
  out = retrieval.signatures["serving_default"](
      user_id=tf.constant(data.user_ids[users - 1].astype(str)))
  in_process = training.score_all_items(model, users)
  item_index = {item: i + 1 for i, item in enumerate(data.item_ids)}
  for row in range(len(users)):
    got = [item_index[i.decode()] for i in out["item_ids"][row].numpy()]
    np.testing.assert_allclose(out["scores"][row].numpy(),
                               in_process[row, got], rtol=1e-4, atol=1e-5)
  ranking = tf.saved_model.load(paths["ranking"]).signatures[
      "serving_default"]
  score = ranking(user_id=tf.constant(data.user_ids[:2].astype(str)),
                  item_id=tf.constant(data.item_ids[:2].astype(str)))
  np.testing.assert_allclose(
      score["score"].numpy(),
      training.predict_ratings(model, np.array([1, 2]), np.array([1, 2])),
      rtol=1e-5, atol=1e-5)


def test_restored_graph_model_scores_as_trained(graph_trained, tmp_path):
  config, ready, result = graph_trained
  training.save_model(result.model, str(tmp_path))
  restored = training.restore_model(config, ready.data,
                                    ready.examples("train"), str(tmp_path))
  users = np.array([1, 5, 9])
  np.testing.assert_allclose(training.score_all_items(restored, users),
                             training.score_all_items(result.model, users),
                             rtol=1e-5, atol=1e-6)


def test_unknown_tower_settings_are_rejected():
  config = config_lib.RunConfig()
  config.model = dataclasses.replace(config.model, tower="gnn")
  with pytest.raises(InputError, match="model.tower"):
    config.check()
  config.model = dataclasses.replace(config.model, tower="graph",
                                     graph_layers=11)
  with pytest.raises(InputError, match="model.graph_layers"):
    config.check()
  config.model = dataclasses.replace(config.model, graph_layers=2,
                                     graph_normalization="left")
  with pytest.raises(InputError, match="model.graph_normalization"):
    config.check()
