"""Embeddings for new items from their content, generated adversarially.

A conditional generator maps (item content features, noise) into the
candidate tower's embedding space; a discriminator tells the embeddings of
warm items (items with training interactions, as the trained tower embeds
them) from generated ones, given the same content. A cosine term ties each
generated embedding to its own warm item's. Items nobody has interacted with
then get generated embeddings instead of ones built on an untrained id.
"""
from typing import Dict, Optional

import numpy as np
import tensorflow as tf

from tfgan_rec.config import ItemGANConfig
from tfgan_rec.data.features import FeatureTable
from tfgan_rec.gan import losses
from tfgan_rec.layers import FeatureEncoder, FeaturePreprocessing, mlp


class ContentGenerator(tf.keras.Model):
  """G(raw content, z) -> unit-norm embedding in the candidate tower's space.

  `preprocessed=True` takes what the content encoder's preprocessing
  returned instead of raw strings.
  """

  def __init__(self, preprocessing: FeaturePreprocessing, embedding_dim: int,
               config: ItemGANConfig):
    super().__init__()
    self.noise_dim = config.noise_dim
    self.content = FeatureEncoder(preprocessing, config.feature_dim)
    self.body = mlp((config.hidden, config.hidden), embedding_dim,
                    "content_generator_mlp")

  def call(self, features: Dict[str, tf.Tensor], noise: tf.Tensor,
           preprocessed: bool = False):
    content = self.content(features, preprocessed=preprocessed)
    joint = tf.concat([content, noise], axis=-1)
    return tf.math.l2_normalize(self.body(joint), -1)


class ContentDiscriminator(tf.keras.Model):
  """D(embedding, raw content) -> real/fake logit."""

  def __init__(self, preprocessing: FeaturePreprocessing,
               config: ItemGANConfig):
    super().__init__()
    self.content = FeatureEncoder(preprocessing, config.feature_dim)
    self.body = mlp((config.hidden,), 1, "content_discriminator_mlp")

  def call(self, embedding, features, preprocessed: bool = False):
    content = self.content(features, preprocessed=preprocessed)
    joint = tf.concat([embedding, content], axis=-1)
    return tf.squeeze(self.body(joint), -1)


def _raw_rows(table: FeatureTable, items) -> Dict[str, tf.Tensor]:
  return {name: tf.gather(tf.constant(column, tf.string), items)
          for name, column in table.columns.items()}


def train_item_generator(item_features: FeatureTable,
                         warm_items: np.ndarray, warm_embeddings: np.ndarray,
                         config: Optional[ItemGANConfig] = None,
                         seed: int = 0) -> ContentGenerator:
  """Fits the content generator on warm items' (content, embedding) pairs.

  `item_features` are the raw item features (row i = item i), from which the
  generator's preprocessing is adapted.
  """
  if not item_features.columns:
    raise ValueError("new-item embeddings need item content features; pass "
                     "--items with feature columns.")
  config = config or ItemGANConfig()
  tf.keras.utils.set_random_seed(seed)
  preprocessing = FeaturePreprocessing.adapted(item_features)
  # The warm items' content, encoded once by the models' own preprocessing.
  content_table = preprocessing(_raw_rows(item_features, warm_items))
  targets = tf.constant(warm_embeddings, tf.float32)
  generator = ContentGenerator(preprocessing, warm_embeddings.shape[1], config)
  discriminator = ContentDiscriminator(preprocessing, config)
  g_opt = tf.keras.optimizers.Adam(config.learning_rate, beta_1=0.5)
  d_opt = tf.keras.optimizers.Adam(config.learning_rate, beta_1=0.5)

  @tf.function
  def step(step_seed):
    pick = tf.random.stateless_uniform([config.batch_size], step_seed, 0,
                                       len(warm_items), dtype=tf.int32)
    content = {k: tf.gather(v, pick) for k, v in content_table.items()}
    real = tf.gather(targets, pick)
    noise = tf.random.stateless_normal([config.batch_size, config.noise_dim],
                                       step_seed + 1)
    with tf.GradientTape() as d_tape:
      fake = generator(content, noise, preprocessed=True)
      real_logits = discriminator(real, content, preprocessed=True)
      d_loss = tf.reduce_mean(losses.gan_loss(
          real_logits, discriminator(fake, content, preprocessed=True)
      ).discriminator_loss)
    d_vars = discriminator.trainable_variables
    d_opt.apply_gradients(zip(d_tape.gradient(d_loss, d_vars), d_vars))
    with tf.GradientTape() as g_tape:
      fake = generator(content, noise, preprocessed=True)
      g_loss = tf.reduce_mean(losses.gan_loss(
          real_logits, discriminator(fake, content, preprocessed=True),
          generator_terms=config.similarity_weight * losses.cosine_anchor(
              fake, real)).generator_loss)
    g_vars = generator.trainable_variables
    g_opt.apply_gradients(zip(g_tape.gradient(g_loss, g_vars), g_vars))
    return d_loss, g_loss

  for i in range(config.steps):
    step(tf.constant([seed, i], tf.int64))
  return generator


def generate_item_embeddings(generator: ContentGenerator,
                             item_features: FeatureTable, items: np.ndarray,
                             samples: int = 8, seed: int = 0) -> np.ndarray:
  """Mean generated embedding (re-normalised) over `samples` noise draws,
  from the items' raw features (row i of `item_features` = item i)."""
  content = _raw_rows(item_features, items)
  rng = tf.random.Generator.from_seed(seed)
  total = 0.0
  for _ in range(samples):
    total += generator(content, rng.normal([len(items), generator.noise_dim]))
  return tf.math.l2_normalize(total, -1).numpy()
