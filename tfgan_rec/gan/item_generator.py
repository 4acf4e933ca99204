"""Embeddings for new items from their content, generated adversarially.

A conditional generator maps (item content features, noise) into the
candidate tower's embedding space; a discriminator tells the embeddings of
warm items (items with training interactions, as the trained tower embeds
them) from generated ones, given the same content. A cosine term ties each
generated embedding to its own warm item's. Items nobody has interacted with
then get generated embeddings instead of ones built on an untrained id.
"""
import dataclasses
from typing import Dict

import numpy as np
import tensorflow as tf

from tfgan_rec.gan import losses
from tfgan_rec.recommender.towers import FeatureEncoder, mlp


@dataclasses.dataclass
class ItemGANConfig:
  noise_dim: int = 16
  hidden: int = 128
  feature_dim: int = 16
  learning_rate: float = 1e-3
  steps: int = 1500
  batch_size: int = 128
  similarity_weight: float = 5.0


class ContentGenerator(tf.keras.Model):
  """G(content, z) -> unit-norm embedding in the candidate tower's space."""

  def __init__(self, specs, embedding_dim: int, config: ItemGANConfig):
    super().__init__()
    self.noise_dim = config.noise_dim
    self.content = FeatureEncoder(specs, config.feature_dim)
    self.body = mlp((config.hidden, config.hidden), embedding_dim,
                    "content_generator_mlp")

  def call(self, features: Dict[str, tf.Tensor], noise: tf.Tensor):
    joint = tf.concat([self.content(features), noise], axis=-1)
    return tf.math.l2_normalize(self.body(joint), -1)


class ContentDiscriminator(tf.keras.Model):
  """D(embedding, content) -> real/fake logit."""

  def __init__(self, specs, config: ItemGANConfig):
    super().__init__()
    self.content = FeatureEncoder(specs, config.feature_dim)
    self.body = mlp((config.hidden,), 1, "content_discriminator_mlp")

  def call(self, embedding, features):
    joint = tf.concat([embedding, self.content(features)], axis=-1)
    return tf.squeeze(self.body(joint), -1)


def train_item_generator(item_features: Dict[str, np.ndarray], specs,
                         warm_items: np.ndarray, warm_embeddings: np.ndarray,
                         config: ItemGANConfig = ItemGANConfig(),
                         seed: int = 0) -> ContentGenerator:
  """Fits the content generator on warm items' (content, embedding) pairs."""
  if not specs:
    raise ValueError("new-item embeddings need item content features; pass "
                     "--items with feature columns.")
  tf.keras.utils.set_random_seed(seed)
  features = {k: tf.constant(v) for k, v in item_features.items()}
  warm = tf.constant(warm_items, tf.int32)
  targets = tf.constant(warm_embeddings, tf.float32)
  generator = ContentGenerator(specs, warm_embeddings.shape[1], config)
  discriminator = ContentDiscriminator(specs, config)
  g_opt = tf.keras.optimizers.Adam(config.learning_rate, beta_1=0.5)
  d_opt = tf.keras.optimizers.Adam(config.learning_rate, beta_1=0.5)

  @tf.function
  def step(step_seed):
    pick = tf.random.stateless_uniform([config.batch_size], step_seed, 0,
                                       tf.shape(warm)[0], dtype=tf.int32)
    content = {k: tf.gather(v, tf.gather(warm, pick))
               for k, v in features.items()}
    real = tf.gather(targets, pick)
    noise = tf.random.stateless_normal([config.batch_size, config.noise_dim],
                                       step_seed + 1)
    with tf.GradientTape() as d_tape:
      fake = generator(content, noise)
      d_loss = tf.reduce_mean(losses.minimax_discriminator_loss(
          discriminator(real, content), discriminator(fake, content)))
    d_vars = discriminator.trainable_variables
    d_opt.apply_gradients(zip(d_tape.gradient(d_loss, d_vars), d_vars))
    with tf.GradientTape() as g_tape:
      fake = generator(content, noise)
      cosine = tf.reduce_sum(fake * real, -1)
      g_loss = tf.reduce_mean(
          losses.minimax_generator_loss(discriminator(fake, content)) +
          config.similarity_weight * (1.0 - cosine))
    g_vars = generator.trainable_variables
    g_opt.apply_gradients(zip(g_tape.gradient(g_loss, g_vars), g_vars))
    return d_loss, g_loss

  for i in range(config.steps):
    step(tf.constant([seed, i], tf.int64))
  return generator


def generate_item_embeddings(generator: ContentGenerator,
                             item_features: Dict[str, np.ndarray],
                             items: np.ndarray, samples: int = 8,
                             seed: int = 0) -> np.ndarray:
  """Mean generated embedding (re-normalised) over `samples` noise draws."""
  content = {k: tf.gather(tf.constant(v), items)
             for k, v in item_features.items()}
  rng = tf.random.Generator.from_seed(seed)
  total = 0.0
  for _ in range(samples):
    total += generator(content, rng.normal([len(items), generator.noise_dim]))
  return tf.math.l2_normalize(total, -1).numpy()
