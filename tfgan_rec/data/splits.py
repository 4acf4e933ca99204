"""Per-user temporal splits, simulated sparse users, and what is built from a
split: interaction matrices and weighted training examples."""
import dataclasses
from typing import Dict

import numpy as np
from scipy import sparse

from tfgan_rec.config import DataConfig
from tfgan_rec.data.dataset import EncodedData
from tfgan_rec.errors import InputError

PARTS = ("train", "fit", "validation", "test")


@dataclasses.dataclass
class Split:
  """Row indices into an `EncodedData` for each part of the split.

  `train` is everything the final model may learn from; `fit` and
  `validation` partition `train` (the validation part is each user's latest
  training interactions) for early stopping and tuning; `test` is only for
  the report (empty for a production fit). `sparse_users` are the users whose
  training history was truncated.
  """
  train: np.ndarray
  fit: np.ndarray
  validation: np.ndarray
  test: np.ndarray
  sparse_users: np.ndarray


@dataclasses.dataclass
class Examples:
  """Interactions a model learns from, as columns; `weight` < 1 marks
  generated ones."""
  user: np.ndarray
  item: np.ndarray
  rating: np.ndarray
  timestamp: np.ndarray
  weight: np.ndarray

  @classmethod
  def of_rows(cls, data: EncodedData, rows: np.ndarray) -> "Examples":
    """The real interactions at `rows` of `data`, weight 1."""
    return cls(data.user[rows], data.item[rows], data.rating[rows],
               data.timestamp[rows], np.ones(len(rows), np.float32))

  @classmethod
  def empty(cls) -> "Examples":
    return cls(*(np.zeros(0, dtype) for dtype in (
        np.int32, np.int32, np.float32, np.float64, np.float32)))

  def __len__(self) -> int:
    return len(self.user)

  def is_real(self) -> np.ndarray:
    """Which rows are real interactions (weight 1; generated ones have
    less)."""
    return self.weight >= 1.0

  def real(self) -> "Examples":
    """The real interactions only."""
    keep = self.is_real()
    return Examples(*(getattr(self, f.name)[keep]
                      for f in dataclasses.fields(Examples)))

  def __add__(self, other: "Examples") -> "Examples":
    return Examples(*(np.concatenate([getattr(self, f.name),
                                      getattr(other, f.name)])
                      for f in dataclasses.fields(Examples)))


def interaction_matrix(user: np.ndarray, item: np.ndarray, num_users: int,
                       num_items: int) -> sparse.csr_matrix:
  """Binary (num_users + 1) x (num_items + 1) matrix; row/column 0 unused.

  >>> interaction_matrix(np.array([1, 1]), np.array([2, 2]), 1, 2).toarray()
  array([[0., 0., 0.],
         [0., 0., 1.]], dtype=float32)
  """
  values = np.ones(len(user), dtype=np.float32)
  matrix = sparse.csr_matrix((values, (user, item)),
                             shape=(num_users + 1, num_items + 1))
  matrix.data[:] = 1.0
  return matrix


@dataclasses.dataclass
class SplitData:
  """Encoded data, its split, and what evaluation and training read from it:
  each part's interaction matrix, the user slices and the cold items."""
  data: EncodedData
  split: Split
  matrices: Dict[str, sparse.csr_matrix]  # part name (PARTS) -> matrix
  user_slices: Dict[str, np.ndarray]  # "sparse"/"dense" -> mask over users
  cold_items: np.ndarray

  def examples(self, part: str) -> Examples:
    """The real interactions of one part of the split (`PARTS`)."""
    return Examples.of_rows(self.data, getattr(self.split, part))

  @property
  def has_test(self) -> bool:
    return len(self.split.test) > 0


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
                       seed: int, oldest: bool = False) -> tuple:
  """Keeps only the latest `keep` rows (with `oldest`, the first `keep`) of
  a seeded `fraction` of users.

  Returns (kept_rows, truncated_users).
  """
  users = np.unique(user[rows])
  rng = np.random.default_rng(seed)
  chosen = np.sort(rng.choice(users, int(round(fraction * len(users))),
                              replace=False))
  ordered = _by_user_then_time(user, timestamp, rows)
  size, from_end = _position_from_end(user[ordered])
  position = size - 1 - from_end if oldest else from_end
  drop = np.isin(user[ordered], chosen) & (position >= keep)
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
  warm = lambda rows: rows[~np.isin(item[rows], cold)]  # noqa: E731
  return dataclasses.replace(split, train=warm(split.train),
                             fit=warm(split.fit),
                             validation=warm(split.validation)), cold


