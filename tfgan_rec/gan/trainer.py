"""Distributed custom training of the conditional GAN.

One `tf.function` train step runs under `strategy.run`: `d_steps`
discriminator updates, then one generator update, each with its own
optimizer and gradients clipped by global norm after the all-reduce (so N
replicas take the same step as one device). Every random draw (users, noise,
dropout, negatives) is a stateless function of (seed, step), and each
replica takes its own slice of the step's global batch: a run is reproducible,
the same on 1 or N replicas, and resumes exactly from a checkpoint.

The strategy is `MultiWorkerMirroredStrategy` when `TF_CONFIG` names several
workers, else `MirroredStrategy` over the local devices.
"""
import dataclasses
import json
import logging
import os
from typing import Callable, Dict, Optional

import numpy as np
import tensorflow as tf

from tfgan_rec.config import GANConfig
from tfgan_rec.data.features import FeatureTable
from tfgan_rec.gan import losses
from tfgan_rec.gan.models import Discriminator, Generator
from tfgan_rec.layers import FeaturePreprocessing

log = logging.getLogger(__name__)


class GANDivergedError(RuntimeError):
  """Raised when a loss becomes NaN/inf or explodes; the message says which
  checkpoint was restored and what to change."""


def make_strategy(devices=None) -> tf.distribute.Strategy:
  """MultiWorkerMirrored if TF_CONFIG names several workers, else Mirrored."""
  cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
  if len(cluster.get("worker", [])) > 1:
    return tf.distribute.MultiWorkerMirroredStrategy()
  return tf.distribute.MirroredStrategy(devices)


def use_logical_cpus(count: int) -> None:
  """Splits the CPU into `count` logical devices (before TF initialises)."""
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration()] * count)


@dataclasses.dataclass
class GANData:
  """What the GAN trains on: each user's training items and raw features."""
  num_items: int
  seen_items: np.ndarray  # flat item indices, grouped by user
  seen_splits: np.ndarray  # row splits over users 0..num_users
  user_features: FeatureTable  # raw, row i = user i
  train_users: np.ndarray  # users with at least one training interaction

  @classmethod
  def from_rows(cls, user: np.ndarray, item: np.ndarray, num_users: int,
                num_items: int, features: FeatureTable) -> "GANData":
    order = np.lexsort((item, user))
    counts = np.bincount(user, minlength=num_users + 1)
    splits = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return cls(num_items, item[order].astype(np.int32), splits, features,
               np.flatnonzero(counts).astype(np.int32))


def diverged_losses(metrics: Dict[str, float], threshold: float) -> str:
  """The losses in `metrics` that are NaN/inf or beyond `threshold`, as
  "name=value, ..." ("" when none)."""
  return ", ".join(f"{name}={value:.3g}" for name, value in metrics.items()
                   if name.endswith("loss") and (
                       not np.isfinite(value) or abs(value) > threshold))


def dense_rows(values, splits, users, width) -> tf.Tensor:
  """Binary [len(users), width] rows of a ragged (values, splits) table."""
  rows = tf.gather(tf.RaggedTensor.from_row_splits(values, splits), users)
  indices = tf.stack([tf.cast(rows.value_rowids(), tf.int32),
                      rows.flat_values], axis=1)
  return tf.scatter_nd(indices, tf.ones_like(rows.flat_values, tf.float32),
                       tf.stack([tf.shape(users)[0], width]))


