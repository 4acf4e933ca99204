"""Keras layers of the two towers: the query and the candidate tower.

Both take RAW feature strings ({name: string [batch]}, as in a
`FeatureTable`) and encode them with their `FeatureEncoder`; callers that
already ran the encoder's `FeaturePreprocessing` pass `preprocessed=True`.
"""
from typing import Dict, Sequence

import tensorflow as tf

from tfgan_rec.layers import FeatureEncoder, FeaturePreprocessing
from tfgan_rec.layers import PooledEmbedding, mlp


class CandidateTower(tf.keras.layers.Layer):
  """Item id + content features -> L2-normalised item embedding.

  Items nobody has rated still get a useful embedding from their features;
  `id_dropout` hides the id embedding in training so the tower learns to.
  """

  def __init__(self, num_items: int, preprocessing: FeaturePreprocessing,
               embedding_dim: int, feature_dim: int, hidden: Sequence[int],
               id_dropout: float = 0.0, **kwargs):
    super().__init__(**kwargs)
    self.id_embedding = tf.keras.layers.Embedding(num_items + 1, embedding_dim)
    self.features = FeatureEncoder(preprocessing, feature_dim)
    self.id_dropout = id_dropout
    self.projection = mlp(hidden, embedding_dim, "candidate_mlp")

  def call(self, item: tf.Tensor, item_features: Dict[str, tf.Tensor],
           training=None, preprocessed: bool = False) -> tf.Tensor:
    ids = self.id_embedding(item)
    if training and self.id_dropout:
      keep = tf.random.uniform(tf.shape(item)) >= self.id_dropout
      ids *= tf.cast(keep, ids.dtype)[:, None]
    parts = [ids]
    if self.features.has_features:
      parts.append(self.features(item_features, preprocessed=preprocessed))
    return tf.math.l2_normalize(self.projection(tf.concat(parts, -1)), -1)


class QueryTower(tf.keras.layers.Layer):
  """User id + user features + pooled history -> L2-normalised user embedding.

  The pooled embedding of the items in the user's history is what lets the
  tower serve users with few interactions and users it has never seen (whose
  id is the unknown index 0).
  """

  def __init__(self, num_users: int, num_items: int,
               preprocessing: FeaturePreprocessing, embedding_dim: int,
               feature_dim: int, hidden: Sequence[int], **kwargs):
    super().__init__(**kwargs)
    self.id_embedding = tf.keras.layers.Embedding(num_users + 1, embedding_dim)
    self.history_embedding = PooledEmbedding(num_items + 1, embedding_dim)
    self.features = FeatureEncoder(preprocessing, feature_dim)
    self.projection = mlp(hidden, embedding_dim, "query_mlp")

  def call(self, user: tf.Tensor, user_features: Dict[str, tf.Tensor],
           history: tf.Tensor, preprocessed: bool = False) -> tf.Tensor:
    parts = [self.id_embedding(user), self.history_embedding(history)]
    if self.features.has_features:
      parts.append(self.features(user_features, preprocessed=preprocessed))
    return tf.math.l2_normalize(self.projection(tf.concat(parts, -1)), -1)
