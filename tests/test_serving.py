"""The exported models as TF Serving would call them: every signature through
`tf.saved_model.load` and `saved_model_cli run`, bad requests, warmup."""
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfgan_rec import saved_models
from tfgan_rec.recommender import training


@pytest.fixture(scope="module")
def exported(serving_export):
  return serving_export


def item_index(ready):
  return {item: i + 1 for i, item in enumerate(ready.data.item_ids)}


def seen_items(ready, users):
  return {u: {ready.data.item_ids[i - 1] for i in ready.matrices["train"][u].indices}
          for u in users}


def test_two_stage_recommend_per_row_k_and_exclusion(exported):
  ready, _, loaded = exported
  serve = loaded["recommend"].signatures["serving_default"]
  users = np.array([1, 2, 3])
  out = serve(user_id=tf.constant(ready.data.user_ids[users - 1].astype(str)),
              k=tf.constant([5, 3, 1], tf.int32))
  ids = out["item_ids"].numpy().astype(str)
  assert ids.shape == (3, 5)
  assert (ids[1, 3:] == "").all() and (ids[2, 1:] == "").all()
  assert (ids[0] != "").all()
  seen = seen_items(ready, users)
  for row, user in enumerate(users):
    assert not seen[user] & set(ids[row][ids[row] != ""])
  scores = out["scores"].numpy()[0]
  assert np.all(np.diff(scores) <= 1e-6)  # re-ranked by predicted rating


def test_recommend_matches_ranking_model_scores(exported):
  ready, _, loaded = exported
  user = ready.data.user_ids[0]
  out = loaded["recommend"].signatures["serving_default"](
      user_id=tf.constant([user]), k=tf.constant([3], tf.int32))
  items = out["item_ids"].numpy()[0]
  ranked = loaded["ranking"].signatures["serving_default"](
      user_id=tf.constant([user] * 3), item_id=tf.constant(items))
  np.testing.assert_allclose(ranked["score"].numpy(), out["scores"].numpy()[0],
                             rtol=1e-4, atol=1e-4)


def test_unknown_user_gets_popular_candidates(exported):
  ready, _, loaded = exported
  out = loaded["recommend"].signatures["serving_default"](
      user_id=tf.constant(["stranger"]), k=tf.constant([10], tf.int32))
  counts = np.asarray(ready.matrices["train"].sum(axis=0)).ravel()[1:]
  # Items tied with the 100th most popular may be retrieved in its place.
  popular = set(ready.data.item_ids[counts >= np.sort(counts)[-100]])
  assert set(out["item_ids"].numpy()[0].astype(str)) <= popular


def test_recommend_for_features_excludes_liked_items(exported):
  ready, _, loaded = exported
  serve = loaded["recommend"].signatures["recommend_for_features"]
  names = list(ready.data.user_features.columns)
  assert names == ["age", "gender", "occupation"]
  liked = ready.data.item_ids[:3].astype(str)
  out = serve(age=tf.constant(["31", ""]),
              gender=tf.constant(["F", ""]),
              occupation=tf.constant(["student", "astronaut"]),
              liked_item_ids=tf.constant([liked, [liked[0], "", ""]]),
              k=tf.constant([10, 10], tf.int32))
  ids = out["item_ids"].numpy().astype(str)
  assert ids.shape == (2, 10) and (ids != "").all()
  assert not set(liked) & set(ids[0])
  assert liked[0] not in ids[1]
  # Features and liked items change the answer.
  other = serve(age=tf.constant(["70"]), gender=tf.constant(["M"]),
                occupation=tf.constant(["doctor"]),
                liked_item_ids=tf.constant([[""]]),
                k=tf.constant([10], tf.int32))
  assert set(other["item_ids"].numpy()[0].astype(str)) != set(ids[0])


def test_recommend_for_features_matches_the_model_in_process(trained,
                                                           exported):
  _, ready, result = trained
  _, _, loaded = exported
  model, data, user = result.model, ready.data, 1
  raw = {name: tf.constant([column[user]])
         for name, column in data.user_features.columns.items()}
  liked = ready.matrices["train"][user].indices[:5].astype(np.int32)
  nobody, history = tf.zeros([1], tf.int32), tf.constant([liked])
  # The request's raw strings encode as the model's own table row does.
  query = model.query_tower(nobody, raw, history)
  stored = {name: tf.gather(table, [user])
            for name, table in model.user_features.items()}
  np.testing.assert_allclose(
      query.numpy(), model.query_tower(nobody, stored, history,
                                       preprocessed=True).numpy(),
      rtol=1e-6, atol=1e-6)
  out = loaded["recommend"].signatures["recommend_for_features"](
      **raw, liked_item_ids=tf.constant([data.item_ids[liked - 1].astype(str)]),
      k=tf.constant([5], tf.int32))
  # The same two stages in process: the best 100 by the query (neither
  # padding nor liked items), re-ranked by predicted rating.
  scores = (query.numpy() @ training.item_matrix(model).T)[0]
  scores[[0, *liked]] = -np.inf
  candidates = np.argsort(-scores)[:min(100, data.num_items)]
  ratings = model.predict_rating(
      tf.repeat(query, len(candidates), axis=0),
      model.item_embeddings(tf.constant(candidates, tf.int32))).numpy()
  best = np.argsort(-ratings)[:5]
  assert (out["item_ids"].numpy()[0].astype(str).tolist() ==
          data.item_ids[candidates[best] - 1].tolist())
  np.testing.assert_allclose(out["scores"].numpy()[0], ratings[best],
                             rtol=1e-4, atol=1e-4)


