"""Query embeddings for thin users, generated adversarially.

GAR (Chen et al., SIGIR 2022) generates embeddings for new *items* from
their content and trains the generator against the recommender; this is its
twin for *users*. A conditional generator maps a thin profile (the user's
latest `max_thin` items, pooled from the candidate tower's embeddings, the
user's features and the profile's length) and noise to an embedding in the
query tower's space. It learns on dense users whose histories are cut to
thin ones (simulated sparsity), in two kinds of episodes:

- *new*: the k items just before a random point in time; the next
  `positives` items are what the user does next;
- *returning*: the user's first k items (of the latest 256 kept); the
  latest `positives` items are what the user does now (their taste has
  moved on).

Its loss (`gan_loss`) is adversarial, against a discriminator that tells the
trained query tower's embedding of the same user's FULL profile (the
teacher) from the generated one, given the thin profile, plus a ranking term
(the items after the cut, softmax over the catalogue), the teacher's
catalogue scores distilled (KL) and a cosine anchor to the teacher's
embedding. The user's id is never an input, so the generator learns what a
thin profile says, not who the user is.

At serving `ThinUserQuery` blends the generated embedding with the tower's
own by the length of the user's history, with weights chosen on validation.
"""
import dataclasses
from typing import Callable, Dict, Optional, Sequence

import numpy as np
import tensorflow as tf

from tfgan_rec.config import UserGANConfig
from tfgan_rec.gan import losses, loop
from tfgan_rec.layers import FeatureEncoder, FeaturePreprocessing, mlp

# History lengths at which the blend weight changes: 0 (features only),
# 1-5, 6-19, and 20 or more.
BLEND_BOUNDARIES = (1, 6, 20)


@dataclasses.dataclass
class UserHistories:
  """Each user's interactions in time order, oldest first, 0-padded at the
  end: `items` [num_users + 1, length], `lengths` [num_users + 1]."""
  items: np.ndarray
  lengths: np.ndarray

  @classmethod
  def from_interactions(cls, user: np.ndarray, item: np.ndarray,
                        timestamp: np.ndarray, num_users: int,
                        length: int = 256) -> "UserHistories":
    """The latest `length` interactions of each user, oldest first.

    >>> h = UserHistories.from_interactions(
    ...     np.array([1, 1, 1]), np.array([7, 8, 9]), np.array([2., 1., 3.]),
    ...     num_users=1, length=2)
    >>> h.items.tolist(), h.lengths.tolist()
    ([[0, 0], [7, 9]], [0, 2])
    """
    order = np.lexsort((np.arange(len(user)), timestamp, user))
    sorted_user = user[order]
    counts = np.bincount(user, minlength=num_users + 1)
    starts = np.concatenate([[0], np.cumsum(counts)])[sorted_user]
    from_end = counts[sorted_user] - 1 - (np.arange(len(order)) - starts)
    keep = from_end < length
    kept = np.minimum(counts, length)
    position = kept[sorted_user] - 1 - from_end
    items = np.zeros((num_users + 1, length), np.int32)
    items[sorted_user[keep], position[keep]] = item[order][keep]
    return cls(items, kept.astype(np.int32))


class ThinProfileEncoder(tf.keras.layers.Layer):
  """(thin items [B, max_thin], encoded features) -> one condition vector:
  the mean of the items' (frozen) candidate embeddings, the user's feature
  embeddings and an embedding of how many items there are."""

  def __init__(self, item_table: tf.Variable,
               preprocessing: FeaturePreprocessing, config: UserGANConfig,
               **kwargs):
    super().__init__(**kwargs)
    self.item_table = item_table
    self.features = FeatureEncoder(preprocessing, config.feature_dim)
    self.length = tf.keras.layers.Embedding(config.max_thin + 1,
                                            config.feature_dim)

  def call(self, thin: tf.Tensor, features: Dict[str, tf.Tensor]):
    present = tf.cast(thin > 0, tf.float32)
    count = tf.reduce_sum(present, axis=1)
    summed = tf.reduce_sum(tf.gather(self.item_table, thin) *
                           present[:, :, None], axis=1)
    parts = [summed / tf.maximum(count, 1.0)[:, None],
             self.length(tf.cast(count, tf.int32))]
    if self.features.has_features:
      parts.append(self.features(features, preprocessed=True))
    return tf.concat(parts, axis=-1)