class GANTrainer:
  """Trains a `Generator` and `Discriminator` on `GANData`.

  >>> from tfgan_rec.data import encode, synthetic
  >>> data = encode(synthetic.make_synthetic(
  ...     synthetic.SyntheticConfig(num_interactions=2000)))
  >>> gan_data = GANData.from_rows(data.user, data.item, data.num_users,
  ...                              data.num_items, data.user_features)
  >>> trainer = GANTrainer(GANConfig(steps=2, batch_size=8), gan_data)
  >>> sorted(trainer.train())
  ['d_fake', 'd_loss', 'd_real', 'diversity', 'g_loss']
  >>> trainer.generate(np.array([1, 2]), samples=2).shape[0]
  2
  """

  def __init__(self, config: GANConfig, data: GANData, seed: int = 0,
               strategy: Optional[tf.distribute.Strategy] = None,
               checkpoint_dir: Optional[str] = None,
               logdir: Optional[str] = None):
    if config.loss not in losses.LOSSES:
      raise ValueError(f"unknown GAN loss '{config.loss}'; use "
                       f"{' or '.join(losses.LOSSES)}.")
    self.config, self.data, self.seed = config, data, seed
    self.strategy = strategy or make_strategy()
    self.width = data.num_items + 1
    self.seen_values = tf.constant(data.seen_items)
    self.seen_splits = tf.constant(data.seen_splits)
    self.train_users = tf.constant(data.train_users)
    # Raw strings, as constants (fine under any strategy); the generator's
    # and the discriminator's FeatureEncoders share one preprocessing.
    self.features = {name: tf.constant(column, tf.string) for name, column
                     in data.user_features.columns.items()}
    preprocessing = FeaturePreprocessing.adapted(data.user_features)
    with self.strategy.scope():
      tf.keras.utils.set_random_seed(seed)
      self.generator = Generator(data.num_items, preprocessing,
                                 config.noise_dim, config.hidden,
                                 config.feature_dim)
      self.discriminator = Discriminator(data.num_items, preprocessing,
                                         config.hidden, config.feature_dim)
      self.g_optimizer = tf.keras.optimizers.Adam(config.g_learning_rate,
                                                  beta_1=0.5)
      self.d_optimizer = tf.keras.optimizers.Adam(config.d_learning_rate,
                                                  beta_1=0.5)
      self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
      self._build()
    self.checkpoint = tf.train.Checkpoint(
        generator=self.generator, discriminator=self.discriminator,
        g_optimizer=self.g_optimizer, d_optimizer=self.d_optimizer,
        step=self.step)
    self.manager = (tf.train.CheckpointManager(
        self.checkpoint, self._checkpoint_path(checkpoint_dir), max_to_keep=3)
                    if checkpoint_dir else None)
    self.writer = tf.summary.create_file_writer(logdir) if logdir else None
    self._train_step = tf.function(self._distributed_step)
    self.trace_count = 0
    self.last_metrics: Dict[str, float] = {}

  # --- setup -----------------------------------------------------------------

  def _build(self):
    """Creates the variables (models and optimizer slots) at a fixed seed."""
    condition = self._condition(tf.constant([0], tf.int32),
                                tf.zeros([1, self.width]))
    fake = self.generator(condition, tf.zeros([1, self.config.noise_dim]))
    self.discriminator(fake, condition)
    for model, optimizer in ((self.generator, self.g_optimizer),
                             (self.discriminator, self.d_optimizer)):
      optimizer.build(model.trainable_variables)

  def _checkpoint_path(self, directory: str) -> str:
    task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
    if task.get("index", 0) == 0:
      return directory
    # Non-chief workers must save too (it is collective), but elsewhere.
    return os.path.join(directory, f".worker-{task['index']}")

  def restore(self) -> int:
    """Restores the latest checkpoint, if any; returns its step."""
    if self.manager and self.manager.latest_checkpoint:
      self.checkpoint.restore(self.manager.latest_checkpoint)
      log.info("GAN: resumed from %s (step %d)",
               self.manager.latest_checkpoint, int(self.step.numpy()))
    return int(self.step.numpy())

  # --- input -----------------------------------------------------------------

  def _condition(self, users, history):
    """The generator's and discriminator's input: the users' raw features
    and the given history rows."""
    features = {k: tf.gather(v, users) for k, v in self.features.items()}
    return {"features": features, "history": history}

  def _global_batch(self, step):
    """Every random input of one step, a pure function of (seed, step)."""
    cfg, size = self.config, self.config.batch_size
    seed = lambda offset: tf.stack([tf.cast(self.seed + offset, tf.int64),
                                    step])
    pick = tf.random.stateless_uniform(
        [size], seed(0), 0, len(self.data.train_users), dtype=tf.int32)
    return {
        "user": tf.gather(self.train_users, pick),
        "noise": tf.random.stateless_normal(
            [size, cfg.d_steps + 1, cfg.noise_dim], seed(1)),
        "keep": tf.random.stateless_uniform([size, self.width], seed(2)) >=
                cfg.history_dropout,
        "negative": tf.random.stateless_uniform([size, self.width], seed(3)) <
                    cfg.negative_rate,
        "mix": tf.random.stateless_uniform([size, 1], seed(4)),
    }

  def _replica_batch(self):
    """This replica's rows of the current step's global batch.

    Every replica draws the whole global batch (cheap next to the step) and
    keeps its own slice, so 1 or N replicas, on one or several workers, train
    on the same examples. No distributed tf.data iterator is used: after
    iterating one, every later op of the process page-faulted its memory
    afresh (19K minor faults per TFRS train step, 2-4x slower training in
    the same process; the cause inside TF was not pinned down).
    """
    context = tf.distribute.get_replica_context()
    per_replica = self.config.batch_size // context.num_replicas_in_sync
    first = context.replica_id_in_sync_group * per_replica
    return tf.nest.map_structure(lambda t: t[first:first + per_replica],
                                 self._global_batch(self.step.read_value()))

  # --- the step --------------------------------------------------------------

  def _apply(self, tape, loss, model, optimizer):
    grads = tape.gradient(loss, model.trainable_variables)
    context = tf.distribute.get_replica_context()
    grads = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
    grads, _ = tf.clip_by_global_norm(grads, self.config.clip_norm)
    optimizer.apply_gradients(zip(grads, model.trainable_variables),
                              experimental_aggregate_gradients=False)

  def _replica_step(self):
    """`d_steps` discriminator updates, then one generator update, on this
    replica's slice of the step's batch; returns the step's metrics."""
    cfg, batch = self.config, self._replica_batch()
    average = lambda x: tf.nn.compute_average_loss(
        x, global_batch_size=cfg.batch_size)
    real = dense_rows(self.seen_values, self.seen_splits, batch["user"],
                      self.width)
    condition = self._condition(batch["user"],
                                real * tf.cast(batch["keep"], tf.float32))
    negatives = tf.logical_and(batch["negative"], real == 0)
    # CFGAN partial masking: D sees generated scores only on the user's items
    # and the sampled negatives, so G cannot win by predicting all ones.
    shown = real + tf.cast(negatives, tf.float32)
    for i in range(cfg.d_steps):
      fake = self.generator(condition, batch["noise"][:, i], training=True)
      with tf.GradientTape() as tape:
        real_logits = self.discriminator(real, condition, training=True)
        fake_logits = self.discriminator(fake * shown, condition,
                                         training=True)
        penalty = (cfg.gp_weight * losses.wasserstein_gradient_penalty(
            self.discriminator, real, fake * shown, condition, batch["mix"])
                   if cfg.loss == "wasserstein" else 0.0)
        d_loss = average(losses.gan_loss(
            real_logits, fake_logits, cfg.loss,
            discriminator_terms=penalty).discriminator_loss)
      self._apply(tape, d_loss, self.discriminator, self.d_optimizer)
    with tf.GradientTape() as tape:
      fake = self.generator(condition, batch["noise"][:, -1], training=True)
      fake_logits = self.discriminator(fake * shown, condition, training=True)
      reconstruction = (
          cfg.zr_weight * losses.zero_reconstruction(fake, negatives) +
          cfg.reconstruction_weight * losses.masked_reconstruction(
              fake, real, shown))
      g_loss = average(losses.gan_loss(
          real_logits, fake_logits, cfg.loss,
          generator_terms=reconstruction).generator_loss)
    self._apply(tape, g_loss, self.generator, self.g_optimizer)
    return {"d_loss": d_loss, "g_loss": g_loss,
            "d_real": average(tf.sigmoid(real_logits)),
            "d_fake": average(tf.sigmoid(fake_logits)),
            "diversity": average(diversity(fake))}

  def _distributed_step(self):
    self.trace_count += 1  # Python side effect: runs once per trace.
    per_replica = self.strategy.run(self._replica_step)
    metrics = {k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, None)
               for k, v in per_replica.items()}
    self.step.assign_add(1)
    return metrics

  # --- loop ------------------------------------------------------------------

  def train(self, steps: Optional[int] = None,
            after_step: Optional[Callable[[int], None]] = None
            ) -> Dict[str, float]:
    """Trains until `steps` (default config.steps) in total; returns the last
    step's metrics. `after_step(step)` is a hook (tests inject faults)."""
    replicas = self.strategy.num_replicas_in_sync
    if self.config.batch_size % replicas:
      raise ValueError(f"GAN batch size {self.config.batch_size} must divide "
                       f"by the {replicas} replicas.")
    stop = steps or self.config.steps
    start = int(self.step.numpy())
    metrics = {}
    for step in range(start + 1, stop + 1):
      metrics = {k: float(v) for k, v in self._train_step().items()}
      self._guard(step, metrics)
      if after_step:
        after_step(step)
      if step % self.config.checkpoint_every == 0 or step == stop:
        log.info("GAN step %d/%d: %s", step, stop, ", ".join(
            f"{k} {v:.3f}" for k, v in metrics.items()))
      if self.writer and step % self.config.log_every == 0:
        with self.writer.as_default(step=step):
          for name, value in metrics.items():
            tf.summary.scalar(f"gan/{name}", value)
      if self.manager and step % self.config.checkpoint_every == 0:
        self.manager.save(checkpoint_number=step)
    if self.manager and start < stop:
      self.manager.save(checkpoint_number=stop)
    self.last_metrics = metrics
    return metrics

  def _guard(self, step: int, metrics: Dict[str, float]) -> None:
    what = diverged_losses(metrics, self.config.divergence_threshold)
    if not what:
      return
    restored = "no checkpoint to restore"
    if self.manager and self.manager.latest_checkpoint:
      self.checkpoint.restore(self.manager.latest_checkpoint)
      restored = f"restored {self.manager.latest_checkpoint}"
    raise GANDivergedError(
        f"GAN diverged at step {step} ({what}); {restored}. Lower "
        f"gan.g_learning_rate/gan.d_learning_rate or use gan.loss "
        f"wasserstein.")

  # --- sampling --------------------------------------------------------------

  def noise_source(self) -> tf.random.Generator:
    """The seeded noise `generate` draws from by default."""
    return tf.random.Generator.from_seed(self.seed + 7)

  def generate(self, users: np.ndarray, samples: int = 4,
               history: Optional[GANData] = None,
               batch_size: int = 1024,
               rng: Optional[tf.random.Generator] = None) -> np.ndarray:
    """Mean generated scores [len(users), num_items + 1] over `samples`
    noise draws, conditioned on each user's features and full history (the
    training data's, or `history`'s). Pass one `rng` to calls over chunks
    of users so the chunks draw different noise."""
    out = []
    values = tf.constant(history.seen_items) if history else self.seen_values
    splits = tf.constant(history.seen_splits) if history else self.seen_splits
    rng = rng or self.noise_source()
    for start in range(0, len(users), batch_size):
      batch = tf.constant(users[start:start + batch_size], tf.int32)
      real = dense_rows(values, splits, batch, self.width)
      condition = self._condition(batch, real)
      total = tf.zeros_like(real)
      for _ in range(samples):
        noise = rng.normal([tf.shape(batch)[0], self.config.noise_dim])
        total += self.generator(condition, noise)
      out.append((total / samples).numpy())
    return np.concatenate(out) if out else np.zeros((0, self.width))


def diversity(vectors: tf.Tensor) -> tf.Tensor:
  """Per example: mean cosine distance to the other vectors of the batch
  (near 0 when the generator has collapsed to one output)."""
  unit = tf.math.l2_normalize(vectors, axis=-1)
  similarity = tf.matmul(unit, unit, transpose_b=True)
  size = tf.cast(tf.shape(vectors)[0], vectors.dtype)
  others = (tf.reduce_sum(similarity, -1) - 1.0) / tf.maximum(size - 1.0, 1.0)
  return 1.0 - others
