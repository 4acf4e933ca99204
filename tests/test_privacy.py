"""Differential privacy: the accounting against dp-accounting, the noise
calibration, the feature marginals, ghost clipping, the private
discriminator step (clipped per-user gradients, noise once) and the
synthetic data release."""
import dataclasses
import math
import os

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from dp_accounting import dp_event
from dp_accounting.rdp import rdp_privacy_accountant
from helpers import gan_worker

from tfgan_rec import layers, pipeline, privacy, release, synthesize, train
from tfgan_rec.config import DataConfig, GANConfig, PrivacyConfig, RunConfig
from tfgan_rec.data import sources
from tfgan_rec.data.features import FeatureTable
from tfgan_rec.gan import ghost_clipping, losses

PARAMETERS = [(1.1, 0.01, 1000, 1e-5), (0.8, 0.1, 200, 1e-6),
              (4.0, 0.136, 1000, 1e-5)]


@pytest.mark.parametrize("sigma,rate,steps,delta", PARAMETERS)
def test_epsilon_matches_dp_accounting(sigma, rate, steps, delta):
  accountant = rdp_privacy_accountant.RdpAccountant()
  accountant.compose(dp_event.PoissonSampledDpEvent(
      rate, dp_event.GaussianDpEvent(sigma)), steps)
  assert privacy.epsilon_spent(sigma, rate, steps, delta) == pytest.approx(
      accountant.get_epsilon(delta), rel=1e-12)


def test_several_updates_per_sample_count_as_one_gaussian_of_less_noise():
  accountant = rdp_privacy_accountant.RdpAccountant()
  accountant.compose(dp_event.PoissonSampledDpEvent(
      0.05, dp_event.GaussianDpEvent(2.0 / math.sqrt(3))), 500)
  assert privacy.epsilon_spent(2.0, 0.05, 500, 1e-5, 3) == pytest.approx(
      accountant.get_epsilon(1e-5), rel=1e-9)
  assert privacy.epsilon_spent(2.0, 0.05, 500, 1e-5, 3) > (
      privacy.epsilon_spent(2.0, 0.05, 500, 1e-5))


@pytest.mark.parametrize("target,rate,steps", [(1.0, 0.136, 1000),
                                               (3.0, 0.01, 5000),
                                               (10.0, 0.25, 300)])
def test_calibrated_noise_reaches_the_target_within_one_percent(target, rate,
                                                                steps):
  sigma = privacy.calibrate_noise(target, rate, steps, 1e-5)
  spent = privacy.epsilon_spent(sigma, rate, steps, 1e-5)
  assert 0.99 * target <= spent <= target
  # Less noise would overspend.
  assert privacy.epsilon_spent(0.97 * sigma, rate, steps, 1e-5) > spent


def test_plan_splits_the_budget_and_bounds_the_cut_of_large_samples():
  config = PrivacyConfig(epsilon=3.0, delta=1e-5, feature_share=0.2)
  plan = privacy.plan(config, users=943, expected_batch=128, steps=1000,
                      updates_per_step=1, replicas=2)
  assert plan.feature_epsilon == pytest.approx(0.6)
  assert 0.99 * 2.4 <= plan.model_epsilon <= 2.4
  assert plan.epsilon == pytest.approx(plan.model_epsilon + 0.6)
  assert plan.delta <= 1e-5 and plan.capacity % 2 == 0
  assert 128 < plan.capacity < 943
  overflow = 1000 * (1 + math.exp(plan.model_epsilon)) * (
      privacy.overflow_probability(plan.capacity, 943, 128 / 943))
  assert overflow <= 0.01 * plan.model_delta
  # The model: DP-SGD and the item popularity's Gaussian, one account.
  accountant = rdp_privacy_accountant.RdpAccountant()
  accountant.compose(dp_event.PoissonSampledDpEvent(
      128 / 943, dp_event.GaussianDpEvent(plan.noise_multiplier)), 1000)
  accountant.compose(dp_event.GaussianDpEvent(plan.popularity_noise))
  assert plan.model_epsilon == pytest.approx(
      accountant.get_epsilon(0.99 * 0.8e-5), rel=1e-9)
  alone = privacy.epsilon_spent(plan.popularity_noise, 1.0, 1,
                                0.99 * 0.8e-5)
  share = privacy.POPULARITY_SHARE * 2.4
  assert 0.99 * share <= alone <= share
  assert plan.length_epsilon == pytest.approx(privacy.LENGTH_SHARE * 0.6)


