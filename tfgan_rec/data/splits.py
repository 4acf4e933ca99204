"""Per-user temporal splits and simulated sparse users."""
import dataclasses

import numpy as np


@dataclasses.dataclass
class Split:
  """Row indices into an `EncodedData` for each part of the split.

  `train` is everything the final model may learn from; `fit` and
  `validation` partition `train` (the validation part is each user's latest
  training interactions) for early stopping and tuning. `sparse_users` are the
  users whose training history was truncated.
  """
  train: np.ndarray
  fit: np.ndarray
  validation: np.ndarray
  test: np.ndarray
  sparse_users: np.ndarray


def _by_user_then_time(user: np.ndarray, timestamp: np.ndarray,
                       rows: np.ndarray) -> np.ndarray:
  # Ties in time keep file order, so the split is deterministic.
  return rows[np.lexsort((rows, timestamp[rows], user[rows]))]


def _position_from_end(sorted_users: np.ndarray) -> tuple:
  """For rows sorted by user: group size and 0-based position counted from
  the user's latest row."""
  starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
  sizes = np.diff(np.r_[starts, len(sorted_users)])
  size = np.repeat(sizes, sizes)
  position = np.arange(len(sorted_users)) - np.repeat(starts, sizes)
  return size, size - 1 - position


def temporal_holdout(user: np.ndarray, timestamp: np.ndarray, rows: np.ndarray,
                     fraction: float) -> tuple:
  """Splits `rows` into (kept, held_out): the latest `fraction` of each user's
  rows (rounded, at least one kept, none held out for single-row users).

  >>> temporal_holdout(np.array([1, 1, 1, 1, 1]), np.arange(5.0),
  ...                  np.arange(5), 0.4)
  (array([0, 1, 2]), array([3, 4]))
  """
  ordered = _by_user_then_time(user, timestamp, rows)
  size, from_end = _position_from_end(user[ordered])
  held = np.minimum(np.floor(size * fraction + 0.5), size - 1)
  is_held = from_end < held
  return np.sort(ordered[~is_held]), np.sort(ordered[is_held])


def truncate_histories(user: np.ndarray, timestamp: np.ndarray,
                       rows: np.ndarray, fraction: float, keep: int,
                       seed: int) -> tuple:
  """Keeps only the latest `keep` rows of a seeded `fraction` of users.

  Returns (kept_rows, truncated_users).
  """
  users = np.unique(user[rows])
  rng = np.random.default_rng(seed)
  chosen = np.sort(rng.choice(users, int(round(fraction * len(users))),
                              replace=False))
  ordered = _by_user_then_time(user, timestamp, rows)
  _, from_end = _position_from_end(user[ordered])
  drop = np.isin(user[ordered], chosen) & (from_end >= keep)
  return np.sort(ordered[~drop]), chosen


def hold_out_items(item: np.ndarray, split: Split, fraction: float,
                   seed: int) -> tuple:
  """Makes a seeded `fraction` of the trained items cold: their training,
  fit and validation rows are dropped, their test rows kept.

  Returns (split without those rows, cold item indices).
  """
  trained = np.unique(item[split.train])
  rng = np.random.default_rng(seed + 1)
  cold = np.sort(rng.choice(trained, int(round(fraction * len(trained))),
                            replace=False))
  warm = lambda rows: rows[~np.isin(item[rows], cold)]
  return dataclasses.replace(split, train=warm(split.train),
                             fit=warm(split.fit),
                             validation=warm(split.validation)), cold


def make_split(user: np.ndarray, timestamp: np.ndarray, test_fraction: float,
               validation_fraction: float, sparse_fraction: float = 0.0,
               sparse_keep: int = 5, seed: int = 0) -> Split:
  """Test = latest `test_fraction` per user; then sparse users are truncated
  in training; then validation = latest `validation_fraction` of training."""
  rows = np.arange(len(user))
  train, test = temporal_holdout(user, timestamp, rows, test_fraction)
  sparse = np.array([], dtype=user.dtype)
  if sparse_fraction > 0:
    train, sparse = truncate_histories(user, timestamp, train, sparse_fraction,
                                       sparse_keep, seed)
  fit, validation = temporal_holdout(user, timestamp, train,
                                     validation_fraction)
  return Split(train, fit, validation, test, sparse)
