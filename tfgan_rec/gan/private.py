"""The release generator: the interaction GAN trained for publishing
synthetic users, with user-level differential privacy (DP-SGD).

Only the discriminator reads real data, so only its updates are
privatised: each step Poisson-samples users (secretly), computes every
sampled user's gradient norm at once without forming their gradients
(ghost clipping, `ghost_clipping`: from the layers' inputs and output
gradients), sums the gradients clipped to norm C by a backward pass of the
losses weighted min(1, C / norm), adds N(0, (sigma C)^2) noise once and
divides by the expected batch. The generator's updates read only the
discriminator and the released (DP) synthetic users' features:
post-processing, which costs no privacy.

What keeps the guarantee true, enforced here:
- no history: the models have no history input (`history=False`), so a
  real user's interactions can never be a condition;
- no reconstruction terms: they compare generated rows with real ones;
  the generator's loss is the adversarial term alone;
- the generator is conditioned on synthetic users drawn from the DP feature
  marginals, and the feature preprocessing is adapted on them, not on the
  real users;
- the sampling and the noise come from a secret seed (a public one would
  let anyone subtract the noise), kept only in memory and checkpoints.

Under a distributed strategy each replica sums its users' clipped
gradients and replica 0 alone adds the noise, drawn from (secret, step):
the all-reduce then yields exactly sum of clipped gradients + one
N(0, (sigma C)^2 I) draw, the Gaussian mechanism the accountant counts, and
1 or N replicas take the same step.
"""
import contextlib
import secrets
from typing import Dict, Optional

import numpy as np
import tensorflow as tf

from tfgan_rec.config import GANConfig
from tfgan_rec.data.features import FeatureTable
from tfgan_rec.gan import ghost_clipping, losses, loop
from tfgan_rec.gan.models import Discriminator, Generator
from tfgan_rec.gan.trainer import GANData, dense_rows, diversity
from tfgan_rec.layers import FeaturePreprocessing
from tfgan_rec.privacy import PrivacyPlan


def build_generator(num_items: int, preprocessing: FeaturePreprocessing,
                    config: GANConfig) -> Generator:
  """The release generator (no history input), built."""
  generator = Generator(num_items, preprocessing, config.noise_dim,
                        config.hidden, config.feature_dim, history=False)
  generator(condition({name: tf.constant([""]) for name in
                       preprocessing.kinds}, 1),
            tf.zeros([1, config.noise_dim]))
  return generator


def condition(features: Dict[str, tf.Tensor], rows) -> dict:
  """A release model's condition: features only, and the empty [rows, 0]
  history that carries the batch size."""
  return {"features": features, "history": tf.zeros([rows, 0])}


def generate_scores(generator: Generator, features: Dict[str, np.ndarray],
                    count: int, seed: int, batch_size: int = 1024
                    ) -> np.ndarray:
  """Generated scores [count, num_items + 1] for `count` synthetic users
  with raw `features` ({name: string [count]}), one noise draw each."""
  rng = tf.random.Generator.from_seed(seed)
  out = []
  for start in range(0, count, batch_size):
    rows = min(batch_size, count - start)
    batch = {name: tf.constant(values[start:start + rows], tf.string)
             for name, values in features.items()}
    noise = rng.normal([rows, generator.noise_dim])
    out.append(generator(condition(batch, rows), noise).numpy())
  return np.concatenate(out)


