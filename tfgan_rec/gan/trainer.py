"""The conditional GAN over users' interaction vectors, trained by the
shared adversarial loop (`gan.loop`: distributed, reproducible, resumable).

One step: `d_steps` discriminator updates, then one generator update, each
with its own optimizer and gradients clipped by global norm after the
all-reduce. Every random draw (users, noise, dropout, negatives) is a
stateless function of (seed, step).
"""
import dataclasses
import logging
from typing import Optional

import numpy as np
import tensorflow as tf

from tfgan_rec.config import GANConfig
from tfgan_rec.data.features import FeatureTable
from tfgan_rec.gan import losses, loop
from tfgan_rec.gan.models import Discriminator, Generator
from tfgan_rec.layers import FeaturePreprocessing

log = logging.getLogger(__name__)

# The generator's item-to-item path has items^2 weights (and Adam two more
# copies): 5,000 items are 25M weights, 300 MB with the optimizer.
ITEM_TO_ITEM_MAX_ITEMS = 5_000


@dataclasses.dataclass
class GANData:
  """What the GAN trains on: each user's training items and raw features."""
  num_items: int
  seen_items: np.ndarray  # flat item indices, by user, each user's in time
  seen_splits: np.ndarray  # row splits over users 0..num_users
  user_features: FeatureTable  # raw, row i = user i
  train_users: np.ndarray  # users with at least one training interaction

  @classmethod
  def from_rows(cls, user: np.ndarray, item: np.ndarray, num_users: int,
                num_items: int, features: FeatureTable,
                timestamp: Optional[np.ndarray] = None) -> "GANData":
    """Groups the rows by user, each user's items in time order (`timestamp`,
    ties in the rows' order, as the split's; item order without it)."""
    order = np.lexsort((item, user) if timestamp is None else
                       (timestamp, user))
    counts = np.bincount(user, minlength=num_users + 1)
    splits = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return cls(num_items, item[order].astype(np.int32), splits, features,
               np.flatnonzero(counts).astype(np.int32))


def dense_rows(values, splits, users, width) -> tf.Tensor:
  """Binary [len(users), width] rows of a ragged (values, splits) table."""
  rows = tf.gather(tf.RaggedTensor.from_row_splits(values, splits), users)
  indices = tf.stack([tf.cast(rows.value_rowids(), tf.int32),
                      rows.flat_values], axis=1)
  return tf.scatter_nd(indices, tf.ones_like(rows.flat_values, tf.float32),
                       tf.stack([tf.shape(users)[0], width]))


def row_lengths(splits, users) -> tf.Tensor:
  """How many items each of `users` has in a ragged (values, splits)
  table."""
  return tf.gather(splits, users + 1) - tf.gather(splits, users)


def window_rows(values, splits, users, begin, length, width) -> tf.Tensor:
  """Binary [len(users), width] rows holding each user's items at positions
  begin .. begin + length - 1 of their (time-ordered) slice of `values`;
  positions outside the user's slice are left out. `begin` is counted from
  the user's first item and may be negative.

  >>> window_rows(tf.constant([1, 2, 3, 2]), tf.constant([0, 3, 4]),
  ...             tf.constant([0, 1]), tf.constant([1, -1]), 2, 4).numpy()
  array([[0., 0., 1., 1.],
         [0., 0., 1., 0.]], dtype=float32)
  """
  first = tf.gather(splits, users)
  end = tf.gather(splits, users + 1)
  position = (first + tf.cast(begin, first.dtype))[:, None] + tf.range(
      length, dtype=first.dtype)[None, :]
  inside = (position >= first[:, None]) & (position < end[:, None])
  items = tf.gather(values, tf.clip_by_value(
      position, 0, tf.maximum(tf.cast(tf.size(values), first.dtype) - 1, 0)))
  rows = tf.broadcast_to(tf.range(tf.shape(users)[0])[:, None],
                         tf.shape(items))
  counts = tf.scatter_nd(
      tf.stack([rows, tf.cast(items, tf.int32)], axis=-1),
      tf.cast(inside, tf.float32), tf.stack([tf.shape(users)[0], width]))
  return tf.minimum(counts, 1.0)