def test_marginals_hide_values_few_users_hold():
  column = np.array([""] + ["a"] * 500 + ["b"] * 300 + ["rare"], object)
  table = FeatureTable({"x": column}, {"x": "categorical"})
  users = np.arange(1, len(column))
  exact = privacy.noisy_marginals(table, users, math.inf, 1.0,
                                  np.random.default_rng(0))
  assert exact.counts == {"x": {"a": 500.0, "b": 300.0, "rare": 1.0}}
  rng = np.random.default_rng(0)
  released = [privacy.noisy_marginals(table, users, 1.0, 0.05, rng).counts
              for _ in range(2000)]
  assert all({"a", "b"} <= set(r["x"]) for r in released)
  # A value one user holds is released with probability delta exactly.
  rare = np.mean(["rare" in r["x"] for r in released])
  assert 0.035 < rare < 0.065
  noisy_a = np.array([r["x"]["a"] for r in released])
  assert abs(noisy_a.mean() - 500) < 0.5 and noisy_a.std() > 0.5
  sample = exact.sample(4000, np.random.default_rng(1))
  share = (sample.columns["x"][1:] == "a").mean()
  assert share == pytest.approx(500 / 801, abs=0.03)


def test_lengths_are_exact_without_noise_and_laplace_with_it():
  lengths = np.array([1, 5, 5, 5, 7, 40, 41, 300])
  exact = privacy.noisy_lengths(lengths, 500, math.inf,
                                np.random.default_rng(0))
  first, last = exact.bounds()
  assert first[0] == 1 and last[-1] == 500 and (first[1:] == last[:-1] + 1
                                                ).all()
  counts = np.asarray(exact.counts)
  assert counts.sum() == len(lengths)
  assert counts[np.searchsorted(first, 5, side="right") - 1] == 3
  drawn = exact.sample(2000, np.random.default_rng(1))
  bins = np.searchsorted(first, drawn, side="right") - 1
  assert set(bins) == set(np.flatnonzero(counts))
  # Laplace(1 / eps) on each bin before the post-processing: a bin held
  # by 100 users keeps 100 +- 1 / eps on average.
  many = np.full(100, 5)
  rng = np.random.default_rng(2)
  fives = [privacy.noisy_lengths(many, 500, 0.5, rng).counts[4]
           for _ in range(2000)]
  assert np.mean(fives) == pytest.approx(100, abs=0.2)
  assert np.std(fives) == pytest.approx(math.sqrt(2) / 0.5, rel=0.1)


def test_popularity_has_sensitivity_one_and_the_prior_sums_to_one():
  items = np.array([1, 2, 3, 1, 2, 1, 4], np.int32)
  splits = np.array([0, 0, 3, 5, 7])  # user 0 (unknown) has none
  exact = privacy.noisy_popularity(items, splits, np.array([1, 2, 3]), 5,
                                   0.0, np.random.default_rng(0))
  without = privacy.noisy_popularity(items, splits, np.array([1, 2]), 5,
                                     0.0, np.random.default_rng(0))
  # Removing user 3 (items 1 and 4) moves the vector by exactly 1 (L2).
  assert np.linalg.norm(exact - without) == pytest.approx(1.0)
  np.testing.assert_allclose(exact[1], 1 / math.sqrt(3) + 1 / math.sqrt(2)
                             + 1 / math.sqrt(2))
  # A repeated interaction (CSV logs may hold them) counts once: user 3
  # taking item 4 twice still moves the vector by exactly 1.
  repeated = privacy.noisy_popularity(
      np.append(items, 4), np.append(splits[:-1], splits[-1] + 1),
      np.array([1, 2, 3]), 5, 0.0, np.random.default_rng(0))
  np.testing.assert_allclose(repeated, exact)
  noisy = np.stack([privacy.noisy_popularity(
      items, splits, np.array([1, 2, 3]), 5, 2.0, np.random.default_rng(i))
                    for i in range(2000)])
  assert (noisy - exact).std() == pytest.approx(2.0, rel=0.05)
  logits = privacy.prior_logits(noisy[0], 2.0)
  assert logits[0] == 0 and np.exp(logits[1:]).sum() == pytest.approx(1.0)
  # Items within twice the noise share the mean of their values.
  tail = noisy[0][1:] <= 4.0
  if tail.sum() > 1:
    assert np.ptp(logits[1:][tail]) == pytest.approx(0.0, abs=1e-12)


