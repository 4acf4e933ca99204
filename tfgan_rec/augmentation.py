"""Generated interactions for sparse and new users, from a trained GAN (or,
as an ablation, from EASE: the same path fed by a teacher).

Users with fewer than `threshold` training interactions (and users known
only by their features, who have none) get the scorer's top
`items_per_user` items they have not interacted with (the GAN's averaged
over `samples` noise draws). Generated rows carry weight `weight` < 1 and a
calibrated rating: the baseline estimate global mean + user bias + item bias
from real ratings, not the generator's (high-skewed) scores.
"""
from typing import Optional

import numpy as np

from scipy import sparse

from tfgan_rec.baselines import EASE, MostPopular, shrunk_means
from tfgan_rec.config import AugmentationConfig, GANConfig
from tfgan_rec.data import EncodedData, Examples, interaction_matrix
from tfgan_rec.evaluate import ScoreFn
from tfgan_rec.gan.trainer import GANData, GANTrainer

USERS_PER_CHUNK = 2048


def train_gan(config: GANConfig, rows: Examples, data: EncodedData,
              seed: int, checkpoint_dir: Optional[str] = None,
              logdir: Optional[str] = None) -> GANTrainer:
  """Trains (or, from `checkpoint_dir`, resumes) the GAN on `rows`."""
  gan_data = GANData.from_rows(rows.user, rows.item, data.num_users,
                               data.num_items, data.user_features,
                               rows.timestamp)
  trainer = GANTrainer(config, gan_data, seed, checkpoint_dir=checkpoint_dir,
                       logdir=logdir)
  trainer.restore()
  trainer.train()
  return trainer


def baseline_ratings(rows: Examples, num_users: int, num_items: int,
                     shrinkage: float = 10.0):
  """Returns rate(user, item) = mean + user bias + item bias (shrunk)."""
  mean = float(rows.rating.mean()) if len(rows.rating) else 0.0
  residual = rows.rating - mean
  item_bias = shrunk_means(rows.item, residual, num_items, shrinkage)
  residual = residual - item_bias[rows.item]
  user_bias = shrunk_means(rows.user, residual, num_users, shrinkage)
  low, high = rows.rating.min(), rows.rating.max()
  return lambda user, item: np.clip(
      mean + user_bias[user] + item_bias[item], low, high).astype(np.float32)


def gan_scorer(trainer: GANTrainer, rows: Examples, data: EncodedData,
               samples: int, stream: int = 0) -> ScoreFn:
  """The interaction GAN's mean generated scores over `samples` noise
  draws (from noise `stream`), conditioned on each user's interactions in
  `rows`. One noise source serves every chunk of users, so chunks draw
  different noise."""
  history = GANData.from_rows(rows.user, rows.item, data.num_users,
                              data.num_items, data.user_features,
                              rows.timestamp)
  rng = trainer.noise_source(stream)
  return lambda users: trainer.generate(users, samples, history=history,
                                        rng=rng)


def noise_agreement(trainer: GANTrainer, rows: Examples, data: EncodedData,
                    config: AugmentationConfig,
                    max_users: int = 500) -> Optional[float]:
  """How much the generator's noise decides what it generates: for (at
  most `max_users` of) the users `generate_interactions` serves, the mean
  share of their top `items_per_user` unseen items that two independent
  single noise draws agree on. 1: the noise is ignored (the generator is a
  function of the condition); 0: it decides everything. None without such
  users."""
  users = thin_users(rows, data.num_users, config.threshold)[:max_users]
  if not len(users) or config.items_per_user <= 0:
    return None
  seen = interaction_matrix(rows.user, rows.item, data.num_users,
                            data.num_items)
  m = min(config.items_per_user, data.num_items)
  first, second = (top_unseen(gan_scorer(trainer, rows, data, 1, stream),
                              seen, users, m) for stream in (1, 2))
  return float(np.mean([len(set(a) & set(b)) / m
                        for a, b in zip(first, second)]))


def thin_users(rows: Examples, num_users: int, threshold: int) -> np.ndarray:
  """The users with fewer than `threshold` interactions in `rows` (none
  included), ascending."""
  counts = np.bincount(rows.user, minlength=num_users + 1)
  return np.flatnonzero(counts[1:] < threshold) + 1


def ease_scorer(rows: Examples, data: EncodedData, l2: float) -> ScoreFn:
  """EASE fitted on `rows`: the teacher whose top items replace the GAN's
  in the same injection path (an ablation of the generator)."""
  matrix = interaction_matrix(rows.user, rows.item, data.num_users,
                              data.num_items)
  ease, popular = EASE(matrix, l2), MostPopular(matrix)
  has_rows = np.asarray(matrix.sum(axis=1)).ravel() > 0

  def score(users: np.ndarray) -> np.ndarray:
    # EASE scores a user with no interactions all zero; they get popular
    # items instead of an arbitrary tie order.
    return np.where(has_rows[users, None], ease.scores(users),
                    popular.scores(users))

  return score


def generate_interactions(score: ScoreFn, rows: Examples, data: EncodedData,
                          config: AugmentationConfig) -> Examples:
  """Interactions (weight `config.weight`) for users below the threshold:
  the `items_per_user` best-scored items each has not interacted with in
  `rows` (the real training interactions)."""
  num_users, num_items = data.num_users, data.num_items
  targets = thin_users(rows, num_users, config.threshold)
  if not len(targets) or config.items_per_user <= 0:
    return Examples.empty()
  seen = interaction_matrix(rows.user, rows.item, num_users, num_items)
  m = min(config.items_per_user, num_items)
  # Chunks of users keep the [users, catalogue] score matrix small.
  top = np.concatenate([
      top_unseen(score, seen, targets[start:start + USERS_PER_CHUNK], m)
      for start in range(0, len(targets), USERS_PER_CHUNK)])
  user = np.repeat(targets, m).astype(np.int32)
  item = top.ravel().astype(np.int32)
  latest = np.zeros(num_users + 1)
  np.maximum.at(latest, rows.user, rows.timestamp)
  rate = baseline_ratings(rows, num_users, num_items)
  return Examples(user, item, rate(user, item), latest[user],
                  np.full(len(user), config.weight, np.float32))


def top_unseen(score: ScoreFn, seen: sparse.csr_matrix, users: np.ndarray,
               m: int) -> np.ndarray:
  """[len(users), m]: each user's m best-scored items not `seen`."""
  scores = np.array(score(users), dtype=np.float32)
  scores[:, 0] = -np.inf
  seen_rows, seen_cols = seen[users].nonzero()
  scores[seen_rows, seen_cols] = -np.inf
  # A copy: the slice alone is a view that would keep the chunk's whole
  # [users, catalogue] partition alive until every chunk is done (this
  # exhausted 24 GiB at 10M interactions).
  return np.argpartition(-scores, m - 1, axis=1)[:, :m].copy()
