"""Keras layers of the two towers: feature encoding, query and candidate."""
from typing import Dict, List, Sequence

import tensorflow as tf

from tfgan_rec.data import features as features_lib


class FeatureEncoder(tf.keras.layers.Layer):
  """Embeds a dict of encoded features (see `data.features`) into one vector.

  Categorical features get an embedding, token bags the mean of their token
  embeddings, numeric features pass through.

  >>> specs = [features_lib.FeatureSpec("gender", "categorical", 3)]
  >>> FeatureEncoder(specs, dim=4)({"gender": tf.constant([1, 2])}).shape
  TensorShape([2, 4])
  """

  def __init__(self, specs: Sequence[features_lib.FeatureSpec], dim: int,
               **kwargs):
    super().__init__(**kwargs)
    self.specs = list(specs)
    self.embeddings = {spec.name: _feature_embedding(spec, dim)
                       for spec in self.specs
                       if spec.kind != features_lib.NUMERIC}

  def call(self, features: Dict[str, tf.Tensor]) -> tf.Tensor:
    parts = []
    for spec in self.specs:
      value = features[spec.name]
      if spec.kind == features_lib.NUMERIC:
        parts.append(tf.cast(value, tf.float32)[:, None])
      else:
        parts.append(self.embeddings[spec.name](value))
    return tf.concat(parts, axis=-1)


def _feature_embedding(spec: features_lib.FeatureSpec,
                       dim: int) -> tf.keras.layers.Layer:
  """One vector per categorical value; the mean vector of a token bag."""
  layer = (tf.keras.layers.Embedding if spec.kind == features_lib.CATEGORICAL
           else PooledEmbedding)
  return layer(spec.vocab_size, dim, name=f"{spec.name}_embedding")


class PooledEmbedding(tf.keras.layers.Layer):
  """Per row, the mean embedding of a bag of ids (0 pads; an empty bag is 0).

  Computed as a sparse [rows, vocabulary] x [vocabulary, dim] matmul, whose
  gradient is one dense [vocabulary, dim] tensor. Gathering [rows, length,
  dim] embeddings instead gives a gradient slice per position (51,200 for a
  batch of 512 100-item histories) that the optimizer has to sum by id every
  step, which took a fifth of a training step. The dense gradient costs
  vocabulary x dim per step instead: small for token vocabularies and
  catalogues of tens of thousands of items (19K at 10M interactions), not
  for catalogues of millions.

  >>> PooledEmbedding(10, 4)(tf.constant([[1, 2, 0], [0, 0, 0]])).shape
  TensorShape([2, 4])
  """

  def __init__(self, vocabulary_size: int, dim: int, **kwargs):
    super().__init__(**kwargs)
    self.vocabulary_size, self.dim = vocabulary_size, dim

  def build(self, input_shape):
    # "uniform", as tf.keras.layers.Embedding.
    self.embeddings = self.add_weight(
        "embeddings", [self.vocabulary_size, self.dim], initializer="uniform")
    super().build(input_shape)

  def call(self, ids: tf.Tensor) -> tf.Tensor:
    ids = tf.cast(ids, tf.int64)
    present = ids > 0
    positions = tf.where(present)
    counts = tf.reduce_sum(tf.cast(present, tf.float32), axis=1)
    bags = tf.sparse.SparseTensor(
        tf.stack([positions[:, 0], tf.gather_nd(ids, positions)], axis=1),
        tf.gather(1.0 / tf.maximum(counts, 1.0), positions[:, 0]),
        tf.stack([tf.shape(ids, out_type=tf.int64)[0],
                  tf.constant(self.vocabulary_size, tf.int64)]))
    return tf.sparse.sparse_dense_matmul(bags, self.embeddings)


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
    self.history_embedding = PooledEmbedding(num_items + 1, embedding_dim)
    self.features = FeatureEncoder(specs, feature_dim)
    self.projection = mlp(hidden, embedding_dim, "query_mlp")

  def call(self, user: tf.Tensor, user_features: Dict[str, tf.Tensor],
           history: tf.Tensor) -> tf.Tensor:
    parts = [self.id_embedding(user), self.history_embedding(history)]
    if self.features.specs:
      parts.append(self.features(user_features))
    return tf.math.l2_normalize(self.projection(tf.concat(parts, -1)), -1)
