"""Users without history served by the feature softmax: the graph scores as
the numpy fit does, the exports retrieve with it for exactly those users, and
it is attached unless `--new-users tower` or the data rule it out."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from tfgan_rec import baselines, new_users, saved_models
from tfgan_rec.feature_groups import FeatureGroups, GroupSoftmax
from tfgan_rec.layers import FeaturePreprocessing, NumberStatistics
from tfgan_rec.recommender import training
from tfgan_rec.recommender.model import NEW_USER_SCORER


def raw_rows(table, users):
  return {name: tf.constant(column[users].astype(str))
          for name, column in table.columns.items()}


def test_group_softmax_scores_as_it_was_fitted(trained):
  _, ready, result = trained
  table, train = ready.data.user_features, ready.matrices["train"]
  softmax = baselines.FeatureSoftmax(train, table, l2=1e-3, steps=30)
  # gender, occupation and the age deciles, and their three crosses.
  assert [name for name, _ in softmax.groups.sizes] == [
      "age_bucket", "gender", "occupation"]
  users = np.arange(1, 60)
  # Fed by the model's own encoder, from its table and from raw requests.
  model = result.model
  for encoded in (model.user_feature_rows(tf.constant(users)),
                  model.user_preprocessing(raw_rows(table, users))):
    np.testing.assert_allclose(softmax.layer()(encoded).numpy(),
                               softmax.scores(users), rtol=1e-5, atol=1e-5)


def test_feature_groups_skip_large_and_multi_valued_features():
  preprocessing = FeaturePreprocessing(
      {"city": "categorical", "genres": "tokens", "age": "numeric"},
      {"city": [f"c{i}" for i in range(30)], "genres": ["a", "b"]},
      {"age": NumberStatistics(30.0, 4.0, (20.0, 40.0))})
  # 31 city ids are too many; a bag of genres is not one group per user.
  assert FeatureGroups.of(preprocessing).sizes == (("age_bucket", 4),)


@pytest.fixture
def with_scorer(trained):
  """The session's model with the feature softmax attached, detached
  after the test: (ready, model, softmax)."""
  _, ready, result = trained
  softmax = baselines.FeatureSoftmax(ready.matrices["train"],
                                     ready.data.user_features)
  result.model.attach_new_user_scorer(
      softmax.layer(name=NEW_USER_SCORER))
  yield ready, result.model, softmax
  result.model.attach_new_user_scorer(None)


def test_compact_exports_retrieve_by_features_only_without_history(
    with_scorer, serving_export, tmp_path):
  ready, model, softmax = with_scorer
  data, train = ready.data, ready.split.train
  paths = saved_models.export_models(
      model, data.user_ids, data.item_ids, data.user[train], data.item[train],
      str(tmp_path), top_k=10, user_columns=list(data.user_features.columns),
      index="compact")
  serve = tf.saved_model.load(paths["recommend"]).signatures
  by_tower = serving_export[2]["recommend"].signatures
  user, liked_item = 1, ready.matrices["train"][1].indices[0]
  # Row 0 likes nothing (the softmax retrieves), row 1 one item (the tower).
  request = dict(
      {name: tf.repeat(value, 2) for name, value in
       raw_rows(data.user_features, np.array([user])).items()},
      liked_item_ids=tf.constant([["", ""],
                                  [data.item_ids[liked_item - 1], ""]]),
      k=tf.constant([5, 5], tf.int32))
  out = serve["recommend_for_features"](**request)
  tower_out = by_tower["recommend_for_features"](**request)
  np.testing.assert_array_equal(out["item_ids"][1], tower_out["item_ids"][1])
  # Row 0 in process: the softmax's best 100, re-ranked by the ratings
  # predicted for the tower's query.
  scores = softmax.scores(np.array([user]))[0]
  scores[0] = -np.inf
  candidates = np.argsort(-scores)[:min(100, data.num_items)]
  query = model.new_user_embeddings(
      model.user_feature_rows(tf.constant([user])), tf.zeros([1, 1], tf.int32))
  ratings = model.predict_rating(
      tf.repeat(query, len(candidates), axis=0),
      model.item_embeddings(tf.constant(candidates, tf.int32))).numpy()
  best = candidates[np.argsort(-ratings)[:5]]
  assert (out["item_ids"].numpy()[0].astype(str).tolist() ==
          data.item_ids[best - 1].tolist())
  # Users with history, and unknown ones (popularity), are served as before.
  users = tf.constant([data.user_ids[0], "unknown-user"])
  k = tf.constant([5, 5], tf.int32)
  np.testing.assert_array_equal(
      serve["serving_default"](user_id=users, k=k)["item_ids"],
      by_tower["serving_default"](user_id=users, k=k)["item_ids"])


def test_the_tower_serves_when_told_or_when_no_feature_forms_groups(trained):
  config, ready, result = trained
  tower = dataclasses.replace(config, model=dataclasses.replace(
      config.model, new_users="tower"))
  assert new_users.choose_scorer(tower, ready, result.model).scorer == "tower"
  assert result.model.new_user_scorer is None
  no_features = dataclasses.replace(ready, data=dataclasses.replace(
      ready.data, user_features=dataclasses.replace(
          ready.data.user_features, columns={}, kinds={})))
  model = training.build_model(config, no_features.data,
                               no_features.examples("train"))
  choice = new_users.choose_scorer(config, no_features, model)
  assert choice.scorer == "tower" and "no user feature" in choice.reason
  assert model.new_user_scorer is None


def test_features_serve_when_the_data_allows(trained):
  config, ready, result = trained
  try:
    choice = new_users.choose_scorer(config, ready, result.model)
    assert choice.scorer == "features"
    assert isinstance(result.model.new_user_scorer, GroupSoftmax)
  finally:
    result.model.attach_new_user_scorer(None)