def test_rows_are_drawn_without_replacement_with_a_softmax_gradient():
  logits = tf.constant(np.log([[1e-30, 4, 3, 2, 1, 1, 1, 1, 1]]), tf.float32)
  draws = 4000
  lengths = tf.fill([draws], 3)
  gumbel = -tf.math.log(-tf.math.log(tf.random.stateless_uniform(
      [draws, 9], [0, 1], 1e-20, 1.0)))
  repeated = tf.repeat(logits, draws, axis=0)
  with tf.GradientTape() as tape:
    tape.watch(repeated)
    rows = release.private.draw_rows(repeated, lengths, gumbel)
    loss = tf.reduce_sum(rows * tf.range(9, dtype=tf.float32))
  np.testing.assert_array_equal(tf.reduce_sum(rows, -1).numpy(), 3.0)
  assert not rows.numpy()[:, 0].any()  # the padding item
  # Inclusion frequencies against release.generated_probabilities'
  # approximation (Rosen): 1 - exp(-t w), t such that they sum to 3.
  weights = np.exp(logits.numpy()[0, 1:])
  low, high = 1e-6, 1e3
  for _ in range(200):
    t = math.sqrt(low * high)
    low, high = (t, high) if (-np.expm1(-t * weights)).sum() < 3 else (
        low, t)
  np.testing.assert_allclose(rows.numpy().mean(0)[1:],
                             -np.expm1(-t * weights), atol=0.03)
  # Straight through: the gradient of 3 * softmax(logits).
  with tf.GradientTape() as soft_tape:
    soft_tape.watch(repeated)
    soft = tf.reduce_sum(3.0 * tf.nn.softmax(repeated) *
                         tf.range(9, dtype=tf.float32))
  np.testing.assert_allclose(tape.gradient(loss, repeated).numpy(),
                             soft_tape.gradient(soft, repeated).numpy(),
                             rtol=1e-5, atol=1e-7)


@pytest.fixture(scope="module")
def small_data():
  return gan_worker.small_data()


def test_private_step_clips_each_user_and_adds_noise_once(small_data):
  trainer = gan_worker.release(small_data)
  batch = trainer.global_batch(tf.constant(0, tf.int64))
  real = release.private.dense_rows(trainer.seen_values, trainer.seen_splits,
                                    batch["user"], trainer.width)
  rows = int(real.shape[0])
  condition = release.private.condition(
      {k: tf.gather(v, batch["user"]) for k, v in
       trainer.real_features.items()}, rows)
  fake = trainer.generator(condition, batch["noise"][:, 0])
  included = batch["included"]
  plan = trainer.plan
  trainer.plan = dataclasses.replace(plan, noise_multiplier=0.0,
                                     clip_norm=0.05)
  grads, _ = trainer.discriminator_gradients(real, fake, condition, included)
  # The same by a loop over users, one tape each.
  expected = [np.zeros(v.shape) for v in
              trainer.discriminator.trainable_variables]
  for i in np.flatnonzero(included.numpy()):
    one = lambda t, i=i: tf.nest.map_structure(lambda x: x[i:i + 1], t)
    with tf.GradientTape() as tape:
      loss = losses.minimax_discriminator_loss(
          trainer.discriminator(one(real), one(condition)),
          trainer.discriminator(one(fake), one(condition)))[0]
    g = tape.gradient(loss, trainer.discriminator.trainable_variables,
                      unconnected_gradients=tf.UnconnectedGradients.ZERO)
    norm = np.sqrt(sum(float(tf.reduce_sum(tf.square(p))) for p in g))
    assert norm > 0.05  # so clipping is exercised
    for total, part in zip(expected, g):
      total += tf.convert_to_tensor(part).numpy() * min(1.0, 0.05 / norm)
  for got, want in zip(grads, expected):
    # Ghost norms and the reweighted pass agree with the loop to float32
    # round-off (measured: relative error <= 1e-6 per tensor).
    np.testing.assert_allclose(got.numpy(), want / plan.expected_batch,
                               rtol=1e-5, atol=1e-8)
  # Nobody sampled: pure noise of standard deviation sigma C / batch.
  trainer.plan = plan
  noise, _ = trainer.discriminator_gradients(real, fake, condition,
                                             tf.zeros_like(included))
  values = np.concatenate([g.numpy().ravel() for g in noise])
  assert values.std() == pytest.approx(
      plan.noise_multiplier * plan.clip_norm / plan.expected_batch, rel=0.05)


