"""Next-item transitions blended into retrieval: the layer scores as the
Transitions baseline does, the blend ranks as the z-scored mix it was
measured as, it is chosen on validation, exported and restored, and left
out where it cannot serve."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from tfgan_rec import (baselines, next_items, pipeline, saved_models,
                       signatures)
from tfgan_rec.errors import InputError
from tfgan_rec.recommender import training
from tfgan_rec.recommender.model import history_table


def z_scored(scores):
  rest = scores[:, 1:]
  return ((scores - rest.mean(1, keepdims=True)) /
          rest.std(1, keepdims=True))


def blend_layer(ready, weight, window=10, history=5, neighbours=None):
  rows = ready.examples("train")
  data = ready.data
  transitions = baselines.ItemTransitions(
      rows.user, rows.item, rows.timestamp, data.num_users, data.num_items,
      window, history)
  table = next_items.neighbour_table(
      transitions.transitions.tocsr(),
      neighbours or next_items.neighbours_for(data.num_items))
  return transitions, next_items.NextItemBlend(*table, history, weight)


def test_transition_scores_equal_the_baseline(prepared):
  _, ready = prepared
  # Every successor kept: the layer computes exactly the baseline's scores.
  baseline, layer = blend_layer(ready, 0.0,
                                neighbours=ready.data.num_items + 1)
  rows = ready.examples("train")
  histories = history_table(rows.user, rows.item, rows.timestamp,
                            ready.data.num_users, 20)
  users = np.arange(1, ready.data.num_users + 1)
  np.testing.assert_allclose(
      layer.transition_scores(tf.constant(histories[users])).numpy(),
      baseline.scores(users), rtol=1e-5, atol=1e-7)


def test_blend_ranks_as_the_z_scored_mix_and_leaves_empty_rows(prepared):
  _, ready = prepared
  _, layer = blend_layer(ready, 0.3)
  rng = np.random.default_rng(0)
  width = ready.data.num_items + 1
  scores = rng.normal(size=(3, width)).astype(np.float32)
  history = np.array([[5, 3, 0], [7, 0, 0], [0, 0, 0]], np.int32)
  blended = layer(tf.constant(scores), tf.constant(history)).numpy()
  transitions = layer.transition_scores(tf.constant(history)).numpy()
  assert transitions[:2].any()
  mix = 0.7 * z_scored(scores[:2]) + 0.3 * z_scored(transitions[:2])
  np.testing.assert_array_equal(np.argsort(-blended[:2, 1:], kind="stable"),
                                np.argsort(-mix[:, 1:], kind="stable"))
  np.testing.assert_array_equal(blended[2], scores[2])


def test_neighbour_table_keeps_the_strongest_successors(prepared):
  _, ready = prepared
  full, layer = blend_layer(ready, 0.0, neighbours=3)
  dense = full.transitions.toarray()
  indices = layer.indices.numpy()
  for row in (1, 2, 3):
    kept = dense[row, indices[row][layer.values.numpy()[row] > 0]]
    assert len(kept) == min(3, np.count_nonzero(dense[row]))
    assert kept.min(initial=np.inf) >= np.sort(dense[row])[-3]


@pytest.fixture
def with_blend(trained):
  """The session's model with a blend of weight 0.3 attached (detached
  after): (ready, model)."""
  _, ready, result = trained
  model = result.model
  before = model.next_item_blend
  model.attach_next_item_blend(blend_layer(ready, 0.3)[1])
  yield ready, model
  model.attach_next_item_blend(before)


def test_exported_retrieval_serves_the_blend(with_blend, tmp_path):
  ready, model = with_blend
  data, train = ready.data, ready.split.train
  paths = saved_models.export_models(
      model, data.user_ids, data.item_ids, data.user[train], data.item[train],
      str(tmp_path), top_k=10, user_columns=list(data.user_features.columns))
  serve = tf.saved_model.load(paths["retrieval"]).signatures[
      "serving_default"]
  users = np.arange(1, 6)
  out = serve(user_id=tf.constant(data.user_ids[users - 1].astype(str)))
  scores = training.score_all_items(model, users)
  scores[:, 0] = -np.inf
  seen = ready.matrices["train"][users].toarray() > 0
  scores[seen] = -np.inf
  expected = np.sort(scores, axis=1)[:, ::-1][:, :10]
  np.testing.assert_allclose(out["scores"].numpy(), expected, rtol=1e-4,
                             atol=1e-4)
  # An empty request fails on its check, not inside the blend or top_k.
  recommend = tf.saved_model.load(paths["recommend"]).signatures[
      "serving_default"]
  with pytest.raises(tf.errors.InvalidArgumentError, match="is empty"):
    recommend(user_id=tf.constant([], tf.string),
              k=tf.constant([], tf.int32))
  tower = tf.matmul(model.user_embeddings(tf.constant(users)),
                    training.item_matrix(model), transpose_b=True).numpy()
  assert not np.allclose(training.score_all_items(model, users), tower)
  # Liked items rank by the known ones before them: pads and unknown IDs
  # anywhere in the row change nothing.
  liked = list(data.item_ids[ready.matrices["train"][1].indices[:2] - 1]
               .astype(str))
  padded = ["", "no-such-item", liked[0], "", liked[1]]
  features = {name: tf.constant([column[0]] * 2) for name, column
              in data.user_features.columns.items()}
  out = tf.saved_model.load(paths["recommend"]).signatures[
      "recommend_for_features"](
      **features, liked_item_ids=tf.constant([liked + [""] * 3, padded]),
      k=tf.constant([10, 10], tf.int32))
  np.testing.assert_array_equal(out["item_ids"][0], out["item_ids"][1])
  np.testing.assert_allclose(out["scores"][0], out["scores"][1], rtol=1e-6)
  # A one-member group is that member's own (blended) two-stage list, in
  # its order (its scores are z-normalised, so on another scale); with
  # the tower's scores alone it was not (checked when this was written).
  signatures_of = tf.saved_model.load(paths["recommend"]).signatures
  for user in data.user_ids[:5].astype(str):
    single = signatures_of["recommend_group"](
        member_ids=tf.constant([[user, ""]]), strategy=tf.constant(["average"]),
        k=tf.constant([10], tf.int32))
    own = signatures_of["serving_default"](user_id=tf.constant([user]),
                                           k=tf.constant([10], tf.int32))
    np.testing.assert_array_equal(single["item_ids"], own["item_ids"])


def test_pads_and_unknown_ids_take_no_rank(prepared):
  _, ready = prepared
  _, layer = blend_layer(ready, 0.3, history=20)
  rng = np.random.default_rng(1)
  known = rng.integers(1, ready.data.num_items + 1, size=(2, 25))
  scattered = np.zeros((2, 40), np.int32)
  slots = np.sort(rng.choice(40, size=25, replace=False))
  scattered[:, slots] = known
  np.testing.assert_allclose(
      layer.transition_scores(tf.constant(scattered)).numpy(),
      layer.transition_scores(tf.constant(known[:, :20])).numpy(),
      rtol=1e-6)


def test_compact_index_refuses_a_blended_model(with_blend):
  ready, model = with_blend
  data, train = ready.data, ready.split.train
  with pytest.raises(ValueError, match="index exact"):
    signatures.RetrievalModule(model, data.user_ids, data.item_ids,
                               data.user[train], data.item[train],
                               index="compact")


def test_restored_model_scores_with_the_blend(with_blend, trained,
                                              tmp_path):
  (ready, model), config = with_blend, trained[0]
  training.save_model(model, str(tmp_path))
  assert training.saved_with(str(tmp_path), "next_item_blend")
  restored = training.restore_model(config, ready.data,
                                    ready.examples("train"), str(tmp_path),
                                    rebuild=next_items.attach_untrained)
  users = np.arange(1, 8)
  np.testing.assert_allclose(training.score_all_items(restored, users),
                             training.score_all_items(model, users),
                             rtol=1e-5, atol=1e-5)


def test_attach_chooses_on_validation(trained):
  config, ready, result = trained
  config = config.copy()
  config.model.next_items = "auto"
  models = (result.fit_model, result.model)
  before = [model.next_item_blend for model in models]
  try:
    choice = next_items.attach(config, ready, result, ready.examples("fit"),
                               ready.examples("train"))
    attached = [model.next_item_blend for model in models]
  finally:
    for model, layer in zip(models, before):
      model.attach_next_item_blend(layer)
  assert set(choice.tried) == set(next_items.WEIGHT_GRID)
  assert choice.weight == max(choice.tried, key=choice.tried.get)
  if choice.weight:
    assert all(layer.weight.numpy() == choice.weight for layer in attached)
    assert attached[0] is not attached[1]
  else:
    assert attached == [None, None] and "not used" in choice.reason


@pytest.mark.parametrize("override, reason", [
    ({"model": {"next_items": "off"}}, "--next-items off"),
    ({"export": {"index": "compact"}}, "compact index"),
    ({"model": {"generated_in_history": True}}, "generated items")])
def test_attach_leaves_it_out_when_told_or_compact(trained, override,
                                                   reason):
  config, ready, result = trained
  changed = config.copy()
  changed.model.next_items = "auto"
  for section, values in override.items():
    setattr(changed, section,
            dataclasses.replace(getattr(changed, section), **values))
  choice = next_items.attach(changed, ready, result, ready.examples("fit"),
                             ready.examples("train"))
  assert choice.weight == 0.0 and reason in choice.reason


def test_export_stage_refuses_compact_for_a_blended_run(with_blend, trained,
                                                        tmp_path):
  _, model = with_blend
  training.save_model(model, str(tmp_path / pipeline.MODEL_DIR))
  config = trained[0].copy()
  config.export.index = "compact"
  with pytest.raises(InputError, match="--index exact"):
    pipeline.export_run(str(tmp_path), config)


def test_history_is_no_longer_than_the_model_keeps(trained):
  config, ready, _ = trained
  config = config.copy()
  config.model.history_length = 3
  settings = next_items._settings(config, ready, ready.examples("fit"))
  assert settings["history"] == 3


def test_generated_rows_must_weigh_less_than_real_ones(trained):
  config = trained[0].copy()
  config.augmentation.weight = 1.0
  with pytest.raises(InputError, match="augmentation.weight=1.0"):
    config.check()