class UserGenerator(tf.keras.Model):
  """G(thin profile, z) -> unit-norm embedding in the query tower's space.

  Args:
    item_embeddings: the trained candidate tower's item matrix
      [num_items + 1, dim] (frozen; it also fixes the output size).
    preprocessing: the user features' preprocessing (the model's own).
    config: sizes and training settings.
  """

  def __init__(self, item_embeddings: np.ndarray,
               preprocessing: FeaturePreprocessing, config: UserGANConfig):
    super().__init__()
    self.noise_dim = config.noise_dim
    self.item_table = tf.Variable(item_embeddings.astype(np.float32),
                                  trainable=False, name="generator_items")
    self.profile = ThinProfileEncoder(self.item_table, preprocessing, config)
    self.body = mlp((config.hidden, config.hidden),
                    item_embeddings.shape[1], "user_generator_mlp")

  def call(self, thin, features, noise):
    joint = tf.concat([self.profile(thin, features), noise], axis=-1)
    return tf.math.l2_normalize(self.body(joint), -1)


class QueryDiscriminator(tf.keras.Model):
  """D(query embedding, thin profile) -> real/fake logit."""

  def __init__(self, generator: UserGenerator,
               preprocessing: FeaturePreprocessing, config: UserGANConfig):
    super().__init__()
    self.profile = ThinProfileEncoder(generator.item_table, preprocessing,
                                      config)
    self.body = mlp((config.hidden,), 1, "query_discriminator_mlp")

  def call(self, query, thin, features):
    joint = tf.concat([query, self.profile(thin, features)], axis=-1)
    return tf.squeeze(self.body(joint), -1)


def _positions(first, step, count, low, high):
  """[B, count] positions first + step * j (per-row `first` and `step`)
  and whether they lie in [low, high)."""
  positions = first[:, None] + step[:, None] * tf.range(count)[None, :]
  valid = (positions >= low[:, None]) & (positions < high[:, None])
  return tf.where(valid, positions, 0), valid


def episodes(histories: Dict[str, tf.Tensor], users: tf.Tensor,
             config: UserGANConfig, seed: tf.Tensor):
  """Simulated thin profiles of `users` (a pure function of `seed`):
  thin items [B, max_thin] (latest first, 0-padded) and the items that
  follow [B, positives] (0-padded).

  A share `new_user_share` of episodes keeps no item (a new user known by
  features only); the others keep 1..max_thin; `returning_share` of them
  keep the user's first items and look at the latest ones."""
  size = tf.shape(users)[0]
  lengths = tf.gather(histories["lengths"], users)
  draws = tf.random.stateless_uniform([size, 3], seed)
  kept = 1 + tf.cast(draws[:, 0] * config.max_thin, tf.int32)
  kept = tf.where(draws[:, 1] < config.new_user_share, 0, kept)
  kept = tf.minimum(kept, lengths - 1)
  returning = draws[:, 2] < config.returning_share
  cut = kept + tf.cast(
      tf.random.stateless_uniform([size], seed + 1) *
      tf.cast(lengths - kept, tf.float32), tf.int32)
  cut = tf.where(returning, kept, tf.minimum(cut, lengths - 1))
  thin_at, thin_ok = _positions(cut - 1, -tf.ones_like(cut),
                                config.max_thin, cut - kept, cut)
  next_at, next_ok = _positions(
      tf.where(returning, lengths - 1, cut), tf.where(returning, -1, 1),
      config.positives, cut, lengths)
  rows = tf.gather(histories["items"], users)
  take = lambda at, ok: tf.where(ok, tf.gather(rows, at, batch_dims=1), 0)
  return take(thin_at, thin_ok), take(next_at, next_ok)


def _catalogue_log_probs(query, item_table, exclude, temperature):
  """log softmax over the catalogue of query . item / temperature, the
  padding item and the `exclude`d items [B, n] (0 = none) left out."""
  logits = tf.matmul(query, item_table, transpose_b=True) / temperature
  rows = tf.repeat(tf.range(tf.shape(exclude)[0]), tf.shape(exclude)[1])
  # [B, items] 0/1 by scatter (one-hot would be [B, n, items]); the
  # padding item 0 is always among the excluded.
  mask = tf.tensor_scatter_nd_max(
      tf.zeros_like(logits),
      tf.stack([rows, tf.reshape(exclude, [-1])], axis=1),
      tf.ones_like(rows, tf.float32))
  mask = tf.maximum(mask, tf.one_hot(tf.zeros_like(exclude[:, 0]),
                                     tf.shape(logits)[1]))
  return tf.nn.log_softmax(logits - 1e9 * mask)


def generator_terms(generated, teacher, thin, following, item_table,
                    config: UserGANConfig):
  """Per-example non-adversarial terms of G's loss, weighted: the ranking
  of the items that follow the thin profile, the teacher's catalogue
  scores distilled (KL) and the cosine anchor to the teacher."""
  log_probs = _catalogue_log_probs(generated, item_table, thin,
                                   config.temperature)
  teacher_log_probs = _catalogue_log_probs(teacher, item_table, thin,
                                           config.temperature)
  present = tf.cast(following > 0, tf.float32)
  ranking = -tf.reduce_sum(tf.gather(log_probs, following, batch_dims=1) *
                           present, axis=1) / tf.maximum(
                               tf.reduce_sum(present, axis=1), 1.0)
  distillation = tf.reduce_sum(tf.exp(teacher_log_probs) * (
      teacher_log_probs - log_probs), axis=1)
  return (config.ranking_weight * ranking +
          config.distillation_weight * distillation +
          config.anchor_weight * losses.cosine_anchor(generated, teacher))


