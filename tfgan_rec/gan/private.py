"""The release generator: the interaction GAN trained for publishing
synthetic users, with user-level differential privacy (DP-SGD).

Only the discriminator reads real data, so only its updates are
privatised: each step Poisson-samples users (secretly), computes every
sampled user's gradient norm at once without forming their gradients
(ghost clipping, `ghost_clipping`: from the layers' inputs and output
gradients), sums the gradients clipped to norm C by a backward pass of the
losses weighted min(1, C / norm), adds N(0, (sigma C)^2) noise once and
divides by the expected batch. The generator's updates read only the
discriminator and what was released with DP (the synthetic users'
features, profile lengths and item popularity; `privacy`):
post-processing, which costs no privacy.

The generator gives logits over the catalogue; a synthetic user draws a
length from the released lengths and that many items from the softmax
without replacement, and the discriminator sees these 0/1 rows against the
real ones. (The first release generator gave sigmoid scores that the
discriminator saw as they were, next to 0/1 real rows, and that were
drawn item by item: D told them apart by their values alone, d_fake 0.00
after 300 steps, and G collapsed to one profile for everyone, mean cosine
0.99 between users, about sum(scores) items each: median 5 on MovieLens
100K whatever the real length.) It starts from the released popularity
and is held to it on average (`ANCHOR_WEIGHT`), so the game only adds
which items go together.

What keeps the guarantee true, enforced here and by `ReleaseGenerator`
(gan/models.py):
- no history: the models have no history input (`history=False`), so a
  real user's interactions can never be a condition;
- no reconstruction terms: they compare generated rows with real ones;
  the generator's loss is the adversarial term and the pull towards the
  released popularity;
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
from typing import Dict, Iterator, Optional

import numpy as np
import tensorflow as tf

from tfgan_rec.config import GANConfig
from tfgan_rec.data.features import FeatureTable
from tfgan_rec.gan import ghost_clipping, losses, loop
from tfgan_rec.gan.models import Discriminator, ReleaseGenerator
from tfgan_rec.gan.trainer import GANData, dense_rows, diversity
from tfgan_rec.layers import FeaturePreprocessing
from tfgan_rec.privacy import Lengths, PrivacyPlan, length_bins


# The discriminator's layers. Its input layer has (items + 1) x units
# weights, all noised under DP. Without DP, 256 units (the `gan` hidden)
# memorised the members (MovieLens 100K, 600 steps: D 0.83 on members'
# rows against 0.66 on held-out users', 0.65 / 0.60 with 32) and drove the
# synthetic popularity away from the real one (TV distance 0.26 against
# 0.18), EASE fitted on the synthetic data 0.104 against 0.110.
D_HIDDEN = (32,)
# The release GAN's learning rates are the `gan` ones times this. At 1e-3
# the discriminator won (d_fake 0.006 after 300 steps) and the generator
# fell onto ever fewer items (catalogue coverage 22% after 1,000 steps on
# synthetic data); at 3e-4 the same more slowly; at 1e-4 it trained 1,000
# steps without collapsing (coverage 87% on MovieLens 100K).
LEARNING_RATE_SCALE = 0.1
# Weight of the generator's pull of its mean item distribution towards the
# prior's (`_anchor`). Without it, DP noise in the discriminator led the
# generator away from the prior (MovieLens 100K, epsilon 3, 1,000 steps:
# MostPop fitted on the synthetic data fell from 0.093 at the start to
# 0.017; 0.089 with 10). Without DP, EASE fitted on it got 0.144 with 10,
# 0.139 with 1, 0.118 with none.
ANCHOR_WEIGHT = 10.0


def build_generator(num_items: int, preprocessing: FeaturePreprocessing,
                    config: GANConfig, prior: Optional[np.ndarray] = None
                    ) -> ReleaseGenerator:
  """The release generator (no history input), built."""
  generator = ReleaseGenerator(num_items, preprocessing, config.noise_dim,
                               config.hidden, config.feature_dim, prior)
  generator(condition({name: tf.constant([""]) for name in
                       preprocessing.kinds}, 1),
            tf.zeros([1, config.noise_dim]))
  return generator


def condition(features: Dict[str, tf.Tensor], rows) -> dict:
  """A release model's condition: features only, and the empty [rows, 0]
  history that carries the batch size."""
  return {"features": features, "history": tf.zeros([rows, 0])}


def draw_rows(logits: tf.Tensor, lengths: tf.Tensor,
              gumbel: tf.Tensor) -> tf.Tensor:
  """Multi-hot rows of `lengths[i]` items drawn from softmax(logits[i])
  without replacement: the top items of logits + Gumbel noise (Gumbel
  top-k), 0/1 like a real row, so the discriminator can only tell them
  apart by which items they hold. The gradient is straight-through, that
  of lengths * softmax(logits). (Through sigmoid(key - threshold)
  instead, items far from the threshold got none: at learning rate 3e-4 on
  MovieLens 100K the logits' spread grew to 5.8 (1.9 with this) and the
  popularity's TV distance to the real one to 0.55 (0.25) in 600 steps.)

  Args:
    logits: [rows, items].
    lengths: int [rows], each in 1..items - 1 (the padding item's
      logit, -1e9, is never drawn).
    gumbel: standard Gumbel noise [rows, items].

  Returns:
    float32 [rows, items], `lengths[i]` ones in row i.
  """
  keys = logits + gumbel
  ranked = tf.sort(keys, axis=-1, direction="DESCENDING")
  last = tf.gather(ranked, lengths - 1, batch_dims=1)
  hard = tf.cast(keys >= last[:, None], tf.float32)
  soft = tf.cast(lengths, tf.float32)[:, None] * tf.nn.softmax(logits)
  return hard + soft - tf.stop_gradient(soft)


def generated_logits(generator: ReleaseGenerator,
                     features: Dict[str, np.ndarray], count: int, seed: int,
                     chunk: int) -> Iterator[np.ndarray]:
  """Generated logits [rows, num_items + 1] for `count` synthetic users
  with raw `features` ({name: string [count]}), one noise draw each,
  `chunk` users at a time (so only a chunk's logits are in memory)."""
  rng = tf.random.Generator.from_seed(seed)
  for start in range(0, count, chunk):
    rows = min(chunk, count - start)
    batch = {name: tf.constant(values[start:start + rows], tf.string)
             for name, values in features.items()}
    noise = rng.normal([rows, generator.noise_dim])
    yield generator(condition(batch, rows), noise).numpy()


def _length_tables(lengths: Lengths) -> tuple:
  """(first length [bins], lengths in the bin [bins], log probability
  [1, bins]) of the released `lengths`, for drawing them in a step."""
  first, last = lengths.bounds()
  return (tf.constant(first, tf.int32),
          tf.constant(last - first + 1, tf.int32),
          tf.math.log(tf.constant([lengths.probabilities()], tf.float32)))


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
    lengths: the released profile lengths the generated rows are drawn
      with; None: every bin of `privacy.length_bins` alike (public, reads
      no data; for tests).
    prior: the generator's initial logits (`privacy.prior_logits` of the
      released popularity); None: zeros.
  """

  def __init__(self, config: GANConfig, data: GANData, released: FeatureTable,
               plan: Optional[PrivacyPlan], seed: int = 0,
               strategy: Optional[tf.distribute.Strategy] = None,
               checkpoint_dir: Optional[str] = None,
               logdir: Optional[str] = None,
               secret_seed: Optional[int] = None,
               lengths: Optional[Lengths] = None,
               prior: Optional[np.ndarray] = None):
    self.config, self.plan, self.prior = config, plan, prior
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
    bins = length_bins(data.num_items)
    self.length_bins = _length_tables(
        lengths or Lengths(bins, [1.0] * len(bins), data.num_items))
    self.secret_seed = (secret_seed if secret_seed is not None else
                        secrets.randbits(62) if plan else seed)
    slots = plan.capacity if plan else config.batch_size
    self.expected_batch = plan.expected_batch if plan else slots
    super().__init__(loop.LoopSettings.of(
        "release GAN", config, slots,
        remedy="Lower gan.g_learning_rate/gan.d_learning_rate.",
        clip_norm=config.clip_norm),
                     seed, strategy, checkpoint_dir, logdir)

  def create(self):
    config = self.config
    self.secret = tf.Variable(self.secret_seed, dtype=tf.int64,
                              trainable=False, name="secret_seed")
    generator = build_generator(self.num_items, self.preprocessing, config,
                                self.prior)
    discriminator = Discriminator(self.num_items, self.preprocessing,
                                  D_HIDDEN, config.feature_dim,
                                  history=False)
    probe = condition({k: v[:1] for k, v in self.released.items()}, 1)
    discriminator(tf.zeros([1, self.width]), probe)
    return {**self.adversaries(
        generator, discriminator, LEARNING_RATE_SCALE * config.g_learning_rate,
        LEARNING_RATE_SCALE * config.d_learning_rate),
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
        "lengths": self._lengths(slots * (config.d_steps + 1), step),
        "gumbel": -tf.math.log(-tf.math.log(tf.random.stateless_uniform(
            [slots, config.d_steps + 1, self.width], self._seed(5, step),
            1e-20, 1.0))),
    }

  def _lengths(self, count: int, step) -> tf.Tensor:
    """`count` lengths from the released histogram, [slots, d_steps + 1]:
    a bin, then uniformly in it."""
    first, size, log_p = self.length_bins
    bins = tf.random.stateless_categorical(log_p, count, self._seed(3, step),
                                           dtype=tf.int32)[0]
    offset = tf.random.stateless_uniform([count], self._seed(4, step))
    drawn = tf.gather(first, bins) + tf.cast(
        offset * tf.cast(tf.gather(size, bins), tf.float32), tf.int32)
    return tf.reshape(drawn, [-1, self.config.d_steps + 1])

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
      fake = tf.stop_gradient(self._fake(real_condition, batch, update))
      grads, per_user = self.discriminator_gradients(
          real, fake, real_condition, batch["included"], update)
      self.apply_gradients(grads, self.discriminator, self.d_optimizer)
    synthetic = condition(
        {k: tf.gather(v, batch["synthetic"]) for k, v in self.released.items()},
        rows)
    with tf.GradientTape() as tape:
      logits = self.generator(synthetic, batch["noise"][:, -1], training=True)
      fake = draw_rows(logits, batch["lengths"][:, -1], batch["gumbel"][:, -1])
      fake_logits = self.discriminator(fake, synthetic, training=True)
      anchor, divergence = self._anchor(logits)
      g_loss = self.average(losses.modified_generator_loss(fake_logits))
      total = g_loss + ANCHOR_WEIGHT * self.average(anchor)
    self.apply(tape, total, self.generator, self.g_optimizer)
    return {"d_loss": tf.reduce_sum(per_user * batch["included"]) /
                      self.expected_batch,
            "g_loss": g_loss, "prior_kl": divergence,
            "d_fake": self.average(tf.sigmoid(fake_logits)),
            "diversity": self.average(diversity(fake))}

  def _anchor(self, logits: tf.Tensor) -> tuple:
    """(per row, a term whose mean has the gradient of KL(prior || the
    batch's mean item distribution) [rows]; that KL). The batch's mean is
    summed over replicas outside the gradient, so the term is linear in
    each row and 1 or N replicas take the same step."""
    if self.prior is None:
      return tf.zeros_like(logits[:, 0]), tf.constant(0.0)
    probabilities = tf.nn.softmax(logits)
    context = tf.distribute.get_replica_context()
    mean = context.all_reduce(
        tf.distribute.ReduceOp.SUM,
        tf.reduce_sum(tf.stop_gradient(probabilities), 0)) / float(
            self.settings.batch_size)
    prior = tf.nn.softmax(tf.constant(self.prior, tf.float32) +
                          self.generator.padding)
    # A metric: the replicas' values are summed.
    divergence = tf.reduce_sum(prior * (
        tf.math.log(prior + 1e-30) - tf.math.log(mean + 1e-30))) / float(
            context.num_replicas_in_sync)
    return -tf.reduce_sum(probabilities * prior / (mean + 1e-30), -1), (
        divergence)

  def _fake(self, users, batch, update: int) -> tf.Tensor:
    """Rows generated for `users` (a condition), drawn as real rows look."""
    return draw_rows(
        self.generator(users, batch["noise"][:, update], training=True),
        batch["lengths"][:, update], batch["gumbel"][:, update])

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
