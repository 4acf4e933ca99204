"""The training loop every adversarial model of the package shares.

A trainer supplies its models and one replica's step; the loop makes it
distributed, reproducible, resumable and guarded:

- one `tf.function` step runs `replica_step` under `strategy.run`; losses
  are averaged over the *global* batch and gradients all-reduced before
  they are applied, so N replicas take the same step as one device;
- every random input is a stateless function of (seed, step), and each
  replica keeps its own slice of the step's global batch, so a run is the
  same on 1 or N replicas and resumes exactly from a checkpoint;
- the step counter and every variable are checkpointed every
  `checkpoint_every` steps (by every worker, the chief into the folder
  given); a NaN/inf or exploding loss restores the last good checkpoint and
  stops with a message naming the settings to change.

The strategy is `MultiWorkerMirroredStrategy` when `TF_CONFIG` names several
workers (a `chief` task counts as one), else `MirroredStrategy` over the
local devices.
"""
import dataclasses
import functools
import logging
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import tensorflow as tf

from tfgan_rec import cluster
from tfgan_rec.config import LoopConfig

log = logging.getLogger(__name__)


class GANDivergedError(RuntimeError):
  """Raised when a loss becomes NaN/inf or explodes; the message says which
  checkpoint was restored and what to change."""


@functools.lru_cache(maxsize=None)
def make_strategy(devices: Optional[Tuple[str, ...]] = None
                  ) -> tf.distribute.Strategy:
  """MultiWorkerMirrored if TF_CONFIG names several workers, else Mirrored
  over `devices` (default: every local device).

  One instance per process and device set, shared by every trainer and the
  recommender: a second multi-device strategy in a process reuses the
  first one's collective instance keys and aborts ("Shape mismatch in the
  collective instance"), and TensorFlow sets up a cluster's collectives
  once.
  """
  if cluster.workers() > 1:
    return tf.distribute.MultiWorkerMirroredStrategy()
  return tf.distribute.MirroredStrategy(devices)


def use_logical_cpus(count: int) -> None:
  """Splits the CPU into `count` logical devices (before TF initialises)."""
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration()] * count)


def diverged_losses(metrics: Dict[str, float], threshold: float) -> str:
  """The losses in `metrics` that are NaN/inf or beyond `threshold`, as
  "name=value, ..." ("" when none)."""
  return ", ".join(f"{name}={value:.3g}" for name, value in metrics.items()
                   if name.endswith("loss") and (
                       not np.isfinite(value) or abs(value) > threshold))


@dataclasses.dataclass(frozen=True)
class LoopSettings:
  """How a trainer's loop runs.

  Args:
    name: what is trained, for logs and errors ("GAN", "user generator").
    steps: steps in total.
    batch_size: the global batch (every replica takes an equal slice).
    remedy: the end of the divergence message: which settings to change.
    clip_norm: gradients are clipped to this global norm after the
      all-reduce (None: not clipped).
    checkpoint_every: steps between checkpoints (and progress logs).
    log_every: steps between TensorBoard scalars.
    divergence_threshold: a loss beyond it counts as diverged.
  """
  name: str
  steps: int
  batch_size: int
  remedy: str
  checkpoint_every: int
  log_every: int
  divergence_threshold: float
  clip_norm: Optional[float] = None

  @classmethod
  def of(cls, name: str, config: LoopConfig, batch_size: int, remedy: str,
         clip_norm: Optional[float] = None) -> "LoopSettings":
    """`config.steps` steps of `batch_size`, with `config`'s checkpoint,
    log and divergence settings (`config`: a GANConfig, UserGANConfig or
    ItemGANConfig, each a LoopConfig with its own `steps`)."""
    return cls(name=name, steps=config.steps, batch_size=batch_size,
               remedy=remedy, checkpoint_every=config.checkpoint_every,
               log_every=config.log_every,
               divergence_threshold=config.divergence_threshold,
               clip_norm=clip_norm)