class UserGANTrainer(loop.AdversarialLoop):
  """Trains a `UserGenerator` against a `QueryDiscriminator`.

  Args:
    config: settings.
    teacher_queries: the trained query tower's embedding of every user's
      full profile [num_users + 1, dim].
    item_embeddings: the candidate tower's item matrix [num_items + 1, dim].
    histories: the users' interactions in time order.
    user_features: the users' encoded features {name: [num_users + 1, ...]}.
    preprocessing: what encoded them (the model's user preprocessing).
    seed: fixes initialisation and every episode.
    strategy, checkpoint_dir, logdir: as for `loop.AdversarialLoop`.
  """

  def __init__(self, config: UserGANConfig, teacher_queries: np.ndarray,
               item_embeddings: np.ndarray, histories: UserHistories,
               user_features: Dict[str, np.ndarray],
               preprocessing: FeaturePreprocessing, seed: int = 0,
               strategy: Optional[tf.distribute.Strategy] = None,
               checkpoint_dir: Optional[str] = None,
               logdir: Optional[str] = None):
    self.config = config
    self.item_embeddings, self.preprocessing = item_embeddings, preprocessing
    self.teacher = tf.constant(teacher_queries, tf.float32)
    self.histories = {"items": tf.constant(histories.items),
                      "lengths": tf.constant(histories.lengths)}
    self.features = {k: tf.constant(v) for k, v in user_features.items()}
    dense = np.flatnonzero(histories.lengths >= config.min_history)
    held = np.random.default_rng(seed).random(len(dense)) < (
        config.validation_users)
    # Dense users it never learns from, to choose the blend for new users.
    self.validation_users = dense[held].astype(np.int32)
    self.train_users = tf.constant(dense[~held].astype(np.int32))
    super().__init__(loop.LoopSettings.of(
        "user generator", config, config.batch_size,
        remedy="Lower user_gan.learning_rate or "
               "user_gan.adversarial_weight."),
                     seed, strategy, checkpoint_dir, logdir)

  def create(self):
    """The generator, discriminator and their optimizers, built at the
    seed."""
    generator = UserGenerator(self.item_embeddings, self.preprocessing,
                              self.config)
    discriminator = QueryDiscriminator(generator, self.preprocessing,
                                       self.config)
    batch = self.global_batch(tf.constant(0, tf.int64))
    discriminator(generator(batch["thin"], batch["features"], batch["noise"]),
                  batch["thin"], batch["features"])
    return self.adversaries(generator, discriminator,
                            self.config.learning_rate,
                            self.config.learning_rate)

  def global_batch(self, step: tf.Tensor):
    """One step's users, their episodes and features (a function of
    (seed, step))."""
    seed = tf.stack([tf.cast(self.seed, tf.int64), step])
    pick = tf.random.stateless_uniform(
        [self.config.batch_size], seed, 0, tf.shape(self.train_users)[0],
        dtype=tf.int32)
    users = tf.gather(self.train_users, pick)
    thin, following = episodes(self.histories, users, self.config, seed + 1)
    # seed + 1 and seed + 2 feed the episodes; noise gets its own stream.
    return {"user": users, "thin": thin, "following": following,
            "features": {k: tf.gather(v, users)
                         for k, v in self.features.items()},
            "noise": tf.random.stateless_normal(
                [self.config.batch_size, self.config.noise_dim], seed + 3)}

  def replica_step(self, batch):
    """A discriminator update, then a generator update; the metrics."""
    cfg, average = self.config, self.average
    thin, features = batch["thin"], batch["features"]
    teacher = tf.gather(self.teacher, batch["user"])
    with tf.GradientTape() as tape:
      generated = self.generator(thin, features, batch["noise"])
      real_logits = self.discriminator(teacher, thin, features)
      fake_logits = self.discriminator(generated, thin, features)
      d_loss = average(losses.gan_loss(real_logits,
                                       fake_logits).discriminator_loss)
    self.apply(tape, d_loss, self.discriminator, self.d_optimizer)
    with tf.GradientTape() as tape:
      generated = self.generator(thin, features, batch["noise"])
      fake_logits = self.discriminator(generated, thin, features)
      terms = generator_terms(generated, teacher, thin, batch["following"],
                              self.generator.item_table, cfg)
      g_loss = average(losses.gan_loss(
          real_logits, fake_logits, generator_terms=terms,
          adversarial_weight=cfg.adversarial_weight).generator_loss)
    self.apply(tape, g_loss, self.generator, self.g_optimizer)
    return {"d_loss": d_loss, "g_loss": g_loss,
            "d_real": average(tf.sigmoid(real_logits)),
            "d_fake": average(tf.sigmoid(fake_logits))}

  def train(self, steps: Optional[int] = None,
            after_step: Optional[Callable[[int], None]] = None
            ) -> Dict[str, float]:
    """Trains until `steps` (default config.steps); the last metrics."""
    if not int(tf.size(self.train_users)):
      raise ValueError(f"no user has {self.config.min_history} or more "
                       f"training interactions to learn thin profiles from.")
    return super().train(steps, after_step)


