"""Generated interactions for sparse and new users, from a trained GAN.

Users with fewer than `threshold` training interactions (and users known
only by their features, who have none) get the generator's top
`items_per_user` items they have not interacted with, averaged over
`samples` noise draws. Generated rows carry weight `weight` < 1 and a
calibrated rating: the baseline estimate global mean + user bias + item bias
from real ratings, not the generator's (high-skewed) scores.
"""
from typing import Optional

import numpy as np

from tfgan_rec.baselines import shrunk_means
from tfgan_rec.config import AugmentationConfig, GANConfig
from tfgan_rec.data import EncodedData, Examples
from tfgan_rec.gan.trainer import GANData, GANTrainer

USERS_PER_CHUNK = 2048


def train_gan(config: GANConfig, rows: Examples, data: EncodedData,
              seed: int, checkpoint_dir: Optional[str] = None,
              logdir: Optional[str] = None) -> GANTrainer:
  """Trains (or, from `checkpoint_dir`, resumes) the GAN on `rows`."""
  gan_data = GANData.from_rows(rows.user, rows.item, data.num_users,
                               data.num_items, data.user_features)
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


def generate_interactions(trainer: GANTrainer, rows: Examples,
                          data: EncodedData,
                          config: AugmentationConfig) -> Examples:
  """Generated interactions (weight `config.weight`) for users below the
  threshold, conditioned on `rows` (the real training interactions)."""
  num_users, num_items = data.num_users, data.num_items
  counts = np.bincount(rows.user, minlength=num_users + 1)
  targets = np.flatnonzero(counts[1:] < config.threshold) + 1
  if not len(targets) or config.items_per_user <= 0:
    return Examples.empty()
  history = GANData.from_rows(rows.user, rows.item, num_users, num_items,
                              data.user_features)
  m = min(config.items_per_user, num_items)
  # Chunks of users keep the [users, catalogue] score matrix small.
  rng = trainer.noise_source()
  top = np.concatenate([
      _top_unseen(trainer, history, targets[start:start + USERS_PER_CHUNK],
                  config.samples, m, rng)
      for start in range(0, len(targets), USERS_PER_CHUNK)])
  user = np.repeat(targets, m).astype(np.int32)
  item = top.ravel().astype(np.int32)
  latest = np.zeros(num_users + 1)
  np.maximum.at(latest, rows.user, rows.timestamp)
  rate = baseline_ratings(rows, num_users, num_items)
  return Examples(user, item, rate(user, item), latest[user],
                      np.full(len(user), config.weight, np.float32))


def _top_unseen(trainer: GANTrainer, history: GANData, users: np.ndarray,
                samples: int, m: int, rng) -> np.ndarray:
  """[len(users), m]: each user's m best generated items not in `history`."""
  scores = trainer.generate(users, samples, history=history, rng=rng)
  scores[:, 0] = -np.inf
  seen_rows, seen_cols = _seen(history, users)
  scores[seen_rows, seen_cols] = -np.inf
  # A copy: the slice alone is a view that would keep the chunk's whole
  # [users, catalogue] partition alive until every chunk is done (this
  # exhausted 24 GiB at 10M interactions).
  return np.argpartition(-scores, m - 1, axis=1)[:, :m].copy()


def _seen(history: GANData, users: np.ndarray):
  starts, ends = history.seen_splits[users], history.seen_splits[users + 1]
  lengths = ends - starts
  rows = np.repeat(np.arange(len(users)), lengths)
  offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths,
                                                 lengths)
  return rows, history.seen_items[np.repeat(starts, lengths) + offsets]