class AdversarialLoop:
  """Base of the trainers: subclasses create their models in `create`
  (returning what the checkpoint tracks) and define `global_batch(step)`
  and `replica_step(batch) -> {metric: value}`.

  Args:
    settings: how the loop runs.
    seed: fixes initialisation and every step's random inputs.
    strategy: default `make_strategy()`.
    checkpoint_dir: where checkpoints go (None: none; no resume).
    logdir: TensorBoard folder for the step metrics (None: none).
  """

  def __init__(self, settings: LoopSettings, seed: int = 0,
               strategy: Optional[tf.distribute.Strategy] = None,
               checkpoint_dir: Optional[str] = None,
               logdir: Optional[str] = None):
    self.settings, self.seed = settings, seed
    self.strategy = strategy or make_strategy()
    with self.strategy.scope():
      tf.keras.utils.set_random_seed(seed)
      self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
      tracked = self.create()
    self.checkpoint = tf.train.Checkpoint(step=self.step, **tracked)
    self.manager = (tf.train.CheckpointManager(
        self.checkpoint, cluster.checkpoint_path(checkpoint_dir), max_to_keep=3)
                    if checkpoint_dir else None)
    self.writer = tf.summary.create_file_writer(logdir) if logdir else None
    self._train_step = tf.function(self._distributed_step)
    self.trace_count = 0
    self.last_metrics: Dict[str, float] = {}

  # --- what a trainer defines ------------------------------------------------

  def create(self) -> Dict[str, tf.Module]:
    """Creates the models and optimizers (every variable, under the
    strategy's scope); returns them by checkpoint name."""
    raise NotImplementedError

  def global_batch(self, step: tf.Tensor):
    """Every random input of `step` for the whole global batch, a pure
    function of (seed, step)."""
    raise NotImplementedError

  def replica_step(self, batch) -> Dict[str, tf.Tensor]:
    """One replica's updates on its slice `batch`; metrics already averaged
    over the global batch (`average`)."""
    raise NotImplementedError

  def adversaries(self, generator: tf.keras.Model,
                  discriminator: tf.keras.Model, g_learning_rate: float,
                  d_learning_rate: float) -> Dict[str, tf.Module]:
    """For `create`: keeps the (already called, so built) `generator` and
    `discriminator` with an Adam optimizer each (beta_1 0.5, built too);
    returns all four by checkpoint name."""
    self.generator, self.discriminator = generator, discriminator
    self.g_optimizer = tf.keras.optimizers.Adam(g_learning_rate, beta_1=0.5)
    self.d_optimizer = tf.keras.optimizers.Adam(d_learning_rate, beta_1=0.5)
    for model, optimizer in ((generator, self.g_optimizer),
                             (discriminator, self.d_optimizer)):
      optimizer.build(model.trainable_variables)
    return {"generator": generator, "discriminator": discriminator,
            "g_optimizer": self.g_optimizer, "d_optimizer": self.d_optimizer}

  # --- helpers for replica_step ----------------------------------------------

  def average(self, per_example: tf.Tensor) -> tf.Tensor:
    """This replica's share of the mean over the global batch."""
    return tf.nn.compute_average_loss(
        per_example, global_batch_size=self.settings.batch_size)

  def apply(self, tape: tf.GradientTape, loss: tf.Tensor,
            model: tf.keras.Model, optimizer) -> None:
    """Gradients of `loss`, summed over replicas (then clipped), applied."""
    variables = model.trainable_variables
    self.apply_gradients(tape.gradient(loss, variables), model, optimizer)

  def apply_gradients(self, grads, model: tf.keras.Model, optimizer) -> None:
    """This replica's share of the gradients, summed over replicas (then
    clipped), applied to `model`."""
    variables = model.trainable_variables
    # Dense: replicas' sparse (embedding) gradients differ in row count,
    # which the collective all-reduce rejects; the tables here are small.
    grads = [tf.convert_to_tensor(g) for g in grads]
    context = tf.distribute.get_replica_context()
    grads = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
    if self.settings.clip_norm is not None:
      grads, _ = tf.clip_by_global_norm(grads, self.settings.clip_norm)
    optimizer.apply_gradients(zip(grads, variables),
                              experimental_aggregate_gradients=False)

  # --- the step --------------------------------------------------------------

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
    per_replica = self.settings.batch_size // context.num_replicas_in_sync
    first = context.replica_id_in_sync_group * per_replica
    return tf.nest.map_structure(lambda t: t[first:first + per_replica],
                                 self.global_batch(self.step.read_value()))

  def _distributed_step(self):
    self.trace_count += 1  # Python side effect: runs once per trace.
    per_replica = self.strategy.run(
        lambda: self.replica_step(self._replica_batch()))
    metrics = {k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, None)
               for k, v in per_replica.items()}
    self.step.assign_add(1)
    return metrics

  # --- loop ------------------------------------------------------------------

  def restore(self) -> int:
    """Restores the latest checkpoint, if any; returns its step."""
    if self.manager and self.manager.latest_checkpoint:
      self.checkpoint.restore(self.manager.latest_checkpoint)
      log.info("%s: resumed from %s (step %d)", self.settings.name,
               self.manager.latest_checkpoint, int(self.step.numpy()))
    return int(self.step.numpy())

  def train(self, steps: Optional[int] = None,
            after_step: Optional[Callable[[int], None]] = None
            ) -> Dict[str, float]:
    """Trains until `steps` (default settings.steps) in total; returns the
    last step's metrics. `after_step(step)` is a hook (tests inject
    faults)."""
    replicas = self.strategy.num_replicas_in_sync
    if self.settings.batch_size % replicas:
      raise ValueError(f"{self.settings.name} batch size "
                       f"{self.settings.batch_size} must divide by the "
                       f"{replicas} replicas.")
    stop = steps or self.settings.steps
    start = int(self.step.numpy())
    metrics = {}
    for step in range(start + 1, stop + 1):
      metrics = {k: float(v) for k, v in self._train_step().items()}
      self._guard(step, metrics)
      if after_step:
        after_step(step)
      self._report(step, stop, metrics)
    if self.manager and start < stop:
      self.manager.save(checkpoint_number=stop)
    self.last_metrics = metrics
    return metrics

  def _report(self, step: int, stop: int, metrics: Dict[str, float]) -> None:
    """Progress log, TensorBoard scalars and checkpoints, each on its
    period."""
    settings = self.settings
    if step % settings.checkpoint_every == 0 or step == stop:
      log.info("%s step %d/%d: %s", settings.name, step, stop, ", ".join(
          f"{k} {v:.3f}" for k, v in metrics.items()))
    if self.writer and step % settings.log_every == 0:
      with self.writer.as_default(step=step):
        for name, value in metrics.items():
          tf.summary.scalar(f"{settings.name.lower().replace(' ', '_')}/"
                            f"{name}", value)
    if self.manager and step % settings.checkpoint_every == 0:
      self.manager.save(checkpoint_number=step)

  def _guard(self, step: int, metrics: Dict[str, float]) -> None:
    what = diverged_losses(metrics, self.settings.divergence_threshold)
    if not what:
      return
    restored = "no checkpoint to restore"
    if self.manager and self.manager.latest_checkpoint:
      self.checkpoint.restore(self.manager.latest_checkpoint)
      restored = f"restored {self.manager.latest_checkpoint}"
    raise GANDivergedError(f"{self.settings.name} diverged at step {step} "
                           f"({what}); {restored}. {self.settings.remedy}")
