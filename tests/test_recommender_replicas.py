"""The recommender under tf.distribute: 2 replicas, and 2 worker processes
under MultiWorkerMirroredStrategy, train the model one device trains, and
only the chief keeps files. Each test trains its one-device reference here
while its subprocesses run."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from helpers import recommender_worker

from tfgan_rec.recommender import replicas

WORKER = os.path.join(os.path.dirname(__file__), "helpers",
                      "recommender_worker.py")
# Measured: at most 2e-7 apart after 16 steps (float sums in another order:
# the replicas' gradients are added, the softmax columns rolled).
TOLERANCE = {"rtol": 1e-5, "atol": 2e-6}


def _start(out, mode, *args, **env):
  return subprocess.Popen([sys.executable, WORKER, str(out), mode, *args],
                          env=dict(os.environ, **env),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _finished(process):
  output = process.communicate(timeout=300)[0].decode()
  assert process.returncode == 0, output[-2000:]


def _free_port():
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def assert_weights_match(saved, name, reference):
  assert len(reference) > 20, name
  for i, weight in enumerate(reference):
    np.testing.assert_allclose(saved[f"{name}_{i}"], weight,
                               err_msg=f"{name} weight {i}", **TOLERANCE)


def test_two_replicas_train_the_one_device_model(tmp_path):
  process = _start(tmp_path / "two.npz", "mirrored")
  reference = recommender_worker.one_device("exact")
  _finished(process)
  # Nothing random in training: the model trained without a strategy, so
  # the shared candidates, the padded last batch and the epochs' order
  # are one device's.
  assert_weights_match(np.load(tmp_path / "two.npz"), "exact", reference)


def test_two_workers_train_the_one_device_model_and_only_the_chief_writes(
    tmp_path):
  workers = [f"127.0.0.1:{_free_port()}" for _ in range(2)]
  processes = []
  for index in range(2):
    (tmp_path / f"tmp{index}").mkdir()
    processes.append(_start(
        tmp_path / f"w{index}.npz", "multiworker", str(tmp_path / "run"),
        TMPDIR=str(tmp_path / f"tmp{index}"), TF_CONFIG=json.dumps(
            {"cluster": {"worker": workers},
             "task": {"type": "worker", "index": index}})))
  reference = recommender_worker.one_device("random")
  for process in processes:
    _finished(process)
  chief, other = (np.load(tmp_path / f"w{i}.npz") for i in range(2))
  assert chief.files == other.files
  for name in chief.files:
    np.testing.assert_array_equal(chief[name], other[name])
  # Every random draw on (dropouts, sampled negatives, graph edges): the
  # model one device trains under the same stateless draws.
  assert_weights_match(chief, "random", reference)
  assert sorted(os.listdir(tmp_path / "run")) == [
      "config.yaml", "metrics.json", "model", "report.md"]
  # The other worker wrote into a temporary folder, deleted at the end.
  assert not os.listdir(tmp_path / "tmp1")


def test_fit_under_a_strategy_takes_one_epoch_of_known_length():
  strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
  batches = tf.data.Dataset.range(6).batch(2)
  with pytest.raises(ValueError, match="one epoch per call"):
    replicas.global_batches(strategy, batches, {"epochs": 2})
  with pytest.raises(ValueError, match="known length"):
    replicas.global_batches(strategy, batches.filter(lambda b: True), {})
  _, kwargs = replicas.global_batches(strategy, batches, {"epochs": 1})
  assert kwargs == {"epochs": 1, "steps_per_epoch": 3}