def hold_out_users(user: np.ndarray, split: Split, fraction: float,
                   seed: int) -> tuple:
  """Makes a seeded `fraction` of the trained users new: none of their
  interactions is trained on, all of them are test.

  Returns (split without their training rows, new user indices).
  """
  trained = np.unique(user[split.train])
  rng = np.random.default_rng(seed + 2)
  new = np.sort(rng.choice(trained, int(round(fraction * len(trained))),
                           replace=False))
  known = lambda rows: rows[~np.isin(user[rows], new)]  # noqa: E731
  # Every interaction of theirs, including any that sparse-user
  # truncation left out of training.
  theirs = np.flatnonzero(np.isin(user, new))
  return dataclasses.replace(
      split, train=known(split.train), fit=known(split.fit),
      validation=known(split.validation),
      test=np.sort(np.concatenate([known(split.test), theirs]))), new


def make_split(user: np.ndarray, timestamp: np.ndarray, test_fraction: float,
               validation_fraction: float, sparse_fraction: float = 0.0,
               sparse_keep: int = 5, seed: int = 0,
               sparse_oldest: bool = False) -> Split:
  """Test = latest `test_fraction` per user; then sparse users are truncated
  in training; then validation = latest `validation_fraction` of training."""
  rows = np.arange(len(user))
  train, test = temporal_holdout(user, timestamp, rows, test_fraction)
  sparse_users = np.array([], dtype=user.dtype)
  if sparse_fraction > 0:
    train, sparse_users = truncate_histories(
        user, timestamp, train, sparse_fraction, sparse_keep, seed,
        sparse_oldest)
  fit, validation = temporal_holdout(user, timestamp, train,
                                     validation_fraction)
  return Split(train, fit, validation, test, sparse_users)


def _check_size(split: Split, config: DataConfig, source: str) -> None:
  """One line naming what is missing and the fix, when the data are too
  small for the split asked for."""
  advice = ("no user has enough interactions to hold out the latest for "
            "{part}; add interactions, or pass {flag}")
  if config.test_fraction > 0 and not len(split.test):
    raise InputError(f"{source}: too small to split: " + advice.format(
        part="test", flag="--test-fraction 0 (train on everything, no test "
                          "report)."))
  if config.validation_fraction > 0 and not len(split.validation):
    raise InputError(f"{source}: too small to split: " + advice.format(
        part="validation", flag="--validation-fraction 0 (train --epochs "
                                "without early stopping)."))


def split_data(data: EncodedData, config: DataConfig, seed: int) -> SplitData:
  """Splits `data` as `config` says; `seed` fixes the sparse and cold
  choices."""
  if len(data) < 2:
    raise InputError(f"{data.source}: too small: need at least two "
                     f"interactions to train and validate.")
  if config.test_fraction == 0:
    if config.cold_items > 0 or config.cold_users > 0:
      raise InputError("--cold-items and --cold-users measure new items and "
                       "users on the test split, and --test-fraction 0 "
                       "leaves none; drop one of them.")
    # Without a test split nothing measures sparse users: train on all.
    config = dataclasses.replace(config, sparse_users=0.0)
  split = make_split(data.user, data.timestamp, config.test_fraction,
                     config.validation_fraction, config.sparse_users,
                     config.sparse_keep, seed,
                     sparse_oldest=config.sparse_mode == "oldest")
  _check_size(split, config, data.source)
  cold = np.zeros(0, dtype=np.int32)
  if config.cold_items > 0:
    split, cold = hold_out_items(data.item, split, config.cold_items, seed)
  new_users = np.zeros(0, dtype=np.int32)
  if config.cold_users > 0:
    split, new_users = hold_out_users(data.user, split, config.cold_users,
                                      seed)
  matrices = {part: interaction_matrix(
      data.user[rows], data.item[rows], data.num_users, data.num_items)
              for part, rows in ((p, getattr(split, p)) for p in PARTS)}
  return SplitData(data, split, matrices,
                   _user_slices(data, split, new_users, config.sparse_keep),
                   cold_items=cold)


def _user_slices(data: EncodedData, split: Split, new_users: np.ndarray,
                 sparse_keep: int) -> Dict[str, np.ndarray]:
  """Masks over users: sparse (at most `sparse_keep` training
  interactions), dense (more) and, when users were held out, new (none)."""
  train_counts = np.bincount(data.user[split.train],
                             minlength=data.num_users + 1)
  new = np.zeros(data.num_users + 1, dtype=bool)
  new[new_users] = True
  sparse = (train_counts <= sparse_keep) & ~new
  sparse[0] = False
  slices = {"sparse": sparse, "dense": ~sparse & ~new}
  if new.any():
    slices["new"] = new
  return slices