class ReleaseGANTrainer(loop.AdversarialLoop):
  """Trains the release generator on `data`, privately when `plan` is
  given (else the same model without clipping or noise: epsilon = inf).

  Args:
    config: the GAN's settings (steps, batch, sizes, learning rates).
    data: the real training users and interactions.
    released: the synthetic users' features (from the DP marginals).
    plan: sigma, clip norm, sampling rate and slots (None: not private).
    seed: initialisation (public).
    strategy: default `loop.make_strategy()`.
    checkpoint_dir, logdir: as for `loop.AdversarialLoop`.
    secret_seed: the sampling and noise seed; None draws a secret one.
      Tests pass one to compare runs; a known seed voids the guarantee.
  """

  def __init__(self, config: GANConfig, data: GANData, released: FeatureTable,
               plan: Optional[PrivacyPlan], seed: int = 0,
               strategy: Optional[tf.distribute.Strategy] = None,
               checkpoint_dir: Optional[str] = None,
               logdir: Optional[str] = None,
               secret_seed: Optional[int] = None):
    self.config, self.plan = config, plan
    self.width = data.num_items + 1
    self.num_items = data.num_items
    self.seen_values = tf.constant(data.seen_items)
    self.seen_splits = tf.constant(data.seen_splits)
    # The sampling population: the users with training interactions.
    self.train_users = tf.constant(data.train_users)
    self.population = len(data.train_users)
    self.preprocessing = FeaturePreprocessing.adapted(released)
    # The real users' features enter only the discriminator's clipped
    # per-user gradients; the generator sees the released ones.
    self.real_features = {name: tf.constant(data.user_features.columns[name],
                                            tf.string)
                          for name in released.columns}
    self.released = {name: tf.constant(column[1:], tf.string)
                     for name, column in released.columns.items()}
    self.released_users = max(1, min(
        (len(c) - 1 for c in released.columns.values()), default=1))
    self.secret_seed = (secret_seed if secret_seed is not None else
                        secrets.randbits(62) if plan else seed)
    slots = plan.capacity if plan else config.batch_size
    self.expected_batch = plan.expected_batch if plan else slots
    super().__init__(loop.LoopSettings(
        "release GAN", config.steps, slots,
        remedy="Lower gan.g_learning_rate/gan.d_learning_rate.",
        clip_norm=config.clip_norm,
        checkpoint_every=config.checkpoint_every, log_every=config.log_every,
        divergence_threshold=config.divergence_threshold),
                     seed, strategy, checkpoint_dir, logdir)

  def create(self):
    config = self.config
    self.secret = tf.Variable(self.secret_seed, dtype=tf.int64,
                              trainable=False, name="secret_seed")
    generator = build_generator(self.num_items, self.preprocessing, config)
    discriminator = Discriminator(self.num_items, self.preprocessing,
                                  config.hidden, config.feature_dim,
                                  history=False)
    probe = condition({k: v[:1] for k, v in self.released.items()}, 1)
    discriminator(generator(probe, tf.zeros([1, config.noise_dim])), probe)
    return {**self.adversaries(generator, discriminator,
                               config.g_learning_rate,
                               config.d_learning_rate),
            "secret_seed": self.secret}

  def _seed(self, offset: int, step) -> tf.Tensor:
    return tf.stack([self.secret.read_value() + offset,
                     tf.cast(step, tf.int64)])

  def global_batch(self, step):
    """The step's Poisson sample in fixed slots: every training user gets
    a uniform key and is sampled if it is below q; the slots hold the
    smallest keys, so they hold the whole sample (or, when it is larger, a
    uniformly random part of it) and `included` marks the sampled ones."""
    config, slots = self.config, self.settings.batch_size
    keys = tf.random.stateless_uniform([self.population], self._seed(0, step))
    smallest, order = tf.math.top_k(-keys, k=slots)
    rate = self.plan.sampling_rate if self.plan else 1.0
    return {
        "user": tf.gather(self.train_users, order),
        "included": tf.cast(-smallest < rate, tf.float32),
        "synthetic": tf.random.stateless_uniform(
            [slots], self._seed(1, step), 0, self.released_users, tf.int32),
        "noise": tf.random.stateless_normal(
            [slots, config.d_steps + 1, config.noise_dim],
            self._seed(2, step)),
    }

  def replica_step(self, batch):
    """`d_steps` (private) discriminator updates on the sampled real
    users, then one generator update on synthetic users."""
    real = dense_rows(self.seen_values, self.seen_splits, batch["user"],
                      self.width)
    rows = tf.shape(real)[0]
    real_condition = condition(
        {k: tf.gather(v, batch["user"]) for k, v in self.real_features.items()},
        rows)
    for update in range(self.config.d_steps):
      fake = self.generator(real_condition, batch["noise"][:, update],
                            training=True)
      grads, per_user = self.discriminator_gradients(
          real, fake, real_condition, batch["included"], update)
      self.apply_gradients(grads, self.discriminator, self.d_optimizer)
    synthetic = condition(
        {k: tf.gather(v, batch["synthetic"]) for k, v in self.released.items()},
        rows)
    with tf.GradientTape() as tape:
      fake = self.generator(synthetic, batch["noise"][:, -1], training=True)
      fake_logits = self.discriminator(fake, synthetic, training=True)
      g_loss = self.average(losses.modified_generator_loss(fake_logits))
    self.apply(tape, g_loss, self.generator, self.g_optimizer)
    return {"d_loss": tf.reduce_sum(per_user * batch["included"]) /
                      self.expected_batch,
            "g_loss": g_loss,
            "d_fake": self.average(tf.sigmoid(fake_logits)),
            "diversity": self.average(diversity(fake))}

  def discriminator_gradients(self, real, fake, real_condition, included,
                              update: int = 0):
    """(this replica's share of the discriminator's gradient, per-user
    losses): privately, the sum of the sampled users' clipped gradients
    plus, on replica 0, the noise, over the expected batch; else the mean
    gradient."""
    variables = self.discriminator.trainable_variables
    recorder = (ghost_clipping.Recorder(self.discriminator) if self.plan
                else contextlib.nullcontext())
    with recorder, tf.GradientTape(persistent=bool(self.plan)) as tape:
      per_user = losses.minimax_discriminator_loss(
          self.discriminator(real, real_condition, training=True),
          self.discriminator(fake, real_condition, training=True))
      mean = self.average(per_user * included)
    if not self.plan:
      return tape.gradient(mean, variables), per_user
    # User i's loss is all of their data in the step (their real row and
    # the row generated from their features): its gradient is theirs.
    norms = tf.sqrt(recorder.squared_norms(tape, per_user))
    scale = included * tf.minimum(
        1.0, self.plan.clip_norm / tf.maximum(norms, 1e-12))
    summed = ghost_clipping.clipped_sum(tape, per_user, variables, scale)
    return self._add_noise(summed, update), per_user

  def _add_noise(self, summed, update: int):
    """The clipped sum plus, on replica 0, N(0, (sigma C)^2) noise, over the
    expected batch."""
    plan = self.plan
    context = tf.distribute.get_replica_context()
    first = tf.cast(tf.equal(context.replica_id_in_sync_group, 0), tf.float32)
    step = self.step.read_value()
    grads = []
    for index, total in enumerate(summed):
      noise = tf.random.stateless_normal(
          tf.shape(total), self._seed(16 + update * len(summed) + index, step))
      grads.append((total + first * plan.noise_multiplier *
                    plan.clip_norm * noise) / self.expected_batch)
    return grads
