"""Keras layers of the two towers: feature encoding, query and candidate."""
from typing import Dict, List, Sequence

import tensorflow as tf

from tfgan_rec.data import features as features_lib


class FeatureEncoder(tf.keras.layers.Layer):
  """Embeds a dict of encoded features (see `data.features`) into one vector.

  Categorical features get an embedding, token bags a masked mean of token
  embeddings, numeric features pass through.

  >>> specs = [features_lib.FeatureSpec("gender", "categorical", 3)]
  >>> FeatureEncoder(specs, dim=4)({"gender": tf.constant([1, 2])}).shape
  TensorShape([2, 4])
  """

  def __init__(self, specs: Sequence[features_lib.FeatureSpec], dim: int,
               **kwargs):
    super().__init__(**kwargs)
    self.specs = list(specs)
    self.embeddings = {
        spec.name: tf.keras.layers.Embedding(spec.vocab_size, dim,
                                             name=f"{spec.name}_embedding")
        for spec in self.specs if spec.kind != features_lib.NUMERIC}

  def call(self, features: Dict[str, tf.Tensor]) -> tf.Tensor:
    parts = []
    for spec in self.specs:
      value = features[spec.name]
      if spec.kind == features_lib.NUMERIC:
        parts.append(tf.cast(value, tf.float32)[:, None])
      elif spec.kind == features_lib.CATEGORICAL:
        parts.append(self.embeddings[spec.name](value))
      else:
        parts.append(masked_mean(self.embeddings[spec.name](value), value > 0))
    return tf.concat(parts, axis=-1)


def masked_mean(values: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
  """Mean of values[:, j] over positions j where mask is true (0 if none)."""
  weights = tf.cast(mask, values.dtype)[..., None]
  total = tf.reduce_sum(values * weights, axis=-2)
  return total / tf.maximum(tf.reduce_sum(weights, axis=-2), 1.0)


def mlp(units: Sequence[int], output_dim: int, name: str,
        dropout: float = 0.0) -> tf.keras.Sequential:
  layers: List[tf.keras.layers.Layer] = []
  for width in units:
    layers.append(tf.keras.layers.Dense(width, activation="gelu"))
    if dropout:
      layers.append(tf.keras.layers.Dropout(dropout))
  layers.append(tf.keras.layers.Dense(output_dim))
  return tf.keras.Sequential(layers, name=name)


class CandidateTower(tf.keras.layers.Layer):
  """Item id + content features -> L2-normalised item embedding.

  Items nobody has rated still get a useful embedding from their features;
  `id_dropout` hides the id embedding in training so the tower learns to.
  """

  def __init__(self, num_items: int, specs, embedding_dim: int,
               feature_dim: int, hidden: Sequence[int], id_dropout: float = 0.0,
               **kwargs):
    super().__init__(**kwargs)
    self.id_embedding = tf.keras.layers.Embedding(num_items + 1, embedding_dim)
    self.features = FeatureEncoder(specs, feature_dim)
    self.id_dropout = id_dropout
    self.projection = mlp(hidden, embedding_dim, "candidate_mlp")

  def call(self, item: tf.Tensor, item_features: Dict[str, tf.Tensor],
           training=None) -> tf.Tensor:
    ids = self.id_embedding(item)
    if training and self.id_dropout:
      keep = tf.random.uniform(tf.shape(item)) >= self.id_dropout
      ids *= tf.cast(keep, ids.dtype)[:, None]
    parts = [ids]
    if self.features.specs:
      parts.append(self.features(item_features))
    return tf.math.l2_normalize(self.projection(tf.concat(parts, -1)), -1)


class QueryTower(tf.keras.layers.Layer):
  """User id + user features + pooled history -> L2-normalised user embedding.

  The pooled embedding of the items in the user's history is what lets the
  tower serve users with few interactions and users it has never seen (whose
  id is the unknown index 0).
  """

  def __init__(self, num_users: int, num_items: int, specs, embedding_dim: int,
               feature_dim: int, hidden: Sequence[int], **kwargs):
    super().__init__(**kwargs)
    self.id_embedding = tf.keras.layers.Embedding(num_users + 1, embedding_dim)
    self.history_embedding = tf.keras.layers.Embedding(num_items + 1,
                                                       embedding_dim)
    self.features = FeatureEncoder(specs, feature_dim)
    self.projection = mlp(hidden, embedding_dim, "query_mlp")

  def call(self, user: tf.Tensor, user_features: Dict[str, tf.Tensor],
           history: tf.Tensor) -> tf.Tensor:
    pooled = masked_mean(self.history_embedding(history), history > 0)
    parts = [self.id_embedding(user), pooled]
    if self.features.specs:
      parts.append(self.features(user_features))
    return tf.math.l2_normalize(self.projection(tf.concat(parts, -1)), -1)