class GANTrainer(loop.AdversarialLoop):
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
    self.config, self.data = config, data
    self.width = data.num_items + 1
    self.seen_values = tf.constant(data.seen_items)
    self.seen_splits = tf.constant(data.seen_splits)
    # The next-items target needs an item before and one after the cut.
    counts = np.diff(data.seen_splits)[data.train_users]
    users = (data.train_users[counts >= 2] if config.target == "next"
             else data.train_users)
    if not len(users):
      raise ValueError(f"the GAN has no user to learn from (gan.target "
                       f"{config.target} needs users with at least "
                       f"{2 if config.target == 'next' else 1} training "
                       f"interactions).")
    self.train_users = tf.constant(users)
    # Raw strings, as constants (fine under any strategy); the generator's
    # and the discriminator's FeatureEncoders share one preprocessing.
    self.features = {name: tf.constant(column, tf.string) for name, column
                     in data.user_features.columns.items()}
    self.preprocessing = FeaturePreprocessing.adapted(data.user_features)
    super().__init__(loop.LoopSettings.of(
        "GAN", config, config.batch_size,
        remedy="Lower gan.g_learning_rate/gan.d_learning_rate or use "
               "gan.loss wasserstein.",
        clip_norm=config.clip_norm),
                     seed, strategy, checkpoint_dir, logdir)

  # --- setup -----------------------------------------------------------------

  def create(self):
    """The generator, discriminator and their optimizers, built at the
    seed."""
    config = self.config
    generator = Generator(self.data.num_items, self.preprocessing,
                          config.noise_dim, config.hidden, config.feature_dim,
                          item_to_item=self._item_to_item())
    discriminator = Discriminator(self.data.num_items, self.preprocessing,
                                  config.hidden, config.feature_dim)
    condition = self._condition(tf.constant([0], tf.int32),
                                tf.zeros([1, self.width]))
    logits = generator(condition, tf.zeros([1, config.noise_dim]))
    discriminator(tf.sigmoid(logits), condition)
    return self.adversaries(generator, discriminator, config.g_learning_rate,
                            config.d_learning_rate)

  def _item_to_item(self) -> bool:
    """Whether the generator gets its items x items path (not above
    ITEM_TO_ITEM_MAX_ITEMS items, where it stops being small)."""
    if not self.config.item_to_item:
      return False
    if self.data.num_items > ITEM_TO_ITEM_MAX_ITEMS:
      log.warning("gan.item_to_item skipped: %d items exceed %d (its "
                  "weights grow with the square of the catalogue).",
                  self.data.num_items, ITEM_TO_ITEM_MAX_ITEMS)
      return False
    return True

  # --- input -----------------------------------------------------------------

  def _condition(self, users, history):
    """The generator's and discriminator's input: the users' raw features
    and the given history rows."""
    features = {k: tf.gather(v, users) for k, v in self.features.items()}
    return {"features": features, "history": history}

  def global_batch(self, step):
    """Every random input of one step, a pure function of (seed, step)."""
    cfg, size = self.config, self.config.batch_size
    seed = lambda offset: tf.stack([tf.cast(self.seed + offset, tf.int64),
                                    step])
    pick = tf.random.stateless_uniform(
        [size], seed(0), 0, tf.shape(self.train_users)[0], dtype=tf.int32)
    return {
        "user": tf.gather(self.train_users, pick),
        "noise": tf.random.stateless_normal(
            [size, cfg.d_steps + 1, cfg.noise_dim], seed(1)),
        "keep": tf.random.stateless_uniform([size, self.width], seed(2)) >=
                cfg.history_dropout,
        "negative": tf.random.stateless_uniform([size, self.width], seed(3)) <
                    cfg.negative_rate,
        "mix": tf.random.stateless_uniform([size, 1], seed(4)),
        "cut": tf.random.stateless_uniform([size], seed(5)),
    }

  def _real_and_condition(self, batch):
    """(the real vector D sees, the generator's condition) of a batch.

    profile: the user's items, conditioned on them with `history_dropout`
    of them dropped. next: the `horizon` items after a random cut of the
    user's time-ordered items, conditioned on the `context` items before it.
    """
    cfg, users = self.config, batch["user"]
    if cfg.target == "profile":
      real = dense_rows(self.seen_values, self.seen_splits, users, self.width)
      return real, self._condition(
          users, real * tf.cast(batch["keep"], tf.float32))
    count = row_lengths(self.seen_splits, users)
    # The cut leaves at least one item on each side.
    cut = 1 + tf.cast(batch["cut"] * tf.cast(count - 1, tf.float32),
                      count.dtype)
    window = lambda begin, length: window_rows(
        self.seen_values, self.seen_splits, users, begin, length, self.width)
    return (window(cut, cfg.horizon),
            self._condition(users, window(cut - cfg.context, cfg.context)))

  # --- the step --------------------------------------------------------------

  def replica_step(self, batch):
    """`d_steps` discriminator updates, then one generator update, on this
    replica's slice of the step's batch; returns the step's metrics."""
    cfg, average = self.config, self.average
    real, condition = self._real_and_condition(batch)
    negatives = batch["negative"] & (real == 0) & (condition["history"] == 0)
    # CFGAN partial masking: D sees generated scores only on the user's items
    # and the sampled negatives, so G cannot win by predicting all ones.
    shown = real + tf.cast(negatives, tf.float32)
    for i in range(cfg.d_steps):
      fake = tf.sigmoid(self.generator(condition, batch["noise"][:, i],
                                       training=True))
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
      self.apply(tape, d_loss, self.discriminator, self.d_optimizer)
    with tf.GradientTape() as tape:
      logits = self.generator(condition, batch["noise"][:, -1], training=True)
      fake = tf.sigmoid(logits)
      fake_logits = self.discriminator(fake * shown, condition, training=True)
      reconstruction = (
          cfg.zr_weight * losses.zero_reconstruction(fake, negatives) +
          cfg.reconstruction_weight * losses.masked_reconstruction(
              fake, real, shown) +
          cfg.ranking_weight * losses.softmax_ranking(
              logits, real, tf.cast(condition["history"] == 0, tf.float32)))
      g_loss = average(losses.gan_loss(
          real_logits, fake_logits, cfg.loss,
          generator_terms=reconstruction).generator_loss)
    self.apply(tape, g_loss, self.generator, self.g_optimizer)
    return {"d_loss": d_loss, "g_loss": g_loss,
            "d_real": average(tf.sigmoid(real_logits)),
            "d_fake": average(tf.sigmoid(fake_logits)),
            "diversity": average(diversity(fake))}

  # --- sampling --------------------------------------------------------------

  def _history(self, values, splits, users):
    """The history rows `generate` conditions on."""
    if self.config.target == "profile":
      return dense_rows(values, splits, users, self.width)
    count = row_lengths(splits, users)
    return window_rows(values, splits, users, count - self.config.context,
                       self.config.context, self.width)

  def noise_source(self, stream: int = 0) -> tf.random.Generator:
    """The seeded noise `generate` draws from by default (stream 0);
    other streams give independent draws."""
    return tf.random.Generator.from_seed(self.seed + 7 + 1000 * stream)

  def generate(self, users: np.ndarray, samples: int = 4,
               history: Optional[GANData] = None,
               batch_size: int = 1024,
               rng: Optional[tf.random.Generator] = None) -> np.ndarray:
    """Mean generated scores [len(users), num_items + 1] over `samples`
    noise draws, conditioned on each user's features and history (the
    training data's, or `history`'s: all of it, or with the next-items
    target the latest `context` items). Pass one `rng` to calls over chunks
    of users so the chunks draw different noise."""
    out = []
    values = tf.constant(history.seen_items) if history else self.seen_values
    splits = tf.constant(history.seen_splits) if history else self.seen_splits
    rng = rng or self.noise_source()
    for start in range(0, len(users), batch_size):
      batch = tf.constant(users[start:start + batch_size], tf.int32)
      real = self._history(values, splits, batch)
      condition = self._condition(batch, real)
      total = tf.zeros_like(real)
      for _ in range(samples):
        noise = rng.normal([tf.shape(batch)[0], self.config.noise_dim])
        total += tf.sigmoid(self.generator(condition, noise))
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
