"""Exported SavedModels load with TF's own loader and keep the contract."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tfgan_rec import saved_models


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
  config, ready, result = trained
  data, train = ready.data, ready.split.train
  export_dir = str(tmp_path_factory.mktemp("export"))
  paths = saved_models.export_models(result.model, data.user_ids, data.item_ids,
                                   data.user[train], data.item[train],
                                   export_dir, top_k=10,
                                   user_columns=list(
                                       data.user_features.columns))
  return ready, result, export_dir, paths


def test_layout_is_versioned_for_tf_serving(exported):
  _, _, export_dir, paths = exported
  assert paths["retrieval"] == os.path.join(export_dir, "retrieval", "1")
  for name in saved_models.MODEL_NAMES:
    assert os.listdir(os.path.join(export_dir, name)) == ["1"]
    assert os.path.isfile(os.path.join(export_dir, name, "1", "saved_model.pb"))


def test_retrieval_excludes_training_items_and_matches_model(exported):
  ready, result, _, paths = exported
  data = ready.data
  serve = tf.saved_model.load(paths["retrieval"]).signatures["serving_default"]
  users = np.array([1, 2, 3])
  out = serve(user_id=tf.constant(data.user_ids[users - 1].astype(str)))
  assert out["item_ids"].dtype == tf.string and out["item_ids"].shape == (3, 10)
  assert out["scores"].dtype == tf.float32
  item_index = {item: i + 1 for i, item in enumerate(data.item_ids)}
  for row, user in enumerate(users):
    recommended = [item_index[i.decode()] for i in out["item_ids"][row].numpy()]
    seen = set(ready.matrices["train"][user].indices)
    assert not seen & set(recommended)
    scores = out["scores"][row].numpy()
    assert np.all(np.diff(scores) <= 1e-6)
  # The exported scores are the in-process model's scores.
  from tfgan_rec.recommender import training
  in_process = training.score_all_items(result.model, users[:1])[0]
  first = [item_index[i.decode()] for i in out["item_ids"][0].numpy()]
  np.testing.assert_allclose(out["scores"][0].numpy(), in_process[first],
                             rtol=1e-4, atol=1e-5)


def test_unknown_user_gets_popular_items(exported):
  ready, _, _, paths = exported
  serve = tf.saved_model.load(paths["retrieval"]).signatures["serving_default"]
  out = serve(user_id=tf.constant(["no-such-user"]))
  counts = np.asarray(ready.matrices["train"].sum(axis=0)).ravel()
  most_popular = set(ready.data.item_ids[np.argsort(-counts[1:])[:10]])
  got = {i.decode() for i in out["item_ids"][0].numpy()}
  assert len(got & most_popular) >= 8  # ties at the cut-off may differ


def test_ranking_scores_pairs_and_unknown_ids(exported):
  ready, result, _, paths = exported
  data = ready.data
  serve = tf.saved_model.load(paths["ranking"]).signatures["serving_default"]
  out = serve(user_id=tf.constant([data.user_ids[0], "ghost"]),
              item_id=tf.constant([data.item_ids[0], "ghost-item"]))
  assert out["score"].shape == (2,)
  assert np.all(np.isfinite(out["score"].numpy()))
  from tfgan_rec.recommender import training
  expected = training.predict_ratings(result.model, np.array([1]), np.array([1]))
  assert out["score"].numpy()[0] == pytest.approx(float(expected[0]), abs=1e-4)


def test_next_export_is_a_new_version_and_old_ones_pruned(exported):
  _, result, export_dir, _ = exported
  module = tf.Module()
  module.v = tf.Variable(1.0)
  sig = tf.function(lambda: {"x": module.v}, input_signature=[])
  for expected in (2, 3):
    version = saved_models.next_version(export_dir)
    assert version == expected
    saved_models.save_version(module, {"serving_default": sig},
                            os.path.join(export_dir, "ranking"), version)
  saved_models.prune(os.path.join(export_dir, "ranking"), keep=2)
  assert saved_models.versions(os.path.join(export_dir, "ranking")) == [2, 3]
  with pytest.raises(FileExistsError):
    saved_models.save_version(module, {"serving_default": sig},
                            os.path.join(export_dir, "ranking"), 3)


def test_failed_export_leaves_no_version(tmp_path, monkeypatch):
  module = tf.Module()
  module.v = tf.Variable(1.0)
  sig = tf.function(lambda: {"x": module.v}, input_signature=[])

  def half_written(obj, path, signatures=None):
    os.makedirs(os.path.join(path, "variables"))
    open(os.path.join(path, "saved_model.pb"), "w").close()
    raise KeyboardInterrupt("killed mid-write")

  monkeypatch.setattr(tf.saved_model, "save", half_written)
  with pytest.raises(KeyboardInterrupt):
    saved_models.save_version(module, {"serving_default": sig}, str(tmp_path), 1)
  assert os.listdir(tmp_path) == []


_SLOW_EXPORT = """
import sys, time
import tfgan_rec
import tensorflow as tf
from tfgan_rec import saved_models
save = tf.saved_model.save
def save_then_hang(obj, path, signatures=None):
  save(obj, path, signatures=signatures)
  time.sleep(600)
tf.saved_model.save = save_then_hang
module = tf.Module()
module.v = tf.Variable(1.0)
sig = tf.function(lambda: {"x": module.v}, input_signature=[])
saved_models.save_version(module, {"serving_default": sig}, sys.argv[1], 1)
"""


def test_export_killed_halfway_is_never_visible(tmp_path):
  model_dir = tmp_path / "retrieval"
  child = subprocess.Popen([sys.executable, "-c", _SLOW_EXPORT,
                            str(model_dir)])
  try:
    deadline = time.time() + 120
    while not list(model_dir.glob(".tmp-*/saved_model.pb")):
      assert child.poll() is None and time.time() < deadline
      time.sleep(0.2)
  finally:
    child.send_signal(signal.SIGKILL)
    child.wait()
  assert saved_models.versions(str(model_dir)) == []
  assert [p.name for p in model_dir.iterdir()] == [
      f".tmp-1-{child.pid}"]  # hidden from TF Serving: not all digits
  module = tf.Module()
  module.v = tf.Variable(2.0)
  sig = tf.function(lambda: {"x": module.v}, input_signature=[])
  saved_models.save_version(module, {"serving_default": sig}, str(model_dir), 1)
  assert [p.name for p in model_dir.iterdir()] == ["1"]