class _Mixed(tf.keras.Model):
  """Every layer kind ghost clipping covers, and a Sequential body."""

  def __init__(self):
    super().__init__()
    self.dense = tf.keras.layers.Dense(4, activation="gelu")
    self.ids = tf.keras.layers.Embedding(3, 2)
    self.bags = layers.PooledEmbedding(5, 2)
    self.body = layers.mlp((3,), 1, "body")

  def call(self, rows, ids, bags):
    joint = tf.concat([self.dense(rows), self.ids(ids), self.bags(bags)], -1)
    return tf.squeeze(self.body(joint), -1)


def _mixed_inputs(rng, count):
  bags = rng.integers(0, 5, (count, 3))
  bags[0] = 0  # an empty bag
  return (tf.constant(rng.normal(size=(count, 5)), tf.float32),
          tf.constant(rng.integers(0, 3, count)), tf.constant(bags))


def test_ghost_norms_and_clipped_sum_match_per_example_gradients():
  rng = np.random.default_rng(0)
  model = _Mixed()
  # Two calls per example, as the discriminator's real and fake rows; small
  # vocabularies so that ids repeat within bags and across the calls.
  first, second = _mixed_inputs(rng, 6), _mixed_inputs(rng, 6)
  model(*(t[:1] for t in first))  # built at batch 1: Keras re-infers later
  per_example = lambda a, b: (tf.nn.softplus(model(*a)) +
                              tf.square(model(*b)))
  with ghost_clipping.Recorder(model) as recorder, tf.GradientTape(
      persistent=True) as tape:
    example_losses = per_example(first, second)
  squares = recorder.squared_norms(tape, example_losses).numpy()
  scale = tf.minimum(1.0, 1.1 / tf.sqrt(squares))
  summed = ghost_clipping.clipped_sum(tape, example_losses,
                                      model.trainable_variables, scale)
  assert "call" not in vars(model.dense)  # the layers are restored
  expected = [np.zeros(v.shape) for v in model.trainable_variables]
  for i in range(6):
    with tf.GradientTape() as tape:
      loss = per_example([t[i:i + 1] for t in first],
                         [t[i:i + 1] for t in second])
    grads = [tf.convert_to_tensor(g).numpy() for g in tape.gradient(
        loss, model.trainable_variables)]
    norm = sum(float(np.sum(g ** 2)) for g in grads)
    assert squares[i] == pytest.approx(norm, rel=1e-5)
    for total, g in zip(expected, grads):
      total += g * float(scale[i])
  assert 0 < np.sum(scale.numpy() < 1) < 6  # some clipped, some not
  for got, want in zip(summed, expected):
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-7)


def test_ghost_clipping_refuses_layers_it_cannot_norm():
  model = tf.keras.Sequential([tf.keras.layers.Dense(3),
                               tf.keras.layers.LayerNormalization()])
  rows = tf.ones([2, 4])
  model(rows)
  with ghost_clipping.Recorder(model) as recorder, tf.GradientTape() as tape:
    outputs = tf.reduce_sum(model(rows), -1)
  with pytest.raises(ValueError, match="layer_normalization"):
    recorder.squared_norms(tape, outputs)


def test_release_generator_never_reads_a_history(small_data):
  trainer = gan_worker.release(small_data)
  for model in (trainer.generator, trainer.discriminator):
    assert model.condition.history is None
  names = [v.name for v in trainer.generator.trainable_variables]
  assert len(names) == len(set(names)) and trainer.plan.noise_multiplier > 0
  # The generator's preprocessing is the released features', not the
  # real users'.
  assert trainer.generator.condition.features.preprocessing is (
      trainer.preprocessing)


@pytest.fixture(scope="module")
def release_run(tmp_path_factory):
  """A run folder with a private release generator of a few steps."""
  config = RunConfig(seed=5)
  config.data = DataConfig(dataset="synthetic", synthetic_interactions=3000)
  config.gan = GANConfig(steps=20, batch_size=16, hidden=(32,), noise_dim=8)
  config.privacy = PrivacyConfig(epsilon=4.0, delta=1e-5)
  run_dir = str(tmp_path_factory.mktemp("release_run"))
  split_data = pipeline.prepare(config.data, config.seed)
  statement = pipeline.train_release(config, split_data, run_dir)
  return run_dir, statement


