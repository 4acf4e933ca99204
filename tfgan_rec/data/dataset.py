"""The in-memory form of a dataset: raw, and with integer entity indices."""
import dataclasses
import logging
from typing import Dict, Optional

import numpy as np
import pandas as pd

from tfgan_rec.data import features as features_lib

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Interactions:
  """Raw interactions plus optional feature tables, IDs as strings.

  `ratings` has columns user_id, item_id, rating, timestamp; `users` and
  `items` are indexed by user_id / item_id with text feature columns.
  """
  ratings: pd.DataFrame
  users: Optional[pd.DataFrame] = None
  items: Optional[pd.DataFrame] = None
  source: str = ""


@dataclasses.dataclass
class EncodedData:
  """Interactions by entity index, with each entity type's raw features.

  Index 0 is reserved for an unknown user / item; entity i+1 is
  `user_ids[i]` / `item_ids[i]`. The item catalogue is every item that was
  rated or has a feature row; the users are the rated ones plus any that only
  have features.
  """
  user_ids: np.ndarray
  item_ids: np.ndarray
  user: np.ndarray
  item: np.ndarray
  rating: np.ndarray
  timestamp: np.ndarray
  user_features: features_lib.FeatureTable
  item_features: features_lib.FeatureTable
  source: str = ""

  @property
  def num_users(self) -> int:
    return len(self.user_ids)

  @property
  def num_items(self) -> int:
    return len(self.item_ids)

  def __len__(self) -> int:
    return len(self.user)


def _vocabulary(rated: pd.Series, table: Optional[pd.DataFrame]) -> np.ndarray:
  ids = pd.Index(rated.unique())
  if table is not None:
    ids = ids.union(table.index, sort=False)
  return np.array(sorted(ids), dtype=object)


def encode(data: Interactions,
           feature_kinds: Optional[Dict[str, str]] = None) -> EncodedData:
  """Maps string IDs to indices (0 reserved) and aligns the feature tables
  with them."""
  user_ids = _vocabulary(data.ratings["user_id"], data.users)
  item_ids = _vocabulary(data.ratings["item_id"], data.items)
  user_index = pd.Index(user_ids).get_indexer(data.ratings["user_id"]) + 1
  item_index = pd.Index(item_ids).get_indexer(data.ratings["item_id"]) + 1
  return EncodedData(
      user_ids=user_ids,
      item_ids=item_ids,
      user=user_index.astype(np.int32),
      item=item_index.astype(np.int32),
      rating=data.ratings["rating"].to_numpy(np.float32),
      timestamp=data.ratings["timestamp"].to_numpy(np.float64),
      user_features=features_lib.feature_table(data.users, user_ids,
                                                 feature_kinds),
      item_features=features_lib.feature_table(data.items, item_ids,
                                                 feature_kinds),
      source=data.source)
