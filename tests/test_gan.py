"""The GANs: losses; for every trainer (interaction GAN, user and item
generators) distribution, checkpoints and the divergence guard; quality."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from helpers import gan_worker

from tfgan_rec import baselines, evaluate
from tfgan_rec.config import GANConfig
from tfgan_rec.data.features import FeatureTable
from tfgan_rec.gan import losses, loop
from tfgan_rec.gan import trainer as gan_trainer

WORKER = os.path.join(os.path.dirname(__file__), "helpers", "gan_worker.py")


@pytest.fixture(scope="module")
def gan_data(prepared):
  _, ready = prepared
  data, fit = ready.data, ready.split.fit
  return gan_trainer.GANData.from_rows(data.user[fit], data.item[fit],
                                       data.num_users, data.num_items,
                                       data.user_features,
                                       data.timestamp[fit])


weights = gan_worker.weights


def test_gan_loss_by_hand():
  real, fake = tf.constant([2.0]), tf.constant([-1.0])
  sigmoid = lambda x: 1 / (1 + np.exp(-x))
  loss = losses.gan_loss(real, fake, "modified", generator_terms=0.5,
                         discriminator_terms=0.25)
  assert float(loss.discriminator_loss[0]) == pytest.approx(
      -np.log(sigmoid(2.0)) - np.log(1 - sigmoid(-1.0)) + 0.25, rel=1e-5)
  # Non-saturating (TF-GAN's "modified"): -log D(fake), not log(1 - D(fake)).
  assert float(loss.generator_loss[0]) == pytest.approx(
      -np.log(sigmoid(-1.0)) + 0.5, rel=1e-5)
  wasserstein = losses.gan_loss(real, fake, "wasserstein")
  assert [float(x[0]) for x in wasserstein] == [1.0, -3.0]
  with pytest.raises(ValueError, match="unknown GAN loss"):
    losses.gan_loss(real, fake, "minimax")


def test_zero_reconstruction_only_counts_negatives():
  generated = tf.constant([[0.5, 1.0, 0.2]])
  negatives = tf.constant([[True, False, True]])
  value = losses.zero_reconstruction(generated, negatives).numpy()[0]
  assert value == pytest.approx((0.25 + 0.04) / 2)


def test_next_items_target_splits_each_history_in_time():
  """With --gan-target next the condition holds only the `context` items
  before the cut and the real sample only the `horizon` items after it, in
  time order (not item order); users with one item are never drawn."""
  data = gan_trainer.GANData.from_rows(
      np.array([1, 1, 1, 1, 1, 2]), np.array([5, 4, 3, 2, 1, 3]), 2, 5,
      FeatureTable(), timestamp=np.array([0.0, 1, 2, 3, 4, 0]))
  trainer = gan_trainer.GANTrainer(
      GANConfig(target="next", context=2, horizon=2, batch_size=2), data)
  assert trainer.train_users.numpy().tolist() == [1]
  # cut = 1 + floor(0.6 * 4) = 3: history 5, 4, 3 | 2, 1 to come.
  batch = {"user": tf.constant([1]), "cut": tf.constant([0.6])}
  real, condition = trainer._real_and_condition(batch)
  assert np.flatnonzero(condition["history"][0]).tolist() == [3, 4]
  assert np.flatnonzero(real[0]).tolist() == [1, 2]
  latest = trainer._history(trainer.seen_values, trainer.seen_splits,
                            tf.constant([1, 2]))
  assert [np.flatnonzero(row).tolist() for row in latest] == [[1, 2], [3]]


def test_softmax_ranking_by_hand():
  logits = tf.constant([[0.0, 1.4, -1.4, 30.0]])
  real = tf.constant([[0.0, 1.0, 0.0, 1.0]])
  # Item 3 is in the condition: it neither competes nor counts.
  catalogue = tf.constant([[1.0, 1.0, 1.0, 0.0]])
  competing = np.array([0.0, 1.4, -1.4])
  expected = -(competing[1] - np.log(np.exp(competing).sum()))
  value = losses.softmax_ranking(logits, real, catalogue).numpy()[0]
  assert value == pytest.approx(expected, rel=1e-5)


def test_gradient_penalty_is_zero_for_unit_slope_critic():
  critic = lambda x, condition, training=None: (
      tf.reduce_sum(x, -1) / np.sqrt(2.0))
  penalty = losses.wasserstein_gradient_penalty(
      critic, tf.ones([3, 2]), tf.zeros([3, 2]), None, tf.fill([3, 1], 0.5))
  np.testing.assert_allclose(penalty.numpy(), 0.0, atol=1e-6)


@pytest.fixture(scope="module")
def small_data():
  return gan_worker.small_data()


KINDS = sorted(gan_worker.TRAINERS)


def test_wasserstein_loss_runs(small_data):
  metrics = gan_worker.gan(small_data, steps=4, loss="wasserstein").train()
  assert all(np.isfinite(v) for v in metrics.values())


@pytest.mark.parametrize("kind", KINDS)
def test_train_step_traced_once(small_data, kind):
  trainer = gan_worker.TRAINERS[kind](small_data, steps=3)
  metrics = trainer.train()
  assert trainer.trace_count == 1
  assert all(np.isfinite(v) for v in metrics.values())


def test_mirrored_two_devices_match_one(tmp_path):
  out = tmp_path / "w.npz"
  subprocess.run([sys.executable, WORKER, str(out), "mirrored"], check=True,
                 capture_output=True, timeout=300)
  saved = np.load(out)
  for kind in KINDS:
    count = len([k for k in saved.files if k.startswith(f"{kind}_one_")])
    assert count > 0, kind
    for i in range(count):
      np.testing.assert_allclose(saved[f"{kind}_one_{i}"],
                                 saved[f"{kind}_two_{i}"], rtol=1e-4,
                                 atol=1e-5, err_msg=kind)


def _free_port():
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def test_two_workers_end_with_identical_weights(tmp_path):
  workers = [f"127.0.0.1:{_free_port()}" for _ in range(2)]
  procs = []
  for index in range(2):
    env = dict(os.environ, TF_CONFIG=json.dumps(
        {"cluster": {"worker": workers},
         "task": {"type": "worker", "index": index}}))
    procs.append(subprocess.Popen(
        [sys.executable, WORKER, str(tmp_path / f"w{index}.npz"),
         "multiworker"], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT))
  for proc in procs:
    output = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0, output[-2000:]
  first, second = np.load(tmp_path / "w0.npz"), np.load(tmp_path / "w1.npz")
  assert {name.split("_")[0] for name in first.files} == set(KINDS)
  for name in first.files:
    np.testing.assert_array_equal(first[name], second[name])


@pytest.mark.parametrize("kind", KINDS)
def test_killed_run_resumes_from_checkpoint(small_data, kind, tmp_path):
  make = gan_worker.TRAINERS[kind]
  uninterrupted = make(small_data, steps=10)
  uninterrupted.train()

  def kill_at_7(step):
    if step == 7:
      raise KeyboardInterrupt

  first = make(small_data, steps=10, checkpoint_dir=str(tmp_path))
  with pytest.raises(KeyboardInterrupt):
    first.train(after_step=kill_at_7)
  resumed = make(small_data, steps=10, checkpoint_dir=str(tmp_path))
  assert resumed.restore() == 5
  resumed.train()
  assert int(resumed.step.numpy()) == 10
  for a, b in zip(weights(uninterrupted), weights(resumed)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_divergence_guard_restores_last_good_checkpoint(small_data, kind,
                                                        tmp_path):
  trainer = gan_worker.TRAINERS[kind](small_data, steps=10,
                                      checkpoint_dir=str(tmp_path))

  def poison(step):
    if step == 7:
      variable = trainer.generator.trainable_variables[-1]
      variable.assign(tf.fill(variable.shape, np.nan))

  with pytest.raises(loop.GANDivergedError,
                     match="diverged at step 8.*restored.*Lower"):
    trainer.train(after_step=poison)
  assert int(trainer.step.numpy()) == 5
  assert all(np.isfinite(w).all() for w in weights(trainer))


def test_generated_vectors_beat_popularity_for_sparse_users(prepared, gan_data):
  _, ready = prepared
  data, train = ready.data, ready.split.train
  # The synthetic data's timestamps are random, so there is no next item to
  # learn: the profile target (CFGAN, with the settings it was measured
  # with) is the one that learns co-occurrence here.
  trainer = gan_trainer.GANTrainer(GANConfig(
      steps=600, batch_size=64, **gan_worker.PROFILE_TARGET), gan_data,
                                   seed=0)
  trainer.train()
  # Conditioned on each user's training history, scored on the test items
  # the GAN never saw.
  history = gan_trainer.GANData.from_rows(data.user[train], data.item[train],
                                          data.num_users, data.num_items,
                                          data.user_features,
                                          data.timestamp[train])
  k = 20
  gan = evaluate.evaluate_retrieval(
      lambda users: trainer.generate(users, history=history),
      ready.matrices["train"], ready.matrices["test"], k, ready.user_slices)
  popular = evaluate.evaluate_retrieval(
      baselines.MostPopular(ready.matrices["train"]).scores,
      ready.matrices["train"], ready.matrices["test"], k, ready.user_slices)
  assert gan["sparse"][f"recall@{k}"] > 1.2 * popular["sparse"][f"recall@{k}"]
