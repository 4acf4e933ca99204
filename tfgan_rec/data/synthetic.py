"""A seeded synthetic interaction generator with planted structure.

Users and items get latent factors; an item's chance of being chosen by a
user is softmax(affinity * u.v + popularity bias) with a power-law bias, so
item popularity is long-tailed and preferences are learnable. User features
(age, gender, occupation) and item features (genres, title words, year) are
noisy functions of the factors, so features carry signal for cold users and
items. Ratings are 1..5 from the same affinity. Sampling is vectorised over
chunks of users.
"""
import dataclasses
from typing import Optional

import numpy as np
import pandas as pd

from tfgan_rec.data.dataset import Interactions

GENRE_NAMES = ("action", "comedy", "drama", "horror", "romance", "scifi",
               "thriller", "family")
OCCUPATIONS = ("student", "engineer", "artist", "doctor", "writer", "other")


@dataclasses.dataclass
class SyntheticConfig:
  """Size and structure of a synthetic dataset."""
  num_interactions: int = 100_000
  num_users: int = 0  # 0: derived from num_interactions
  num_items: int = 0  # 0: derived from num_interactions
  factors: int = 8
  affinity: float = 2.5
  popularity_exponent: float = 0.8
  seed: int = 0


def _sizes(config: SyntheticConfig):
  n = config.num_interactions
  users = config.num_users or max(30, n // 40)
  items = config.num_items or max(50, int(6 * np.sqrt(n)))
  return users, items


def _activity(rng, num_users: int, total: int, num_items: int) -> np.ndarray:
  """Per-user interaction counts: heavy-tailed, at least 3, about `total`."""
  raw = rng.pareto(1.5, num_users) + 1.0
  low, high = 3, max(3, num_items // 4)
  # Rescale until the clipped counts add up to the requested total.
  scale = total / raw.sum()
  for _ in range(20):
    counts = np.clip(np.round(raw * scale), low, high)
    scale *= total / max(counts.sum(), 1)
  return counts.astype(np.int64)


def _sample_items(rng, logits_fn, counts, num_items, chunk=512):
  """Samples counts[u] distinct items for each user u, without replacement
  (Gumbel top-k: the top items of logits + Gumbel noise)."""
  users, items = [], []
  for start in range(0, len(counts), chunk):
    rows = np.arange(start, min(start + chunk, len(counts)))
    perturbed = logits_fn(rows) + rng.gumbel(size=(len(rows), num_items))
    most = int(counts[rows].max())
    top = np.argpartition(-perturbed, most - 1, axis=1)[:, :most]
    order = np.argsort(-np.take_along_axis(perturbed, top, axis=1), axis=1)
    top = np.take_along_axis(top, order, axis=1)
    keep = np.arange(most)[None, :] < counts[rows][:, None]
    users.append(np.broadcast_to(rows[:, None], top.shape)[keep])
    items.append(top[keep])
  return np.concatenate(users), np.concatenate(items)


def _user_features(rng, user_factors) -> pd.DataFrame:
  n = len(user_factors)
  age = np.clip(35 + 10 * user_factors[:, 0] + rng.normal(0, 4, n), 13, 80)
  gender = np.where(user_factors[:, 1] + rng.normal(0, 0.5, n) > 0, "F", "M")
  occupation = np.array(OCCUPATIONS)[
      np.argmax(user_factors[:, 2:2 + len(OCCUPATIONS)] +
                rng.normal(0, 0.5, (n, len(OCCUPATIONS))), axis=1)]
  return pd.DataFrame({"age": age.astype(int).astype(str), "gender": gender,
                       "occupation": occupation})


def _item_features(rng, item_factors) -> pd.DataFrame:
  n = len(item_factors)
  genre_scores = item_factors[:, :len(GENRE_NAMES)] + rng.normal(0, 0.3, (
      n, len(GENRE_NAMES)))
  top = np.argsort(-genre_scores, axis=1)[:, :2]
  genres = ["|".join(GENRE_NAMES[g] for g in row) for row in top]
  words = [f"{GENRE_NAMES[row[0]]}word{rng.integers(4)} tale{rng.integers(50)}"
           for row in top]
  year = np.clip(1995 + 8 * item_factors[:, -1] + rng.normal(0, 2, n), 1930,
                 2025)
  return pd.DataFrame({"title": words, "genres": genres,
                       "year": year.astype(int).astype(str)})


def make_synthetic(config: Optional[SyntheticConfig] = None) -> Interactions:
  """Generates a dataset; the same config (and seed) gives the same data.

  >>> data = make_synthetic(SyntheticConfig(num_interactions=2000, seed=1))
  >>> sorted(data.ratings.columns)
  ['item_id', 'rating', 'timestamp', 'user_id']
  """
  config = config or SyntheticConfig()
  rng = np.random.default_rng(config.seed)
  num_users, num_items = _sizes(config)
  dim = max(config.factors, len(GENRE_NAMES) + 1)
  user_factors = rng.normal(size=(num_users, dim))
  item_factors = rng.normal(size=(num_items, dim))
  ranks = rng.permutation(num_items) + 1
  popularity = -config.popularity_exponent * np.log(ranks)
  scale = config.affinity / np.sqrt(dim)

  def logits(rows):
    return scale * user_factors[rows] @ item_factors.T + popularity

  counts = _activity(rng, num_users, config.num_interactions, num_items)
  user, item = _sample_items(rng, logits, counts, num_items)
  affinity = np.einsum("ij,ij->i", user_factors[user], item_factors[item])
  z_score = (affinity - affinity.mean()) / (affinity.std() + 1e-9)
  rating = np.clip(np.round(3.5 + 0.9 * z_score +
                            rng.normal(0, 0.6, len(user))), 1, 5)
  timestamp = 8.8e8 + rng.random(len(user)) * 2.0e7
  ratings = pd.DataFrame({"user_id": np.char.add("u", user.astype(str)),
                          "item_id": np.char.add("i", item.astype(str)),
                          "rating": rating, "timestamp": timestamp.round()})
  users = _user_features(rng, user_factors)
  users.index = pd.Index(np.char.add("u", np.arange(num_users).astype(str)),
                         name="user_id")
  items = _item_features(rng, item_factors)
  items.index = pd.Index(np.char.add("i", np.arange(num_items).astype(str)),
                         name="item_id")
  used_users = users.loc[users.index.isin(ratings["user_id"])]
  return Interactions(ratings, used_users, items,
                      f"synthetic (seed {config.seed}, "
                      f"{len(ratings):,} interactions)")
