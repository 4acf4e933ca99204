"""Versioned SavedModels in the layout TF Serving loads.

    <export_dir>/retrieval/<version>/   serving_default(user_id) ->
                                        item_ids [batch, K], scores [batch, K]
    <export_dir>/ranking/<version>/     serving_default(user_id, item_id) ->
                                        score [batch]

Versions are increasing integers shared by both models of one run. Each
version is written to a hidden temporary folder beside it and renamed into
place only when complete, so TF Serving (which only loads all-digit folder
names) never sees a half-written model; an existing version is never
overwritten, and only the newest `keep_versions` are kept.
"""
import logging
import os
import shutil
from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf

from tfgan_rec.recommender.model import TwoStageModel

log = logging.getLogger(__name__)

MODEL_NAMES = ("retrieval", "ranking")


def _string_lookup(ids: np.ndarray) -> tf.keras.layers.StringLookup:
  # num_oov_indices=1 maps unknown IDs to 0 and ids[i] to i + 1, the
  # package's own indexing.
  return tf.keras.layers.StringLookup(vocabulary=list(ids), num_oov_indices=1)


def _ragged_rows(user: np.ndarray, item: np.ndarray, num_users: int):
  order = np.lexsort((item, user))
  counts = np.bincount(user, minlength=num_users + 1)
  splits = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
  return item[order].astype(np.int32), splits


class RetrievalModule(tf.Module):
  """Top-K items for user IDs, the user's training items excluded.

  Unknown user IDs get the most popular items.
  """

  def __init__(self, model: TwoStageModel, user_ids: np.ndarray,
               item_ids: np.ndarray, train_user: np.ndarray,
               train_item: np.ndarray, top_k: int,
               candidates: Optional[np.ndarray] = None):
    super().__init__()
    self.model = model
    self.user_lookup = _string_lookup(user_ids)
    self.item_vocabulary = tf.constant(np.concatenate([[""], item_ids])
                                       .astype(str))
    if candidates is None:
      items = tf.range(model.num_items + 1, dtype=tf.int32)
      candidates = model.item_embeddings(items)
    self.candidates = tf.Variable(candidates, trainable=False,
                                  name="candidates")
    values, splits = _ragged_rows(train_user, train_item, len(user_ids))
    self.seen_values = tf.Variable(values, trainable=False)
    self.seen_splits = tf.Variable(splits, trainable=False)
    counts = np.bincount(train_item, minlength=model.num_items + 1)
    self.popularity = tf.Variable(np.log1p(counts).astype(np.float32),
                                  trainable=False)
    self.top_k = min(top_k, model.num_items)

  def _seen_mask(self, user: tf.Tensor) -> tf.Tensor:
    seen = tf.RaggedTensor.from_row_splits(self.seen_values, self.seen_splits)
    rows = tf.gather(seen, user)
    indices = tf.stack([tf.cast(rows.value_rowids(), tf.int32),
                        rows.flat_values], axis=1)
    shape = tf.stack([tf.shape(user)[0], self.model.num_items + 1])
    return tf.scatter_nd(indices, tf.ones_like(rows.flat_values, tf.bool),
                         shape)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string,
                                              name="user_id")])
  def recommend(self, user_id):
    user = tf.cast(self.user_lookup(user_id), tf.int32)
    learned = tf.matmul(self.model.user_embeddings(user), self.candidates,
                        transpose_b=True)
    popular = tf.broadcast_to(self.popularity, tf.shape(learned))
    scores = tf.where((user > 0)[:, None], learned, popular)
    blocked = self._seen_mask(user)
    blocked = tf.concat([tf.ones_like(blocked[:, :1]), blocked[:, 1:]], 1)
    scores = tf.where(blocked, tf.fill(tf.shape(scores), -np.inf), scores)
    best = tf.math.top_k(scores, k=self.top_k)
    return {"item_ids": tf.gather(self.item_vocabulary, best.indices),
            "scores": best.values}


class RankingModule(tf.Module):
  """Predicted rating for (user ID, item ID) pairs; unknown IDs are scored
  from what is known (features, popularity), never an error."""

  def __init__(self, model: TwoStageModel, user_ids: np.ndarray,
               item_ids: np.ndarray):
    super().__init__()
    self.model = model
    self.user_lookup = _string_lookup(user_ids)
    self.item_lookup = _string_lookup(item_ids)

  @tf.function(input_signature=[
      tf.TensorSpec([None], tf.string, name="user_id"),
      tf.TensorSpec([None], tf.string, name="item_id")])
  def score(self, user_id, item_id):
    user = tf.cast(self.user_lookup(user_id), tf.int32)
    item = tf.cast(self.item_lookup(item_id), tf.int32)
    rating = self.model.predict_rating(self.model.user_embeddings(user),
                                       self.model.item_embeddings(item))
    return {"score": rating}


def versions(model_dir: str) -> List[int]:
  """The complete versions in `model_dir`, oldest first."""
  if not os.path.isdir(model_dir):
    return []
  return sorted(int(name) for name in os.listdir(model_dir) if name.isdigit())


def next_version(export_dir: str) -> int:
  latest = [max(versions(os.path.join(export_dir, name)), default=0)
            for name in MODEL_NAMES]
  return max(latest) + 1


def save_version(module: tf.Module, signatures: Dict[str, object],
                 model_dir: str, version: int) -> str:
  """Writes `module` as `model_dir/version`, atomically."""
  os.makedirs(model_dir, exist_ok=True)
  final = os.path.join(model_dir, str(version))
  if os.path.exists(final):
    raise FileExistsError(f"{final} already exists; versions are never "
                          f"overwritten.")
  staging = os.path.join(model_dir, f".tmp-{version}-{os.getpid()}")
  shutil.rmtree(staging, ignore_errors=True)
  try:
    tf.saved_model.save(module, staging, signatures=signatures)
    os.rename(staging, final)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return final


def prune(model_dir: str, keep: int) -> None:
  for old in versions(model_dir)[:-keep] if keep > 0 else []:
    shutil.rmtree(os.path.join(model_dir, str(old)))


def export_models(model: TwoStageModel, user_ids: np.ndarray,
                  item_ids: np.ndarray, train_user: np.ndarray,
                  train_item: np.ndarray, export_dir: str, top_k: int = 20,
                  keep_versions: int = 3,
                  candidates: Optional[np.ndarray] = None) -> Dict[str, str]:
  """Exports retrieval and ranking as the next version; returns their paths.

  `candidates` ([num_items + 1, dim]) replaces the retrieval index's item
  embeddings, e.g. with generated ones for items nobody has rated.
  """
  version = next_version(export_dir)
  retrieval = RetrievalModule(model, user_ids, item_ids, train_user,
                              train_item, top_k, candidates)
  ranking = RankingModule(model, user_ids, item_ids)
  paths = {
      "retrieval": save_version(
          retrieval, {"serving_default": retrieval.recommend},
          os.path.join(export_dir, "retrieval"), version),
      "ranking": save_version(
          ranking, {"serving_default": ranking.score},
          os.path.join(export_dir, "ranking"), version)}
  for name in MODEL_NAMES:
    prune(os.path.join(export_dir, name), keep_versions)
  return paths