def test_synthesize_writes_what_train_reads(release_run, tmp_path):
  run_dir, statement = release_run
  assert statement["private"] and statement["epsilon"] <= 4.0
  out = tmp_path / "synthetic"
  assert synthesize.main(["--run-dir", run_dir, "--users", "60", "--out",
                          str(out)]) == 0
  written = sorted(os.listdir(out))
  assert written == ["items.csv", "privacy.json", "ratings.csv", "users.csv"]
  ratings = pd.read_csv(out / "ratings.csv", dtype=str)
  assert ratings["user_id"].nunique() == 60
  data = sources.load_interactions(DataConfig(
      ratings=str(out / "ratings.csv"), users=str(out / "users.csv"),
      items=str(out / "items.csv")), 0)
  assert len(data.ratings) == len(ratings)
  assert pd.read_json(out / "privacy.json", typ="series")["epsilon"] == (
      pytest.approx(statement["epsilon"]))
  assert train.main(["--ratings", str(out / "ratings.csv"), "--users",
                     str(out / "users.csv"), "--items",
                     str(out / "items.csv"), "--epochs", "1", "--no-refit",
                     "--no-export", "--run-dir",
                     str(tmp_path / "on_synthetic")]) == 0


def test_generated_probabilities_are_what_synthesize_draws_from(
    release_run):
  # The membership-inference attack reads these probabilities: they must
  # be the distribution the released interactions are drawn from.
  loaded = release.load_release(release_run[0])
  p = release.generated_probabilities(loaded, 300, 11)
  np.testing.assert_array_equal(
      p, release.generated_probabilities(loaded, 300, 11))
  assert p.shape == (300, len(loaded.items) + 1) and not p[:, 0].any()
  drawn = release.synthesize(loaded, 300, 11)["ratings"]
  # Each user draws every item with its probability (a user drawing none
  # gets one item): the count is sum(p) within 4 standard deviations.
  spread = 4 * np.sqrt((p * (1 - p)).sum()) + np.prod(1 - p[:, 1:],
                                                      axis=1).sum()
  assert abs(len(drawn) - p.sum()) < spread


def test_synthesis_in_chunks_gives_each_user_their_length(release_run,
                                                         monkeypatch):
  # 300 users in chunks of 7 (the last one short): every user draws as
  # many items as their released length, and the inclusion probabilities
  # of each user add up to it.
  loaded = release.load_release(release_run[0])
  monkeypatch.setattr(release, "CHUNK", 7)
  _, lengths, _ = release._draw_users(loaded, 300,
                                      np.random.default_rng(11), 11)
  drawn = release.synthesize(loaded, 300, 11)["ratings"]
  per_user = drawn.groupby("user_id").size()
  np.testing.assert_array_equal(
      per_user[[f"s{i + 1}" for i in range(300)]].to_numpy(), lengths)
  p = release.generated_probabilities(loaded, 300, 11)
  np.testing.assert_allclose(p.sum(axis=1), lengths, rtol=1e-6)


def test_synthesize_refuses_to_overwrite_and_needs_a_release(
    release_run, tmp_path, capsys):
  run_dir, _ = release_run
  (tmp_path / "full").mkdir()
  (tmp_path / "full" / "keep.txt").write_text("x")
  assert synthesize.main(["--run-dir", run_dir, "--users", "5", "--out",
                          str(tmp_path / "full")]) == 2
  assert "not empty" in capsys.readouterr().err
  assert synthesize.main(["--run-dir", str(tmp_path), "--users", "5",
                          "--out", str(tmp_path / "new")]) == 2
  assert "--dp-epsilon" in capsys.readouterr().err
  assert (tmp_path / "full" / "keep.txt").read_text() == "x"


def test_release_generator_without_privacy_trains(small_data):
  private = gan_worker.release(small_data)
  trainer = release.private.ReleaseGANTrainer(
      private.config, gan_worker.gan_trainer.GANData.from_rows(
          small_data.user, small_data.item, small_data.num_users,
          small_data.num_items, small_data.user_features),
      FeatureTable(), None, seed=3)
  before = [w.numpy().copy() for w in trainer.discriminator.weights]
  metrics = trainer.train()
  assert all(np.isfinite(v) for v in metrics.values())
  assert trainer.secret_seed == 3  # not private: the public seed
  assert all(not np.allclose(a, b.numpy()) for a, b in
             zip(before, trainer.discriminator.weights))
