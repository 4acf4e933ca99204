"""Data: sources (MovieLens, CSV logs, synthetic), encoding and splits.

`prepare(config, seed)` is the one entry point the CLI and the tuner use.
"""
import dataclasses
import logging

import numpy as np
from scipy import sparse

from tfgan_rec import evaluate
from tfgan_rec.config import DataConfig
from tfgan_rec.data import csv_logs, movielens, splits, synthetic
from tfgan_rec.data.dataset import EncodedData, Interactions, encode
from tfgan_rec.errors import InputError

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Prepared:
  """Encoded data, its split, and the interaction matrices evaluation uses."""
  data: EncodedData
  split: splits.Split
  train: sparse.csr_matrix
  test: sparse.csr_matrix
  fit: sparse.csr_matrix
  validation: sparse.csr_matrix
  slices: dict
  cold_items: np.ndarray


def load_interactions(config: DataConfig, seed: int) -> Interactions:
  """Reads the configured source (CSV logs, MovieLens or synthetic)."""
  if config.ratings or config.dataset == "csv":
    if not config.ratings:
      raise InputError("--dataset csv needs --ratings FILE (user_id,item_id"
                       "[,rating][,timestamp]).")
    ratings = csv_logs.read_ratings(config.ratings)
    users = (csv_logs.read_features(config.users, "user_id", "--users")
             if config.users else None)
    items = (csv_logs.read_features(config.items, "item_id", "--items")
             if config.items else None)
    csv_logs.check_feature_ids(users, ratings["user_id"], config.users,
                               "user_id", "user")
    csv_logs.check_feature_ids(items, ratings["item_id"], config.items,
                               "item_id", "item")
    return Interactions(ratings, users, items, f"CSV {config.ratings}")
  if config.users or config.items:
    raise InputError("--users and --items go with --ratings FILE; add it or "
                     "drop them.")
  if config.dataset == "synthetic":
    return synthetic.make_synthetic(synthetic.SyntheticConfig(
        num_interactions=config.synthetic_interactions, seed=seed))
  if config.dataset == "movielens":
    return movielens.load_movielens(config.data_dir, config.cache_dir)
  raise InputError(f"--dataset '{config.dataset}' is unknown; use movielens, "
                   f"csv or synthetic.")


def prepare(config: DataConfig, seed: int) -> Prepared:
  """Loads, encodes and splits the data; `seed` fixes the sparse users."""
  return prepare_interactions(load_interactions(config, seed), config, seed)


def prepare_interactions(interactions: Interactions, config: DataConfig,
                         seed: int) -> Prepared:
  """Encodes and splits loaded `interactions` as `prepare` does."""
  data = encode(interactions, config.feature_kinds)
  if len(data) < 2:
    raise InputError("need at least two interactions to split into train and "
                     "test.")
  split = splits.make_split(data.user, data.timestamp, config.test_fraction,
                            config.validation_fraction, config.sparse_users,
                            config.sparse_keep, seed)
  cold = np.zeros(0, dtype=np.int32)
  if config.cold_items > 0:
    split, cold = splits.hold_out_items(data.item, split, config.cold_items,
                                        seed)
  train_counts = np.bincount(data.user[split.train],
                             minlength=data.num_users + 1)
  sparse_mask = np.zeros(data.num_users + 1, dtype=bool)
  sparse_mask[1:] = train_counts[1:] <= config.sparse_keep
  matrix = lambda rows: evaluate.interaction_matrix(
      data.user[rows], data.item[rows], data.num_users, data.num_items)
  return Prepared(data, split, train=matrix(split.train),
                  test=matrix(split.test), fit=matrix(split.fit),
                  validation=matrix(split.validation),
                  slices={"sparse": sparse_mask, "dense": ~sparse_mask},
                  cold_items=cold)
