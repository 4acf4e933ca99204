"""Simple, strong baselines computed on the same split as the model.

- `MostPopular`: every user gets the items most often interacted with.
- `GroupPopular`: popularity within the user's demographic groups.
- `EASE` (Steck, 2019): a closed-form item-item linear model,
  B = I - P diag(1/diag(P)) with P = (X'X + lambda I)^-1, zero diagonal.
- `ItemMeanRating`: the rating baseline for RMSE, an item's mean training
  rating shrunk toward the global mean.
"""
import logging
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import sparse

from tfgan_rec import evaluate

log = logging.getLogger(__name__)

EASE_MAX_ITEMS = 30_000  # X'X is items x items and dense.
EASE_DEFAULT_L2 = 500.0  # lambda when there is no validation split to tune it


class MostPopular:
  """Scores items by their training interaction count.

  >>> from tfgan_rec.data import interaction_matrix
  >>> train = interaction_matrix(np.array([1, 2]), np.array([1, 1]), 2, 2)
  >>> MostPopular(train).scores(np.array([1]))[0].tolist()
  [0.0, 2.0, 0.0]
  """

  def __init__(self, train: sparse.csr_matrix):
    self.counts = np.asarray(train.sum(axis=0), dtype=np.float32).ravel()

  def scores(self, users: np.ndarray) -> np.ndarray:
    return np.broadcast_to(self.counts, (len(users), len(self.counts)))


class GroupPopular:
  """Popularity within the user's demographic groups.

  For each user feature with at most `max_groups` values (numeric features
  in quartiles), the share of each item among the interactions of users
  with the same value, shrunk toward the global share by `shrinkage`
  interactions: (n_gi + a p_i) / (n_g + a); a user's score is the sum over
  features. This is what features alone say about a new user's taste.

  >>> import pandas as pd
  >>> from tfgan_rec.data import features, interaction_matrix
  >>> table = features.feature_table(pd.DataFrame(
  ...     {"gender": ["F", "M", "F"]}, index=["a", "b", "c"]), ["a", "b", "c"])
  >>> train = interaction_matrix(np.array([1, 2]), np.array([1, 2]), 3, 2)
  >>> GroupPopular(train, table, shrinkage=0).scores(np.array([3]))[0].tolist()
  [0.0, 1.0, 0.0]
  """

  def __init__(self, train: sparse.csr_matrix, user_features,
               shrinkage: float = 100.0, max_groups: int = 25):
    counts = np.asarray(train.sum(axis=0), dtype=np.float64).ravel()
    share = counts / max(counts.sum(), 1.0)
    self.groups, self.tables = [], []
    for name, column in user_features.columns.items():
      codes = _group_codes(column, user_features.kinds[name])
      if codes.max() + 1 > max_groups:
        continue
      members = sparse.csr_matrix(
          (np.ones(len(codes)), (codes, np.arange(len(codes)))))
      group_counts = np.asarray((members @ train).todense())
      totals = group_counts.sum(axis=1, keepdims=True)
      self.groups.append(codes)
      self.tables.append(((group_counts + shrinkage * share) /
                          np.maximum(totals + shrinkage, 1e-9))
                         .astype(np.float32))
    self.share = share.astype(np.float32)

  def scores(self, users: np.ndarray) -> np.ndarray:
    total = np.broadcast_to(self.share, (len(users), len(self.share))) * 0.0
    for codes, table in zip(self.groups, self.tables):
      total = total + table[codes[users]]
    return total if self.tables else total + self.share


def _group_codes(column: np.ndarray, kind: str) -> np.ndarray:
  """One integer group per user: the value (numbers in quartiles, missing
  a group of its own)."""
  values = pd.Series(column)
  if kind == "numeric":
    numbers = pd.to_numeric(values.replace("", np.nan), errors="coerce")
    values = pd.qcut(numbers, 4, labels=False, duplicates="drop")
  return pd.factorize(values, use_na_sentinel=False)[0]


class EASE:
  """Embarrassingly Shallow Autoencoder; `l2` is lambda."""

  def __init__(self, train: sparse.csr_matrix, l2: float = EASE_DEFAULT_L2):
    if train.shape[1] > EASE_MAX_ITEMS:
      raise ValueError(f"EASE needs a dense {train.shape[1]}^2 matrix; over "
                       f"{EASE_MAX_ITEMS} items it is skipped.")
    self.train = train
    gram = (train.T @ train).toarray().astype(np.float64)
    gram[np.diag_indices_from(gram)] += l2
    precision = np.linalg.inv(gram)
    weights = precision / -np.diag(precision)
    weights[np.diag_indices_from(weights)] = 0.0
    self.weights = weights.astype(np.float32)

  def scores(self, users: np.ndarray) -> np.ndarray:
    return np.asarray(self.train[users] @ self.weights)


def tune_ease(fit: sparse.csr_matrix, validation: sparse.csr_matrix, k: int,
              grid: Sequence[float] = (50, 100, 200, 500, 1000, 2000)
              ) -> float:
  """Picks lambda by validation Recall@k (the test split is not used)."""
  best_l2, best_recall = grid[0], -1.0
  for l2 in grid:
    model = EASE(fit, l2)
    recall = evaluate.evaluate_retrieval(model.scores, fit, validation,
                                         k)["overall"][f"recall@{k}"]
    log.info("EASE lambda=%g validation recall@%d=%.4f", l2, k, recall)
    if recall > best_recall:
      best_l2, best_recall = l2, recall
  return best_l2


def shrunk_means(index: np.ndarray, values: np.ndarray, size: int,
                 shrinkage: float, prior: float = 0.0) -> np.ndarray:
  """Per index 0..size: (sum of values + shrinkage * prior) / (count +
  shrinkage); `prior` where there is nothing to average."""
  sums = np.bincount(index, values, minlength=size + 1)
  totals = np.bincount(index, minlength=size + 1) + shrinkage
  means = np.full(size + 1, float(prior))
  np.divide(sums + shrinkage * prior, totals, out=means, where=totals > 0)
  return means


class ItemMeanRating:
  """Predicts (sum of item ratings + m * global mean) / (count + m)."""

  def __init__(self, item: np.ndarray, rating: np.ndarray, num_items: int,
               shrinkage: float = 5.0):
    self.global_mean = float(rating.mean())
    self.means = shrunk_means(item, rating, num_items, shrinkage,
                              self.global_mean)

  def predict(self, item: np.ndarray) -> np.ndarray:
    return self.means[item]