class ThinUserQuery(tf.keras.layers.Layer):
  """The query for users with short histories: the generated embedding
  blended with the tower's, by history length.

  q = normalize(w[b] * mean_z G(thin, z) + (1 - w[b]) * tower query), where
  b is the bucket of the history length (`BLEND_BOUNDARIES`: none, 1-5,
  6-19, 20+) and `weights` [4] the blend weights. The noise draws are
  fixed, so the result is deterministic, in training as in serving.

  Call it on (history [B, L] latest first, 0-padded; encoded features;
  tower query [B, dim]).
  """

  def __init__(self, generator: UserGenerator, weights: Sequence[float],
               max_thin: int, samples: int = 4, seed: int = 0, **kwargs):
    super().__init__(**kwargs)
    self.generator, self.max_thin = generator, max_thin
    self.blend_weights = tf.Variable(np.asarray(weights, np.float32),
                                     trainable=False, name="blend_weights")
    self.noise = tf.Variable(tf.random.stateless_normal(
        [samples, generator.noise_dim], [seed, 7]), trainable=False,
        name="blend_noise")

  def generated(self, thin: tf.Tensor, features) -> tf.Tensor:
    """Mean generated query over the fixed noise draws, re-normalised."""
    samples = tf.shape(self.noise)[0]
    size = tf.shape(thin)[0]
    tiled = tf.nest.map_structure(lambda t: tf.repeat(t, samples, axis=0),
                                  (thin, features))
    noise = tf.tile(self.noise, [size, 1])
    queries = self.generator(tiled[0], tiled[1], noise)
    mean = tf.reduce_mean(tf.reshape(queries, [size, samples, -1]), axis=1)
    return tf.math.l2_normalize(mean, -1)

  def call(self, history, features, tower_query):
    # Items first (stable, so the latest stay first), padding last: a
    # request's liked items may have "" or unknown ids anywhere.
    history = tf.gather(history, tf.argsort(
        tf.cast(history <= 0, tf.int32), axis=1, stable=True), batch_dims=1)
    length = tf.reduce_sum(tf.cast(history > 0, tf.int32), axis=1)
    bucket = tf.searchsorted(tf.constant(BLEND_BOUNDARIES, tf.int32), length,
                             side="right")
    weight = tf.gather(self.blend_weights, bucket)[:, None]
    thin = history[:, :self.max_thin]
    blended = (weight * self.generated(thin, features) +
               (1.0 - weight) * tower_query)
    return tf.math.l2_normalize(blended, -1)


def blend_bucket(lengths: np.ndarray) -> np.ndarray:
  """The `ThinUserQuery` bucket of each history length."""
  return np.searchsorted(BLEND_BOUNDARIES, lengths, side="right")


def new_user_episodes(trainer: UserGANTrainer):
  """Features-only episodes of the trainer's validation users, scored as
  `--cold-users` scores a new user: on what they took first (their oldest
  `positives` stored items; for users with more than the stored 256, the
  oldest of those). Returns (users, items [B, positives], 0-padded).

  Items after a random cut in the middle of a history, as the training
  episodes use, made a poor stand-in: with them validation chose blend
  weights of 0.5-0.75 for new users that cost new users 15.7% Recall@20 on
  the test split (--cold-users 0.1, 5 seeds).
  """
  users = tf.constant(trainer.validation_users)
  first = tf.gather(trainer.histories["items"], users)
  return trainer.validation_users, first[:, :trainer.config.positives].numpy()


def recall_of_following(queries: np.ndarray, item_table: np.ndarray,
                        following: np.ndarray, k: int) -> float:
  """Mean Recall@k of each row's `following` items (0 pads) among the whole
  catalogue (column 0, the padding item, never ranks).

  >>> recall_of_following(np.eye(2)[1:], np.eye(2), np.array([[1, 0]]), k=1)
  1.0
  """
  scores = queries @ item_table.T
  scores[:, 0] = -np.inf
  top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
  present = following > 0
  hits = (following[:, :, None] == top[:, None, :]).any(-1) & present
  counts = present.sum(axis=1)
  rows = counts > 0
  return float((hits.sum(axis=1)[rows] / counts[rows]).mean())
