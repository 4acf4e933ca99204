"""Keras layers of the two towers: the query and the candidate tower.

Both take RAW feature strings ({name: string [batch]}, as in a
`FeatureTable`) and encode them with their `FeatureEncoder`; callers that
already ran the encoder's `FeaturePreprocessing` pass `preprocessed=True`.

A user or item is represented by an id embedding (tower "id"), by its
LightGCN graph embedding (`graph.GraphEmbedding`, shared by both towers;
tower "graph") or both ("id+graph"). The graph rows come from `graph_rows`
(a training step's `GraphEmbedding.step_rows`), else from the layer's
cache.
"""
from typing import Dict, Optional, Sequence

import tensorflow as tf

from tfgan_rec.layers import FeatureEncoder, FeaturePreprocessing
from tfgan_rec.layers import PooledEmbedding, mlp
from tfgan_rec.recommender.graph import GraphEmbedding, GraphRows


class CandidateTower(tf.keras.layers.Layer):
  """Item id + content features -> L2-normalised item embedding.

  Items nobody has rated still get a useful embedding from their features
  (their graph embedding is 0); `id_dropout` hides the id (and graph)
  embedding in training so the tower learns to.
  """

  def __init__(self, num_items: int, preprocessing: FeaturePreprocessing,
               embedding_dim: int, feature_dim: int, hidden: Sequence[int],
               id_dropout: float = 0.0, use_id: bool = True,
               graph: Optional[GraphEmbedding] = None, **kwargs):
    super().__init__(**kwargs)
    self.id_embedding = (tf.keras.layers.Embedding(num_items + 1,
                                                   embedding_dim)
                         if use_id else None)
    self.graph = graph
    self.features = FeatureEncoder(preprocessing, feature_dim)
    self.id_dropout = id_dropout
    self.projection = mlp(hidden, embedding_dim, "candidate_mlp")

  def call(self, item: tf.Tensor, item_features: Dict[str, tf.Tensor],
           training=None, preprocessed: bool = False,
           graph_rows: Optional[GraphRows] = None,
           id_noise: Optional[tf.Tensor] = None) -> tf.Tensor:
    """`id_noise`: the uniform draws [batch] of the id dropout in training
    (default: drawn here)."""
    parts = [] if self.id_embedding is None else [self.id_embedding(item)]
    if self.graph is not None:
      parts.append(self.graph.item_rows(item, graph_rows))
    if training and self.id_dropout:
      if id_noise is None:
        id_noise = tf.random.uniform(tf.shape(item))
      keep = id_noise >= self.id_dropout
      parts = [part * tf.cast(keep, part.dtype)[:, None] for part in parts]
    if self.features.has_features:
      parts.append(self.features(item_features, preprocessed=preprocessed))
    return tf.math.l2_normalize(self.projection(tf.concat(parts, -1)), -1)


class QueryTower(tf.keras.layers.Layer):
  """User id + user features + pooled history -> L2-normalised user embedding.

  The pooled embedding of the items in the user's history is what lets the
  tower serve users with few interactions and users it has never seen (whose
  id is the unknown index 0, whose graph embedding is 0). With
  `use_history` off (an architecture-search option) the history is
  ignored and users are described by id or graph embedding and features.
  """

  def __init__(self, num_users: int, num_items: int,
               preprocessing: FeaturePreprocessing, embedding_dim: int,
               feature_dim: int, hidden: Sequence[int], use_id: bool = True,
               graph: Optional[GraphEmbedding] = None,
               use_history: bool = True, **kwargs):
    super().__init__(**kwargs)
    self.id_embedding = (tf.keras.layers.Embedding(num_users + 1,
                                                   embedding_dim)
                         if use_id else None)
    self.graph = graph
    self.history_embedding = (PooledEmbedding(num_items + 1, embedding_dim)
                              if use_history else None)
    self.features = FeatureEncoder(preprocessing, feature_dim)
    self.projection = mlp(hidden, embedding_dim, "query_mlp")

  def call(self, user: tf.Tensor, user_features: Dict[str, tf.Tensor],
           history: tf.Tensor, preprocessed: bool = False,
           graph_rows: Optional[GraphRows] = None) -> tf.Tensor:
    parts = [] if self.id_embedding is None else [self.id_embedding(user)]
    if self.graph is not None:
      parts.append(self.graph.user_rows(user, graph_rows))
    if self.history_embedding is not None:
      parts.append(self.history_embedding(history))
    if self.features.has_features:
      parts.append(self.features(user_features, preprocessed=preprocessed))
    return tf.math.l2_normalize(self.projection(tf.concat(parts, -1)), -1)