def test_group_strategies_and_exclusion(exported):
  ready, _, loaded = exported
  serve = loaded["recommend"].signatures["recommend_group"]
  members = ready.data.user_ids[:3].astype(str)
  rows = np.array([members] * 3)
  out = serve(member_ids=tf.constant(rows),
              strategy=tf.constant(["least_misery", "average", "most_pleasure"]),
              k=tf.constant([5, 5, 5], tf.int32))
  ids = out["item_ids"].numpy().astype(str)
  seen = set().union(*seen_items(ready, [1, 2, 3]).values())
  assert not seen & set(ids.ravel())
  top = out["scores"].numpy()[:, 0]
  assert top[0] <= top[1] + 1e-5 <= top[2] + 2e-5  # min <= mean <= max
  # A one-member group is that member's own two-stage list.
  single = serve(member_ids=tf.constant([[members[0], ""]]),
                 strategy=tf.constant(["average"]), k=tf.constant([5], tf.int32))
  own = loaded["recommend"].signatures["serving_default"](
      user_id=tf.constant([members[0]]), k=tf.constant([5], tf.int32))
  assert set(single["item_ids"].numpy()[0]) == set(own["item_ids"].numpy()[0])


@pytest.mark.parametrize("call, message", [
    (lambda s: s["serving_default"](user_id=tf.constant([], tf.string),
                                    k=tf.constant([], tf.int32)), "is empty"),
    (lambda s: s["serving_default"](user_id=tf.constant(["1"]),
                                    k=tf.constant([0], tf.int32)),
     "k must be between 1 and"),
    (lambda s: s["serving_default"](user_id=tf.constant(["1"]),
                                    k=tf.constant([999], tf.int32)),
     "k must be between 1 and"),
    (lambda s: s["serving_default"](user_id=tf.constant(["1", "2"]),
                                    k=tf.constant([3], tf.int32)),
     "one k per user_id"),
    (lambda s: s["recommend_group"](member_ids=tf.constant([["1"]]),
                                    strategy=tf.constant(["dictator"]),
                                    k=tf.constant([3], tf.int32)),
     "strategy must be one of average, least_misery, most_pleasure"),
    (lambda s: s["recommend_group"](member_ids=tf.constant([["", ""]]),
                                    strategy=tf.constant(["average"]),
                                    k=tf.constant([3], tf.int32)),
     "at least one member"),
    (lambda s: s["recommend_for_features"](
        age=tf.constant(["old"]), gender=tf.constant(["F"]),
        occupation=tf.constant([""]), liked_item_ids=tf.constant([[""]]),
        k=tf.constant([3], tf.int32)), "age must be a number"),
])
def test_bad_requests_fail_clearly(exported, call, message):
  _, _, loaded = exported
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):
    call(loaded["recommend"].signatures)


def test_wrong_dtype_or_shape_is_rejected(exported):
  _, _, loaded = exported
  serve = loaded["recommend"].signatures["serving_default"]
  with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
    serve(user_id=tf.constant([1, 2]), k=tf.constant([3, 3], tf.int32))
  with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
    serve(user_id=tf.constant([["1"]]), k=tf.constant([3], tf.int32))
  ranking = loaded["ranking"].signatures["serving_default"]
  with pytest.raises(tf.errors.InvalidArgumentError, match="same length"):
    ranking(user_id=tf.constant(["1", "2"]), item_id=tf.constant(["x"]))


def test_warmup_records_parse_and_replay(exported):
  from tensorflow_serving.apis import prediction_log_pb2
  _, paths, loaded = exported
  for name, path in paths.items():
    records = list(tf.data.TFRecordDataset(
        os.path.join(path, saved_models.WARMUP_FILE)).as_numpy_iterator())
    signatures = set()
    for record in records:
      log_record = prediction_log_pb2.PredictionLog.FromString(record)
      request = log_record.predict_log.request
      assert request.model_spec.name == name
      inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
      signature = request.model_spec.signature_name
      outputs = loaded[name].signatures[signature](
          **{k: tf.constant(v) for k, v in inputs.items()})
      assert all(np.size(v) for v in outputs.values())
      signatures.add(signature)
    assert signatures == set(loaded[name].signatures)


def test_saved_model_cli_runs_every_signature(exported):
  _, paths, _ = exported
  cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
  calls = [
      ("retrieval", "serving_default", "user_id=[b'u1']"),
      ("ranking", "serving_default",
       "user_id=[b'u1'];item_id=[b'i1']"),
      ("recommend", "serving_default",
       "user_id=[b'u1'];k=[3]"),
      ("recommend", "recommend_for_features",
       "age=[b'30'];gender=[b'F'];"
       "occupation=[b'student'];liked_item_ids=[[b'i1']];"
       "k=[3]"),
      ("recommend", "recommend_group",
       "member_ids=[[b'u1',b'u2']];strategy=[b'average'];"
       "k=[3]"),
  ]
  for model, signature, inputs in calls:
    result = subprocess.run(
        [cli, "run", "--dir", paths[model], "--tag_set", "serve",
         "--signature_def", signature, "--input_exprs", inputs],
        capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-1500:]
    assert "Result for output key" in result.stdout
