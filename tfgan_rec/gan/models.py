"""Conditional generators and discriminator over users' interaction vectors.

The condition is the user's side features plus (part of) their history; the
interaction generator maps (condition, noise) to preference logits over the
whole catalogue (CFGAN/RAGAN family). Keeping the noise and dropping history
out stops the generator from collapsing into an autoencoder of the full
profile. The release generator (`ReleaseGenerator`, trained with DP in
`gan/private.py`) is conditioned on features alone.
"""
from typing import Dict, Optional, Sequence

import numpy as np
import tensorflow as tf

from tfgan_rec.layers import FeatureEncoder, FeaturePreprocessing, mlp


class ConditionEncoder(tf.keras.layers.Layer):
  """(raw user features, partial history vector) -> one condition vector.

  The condition is {"features": {name: string [batch]}, "history": float
  [batch, num_items + 1]}; the features go through a `FeatureEncoder` over
  the shared user `FeaturePreprocessing`. With `history=False` (the private
  release generator) there is no history layer at all: the condition is
  the features alone, and "history" must be an empty [batch, 0] tensor (it
  only carries the batch size when there are no features).
  """

  def __init__(self, preprocessing: FeaturePreprocessing, feature_dim: int,
               hidden: int, history: bool = True, **kwargs):
    super().__init__(**kwargs)
    self.features = FeatureEncoder(preprocessing, feature_dim)
    self.history = (tf.keras.layers.Dense(hidden, activation="gelu")
                    if history else None)

  def call(self, condition: Dict[str, tf.Tensor]) -> tf.Tensor:
    history = condition["history"]
    parts = [self.history(history) if self.history else history[:, :0]]
    if self.features.has_features:
      parts.append(self.features(condition["features"]))
    return tf.concat(parts, axis=-1)


class Generator(tf.keras.Model):
  """G(condition, z) -> preference logits [batch, num_items + 1]; their
  sigmoid is the preference score D sees and `generate` averages, the
  logits themselves are what the softmax ranking term ranks.

  >>> no_features = FeaturePreprocessing({})
  >>> g = Generator(num_items=5, preprocessing=no_features, noise_dim=4)
  >>> g({"features": {}, "history": tf.zeros([2, 6])}, tf.zeros([2, 4])).shape
  TensorShape([2, 6])
  """

  def __init__(self, num_items: int, preprocessing: FeaturePreprocessing,
               noise_dim: int = 32, hidden: Sequence[int] = (256,),
               feature_dim: int = 8, history: bool = True,
               item_to_item: bool = False, **kwargs):
    super().__init__(**kwargs)
    self.noise_dim = noise_dim
    self.condition = ConditionEncoder(preprocessing, feature_dim, hidden[0],
                                      history)
    self.body = mlp(hidden, num_items + 1, "generator_mlp")
    # A linear item-to-item path beside the MLP (wide & deep): full rank,
    # as item-item models (EASE, transition counts) are.
    self.item_to_item = (tf.keras.layers.Dense(num_items + 1, use_bias=False,
                                               kernel_initializer="zeros")
                         if item_to_item and history else None)

  def call(self, condition, noise, training=None):
    joint = tf.concat([self.condition(condition), noise], axis=-1)
    logits = self.body(joint, training=training)
    if self.item_to_item is not None:
      logits += self.item_to_item(condition["history"])
    return logits


class Discriminator(tf.keras.Model):
  """D(vector, condition) -> real/fake logit [batch]."""

  def __init__(self, num_items: int, preprocessing: FeaturePreprocessing,
               hidden: Sequence[int] = (256,), feature_dim: int = 8,
               history: bool = True, **kwargs):
    super().__init__(**kwargs)
    self.condition = ConditionEncoder(preprocessing, feature_dim, hidden[0],
                                      history)
    self.vector = tf.keras.layers.Dense(hidden[0], activation="gelu")
    self.body = mlp(hidden, 1, "discriminator_mlp")

  def call(self, vector, condition, training=None):
    joint = tf.concat([self.vector(vector), self.condition(condition)], -1)
    return tf.squeeze(self.body(joint, training=training), -1)


# The release generator's initial output kernel scale (variance, relative
# to Glorot's): it starts at the popularity prior, its noise nearly unused.
RELEASE_OUTPUT_SCALE = 0.01


class ReleaseGenerator(tf.keras.Model):
  """G(features, z) -> logits over the catalogue [batch, num_items + 1]
  (the padding item 0 at -1e9): a synthetic user's items are drawn from
  softmax(logits) without replacement, as many as their profile length
  (`gan/private.py: draw_rows`).

  The output layer's bias starts at the released log item popularity
  (`prior`) and its kernel near 0, so training starts from independent
  draws by popularity and the adversarial game only has to add which
  items go together (through the noise). Started from uniform logits, the
  generator got to the real popularity slowly and no further (MovieLens
  100K, 600 steps: EASE fitted on its data 0.061 against 0.110 with the
  prior).

  Args:
    num_items: the catalogue's size.
    preprocessing: of the (released) user features.
    noise_dim, hidden, feature_dim: the sizes.
    prior: initial logits [num_items + 1]; None: zeros.
  """

  def __init__(self, num_items: int, preprocessing: FeaturePreprocessing,
               noise_dim: int = 32, hidden: Sequence[int] = (256,),
               feature_dim: int = 8, prior: Optional[np.ndarray] = None,
               **kwargs):
    super().__init__(**kwargs)
    self.noise_dim = noise_dim
    self.condition = ConditionEncoder(preprocessing, feature_dim, hidden[0],
                                      history=False)
    bias = (tf.keras.initializers.Constant(np.asarray(prior, np.float32))
            if prior is not None else "zeros")
    self.body = tf.keras.Sequential(
        [tf.keras.layers.Dense(width, activation="gelu") for width in hidden]
        + [tf.keras.layers.Dense(
            num_items + 1, bias_initializer=bias,
            kernel_initializer=tf.keras.initializers.VarianceScaling(
                RELEASE_OUTPUT_SCALE, "fan_avg", "uniform"))],
        name="release_generator_mlp")
    self.padding = tf.constant([-1e9] + [0.0] * num_items)

  def call(self, condition, noise, training=None):
    joint = tf.concat([self.condition(condition), noise], axis=-1)
    return self.body(joint, training=training) + self.padding
