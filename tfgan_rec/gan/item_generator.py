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
from tfgan_rec.gan import losses, loop
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


class ItemGANTrainer(loop.AdversarialLoop):
  """Trains a `ContentGenerator` against a `ContentDiscriminator` on warm
  items' (content, embedding) pairs.

  Args:
    item_features: the raw item features (row i = item i), from which the
      models' preprocessing is adapted.
    warm_items: the items with training interactions.
    warm_embeddings: their candidate-tower embeddings [len(warm_items), dim].
    config: settings.
    seed: fixes initialisation and every step's batch and noise.
    strategy, checkpoint_dir, logdir: as for `loop.AdversarialLoop`.
  """

  def __init__(self, item_features: FeatureTable, warm_items: np.ndarray,
               warm_embeddings: np.ndarray, config: ItemGANConfig,
               seed: int = 0,
               strategy: Optional[tf.distribute.Strategy] = None,
               checkpoint_dir: Optional[str] = None,
               logdir: Optional[str] = None):
    if not item_features.columns:
      raise ValueError("new-item embeddings need item content features; "
                       "pass --items with feature columns.")
    self.config = config
    self.preprocessing = FeaturePreprocessing.adapted(item_features)
    # The warm items' content, encoded once by the models' own
    # preprocessing.
    self.content = self.preprocessing(_raw_rows(item_features, warm_items))
    self.targets = tf.constant(warm_embeddings, tf.float32)
    super().__init__(loop.LoopSettings.of(
        "item generator", config, config.batch_size,
        remedy="Lower item_gan.learning_rate."),
                     seed, strategy, checkpoint_dir, logdir)

  def create(self):
    """The generator, discriminator and their optimizers, built at the
    seed."""
    generator = ContentGenerator(self.preprocessing,
                                 int(self.targets.shape[1]), self.config)
    discriminator = ContentDiscriminator(self.preprocessing, self.config)
    batch = self.global_batch(tf.constant(0, tf.int64))
    generator(batch["content"], batch["noise"], preprocessed=True)
    discriminator(batch["real"], batch["content"], preprocessed=True)
    return self.adversaries(generator, discriminator,
                            self.config.learning_rate,
                            self.config.learning_rate)

  def global_batch(self, step: tf.Tensor):
    """The step's warm items (content and embedding) and noise."""
    seed = tf.stack([tf.cast(self.seed, tf.int64), step])
    size = self.config.batch_size
    pick = tf.random.stateless_uniform(
        [size], seed, 0, tf.shape(self.targets)[0], dtype=tf.int32)
    return {"content": {k: tf.gather(v, pick)
                        for k, v in self.content.items()},
            "real": tf.gather(self.targets, pick),
            "noise": tf.random.stateless_normal(
                [size, self.config.noise_dim], seed + 1)}

  def replica_step(self, batch):
    """A discriminator update, then a generator update; the losses."""
    content, real = batch["content"], batch["real"]
    generate = lambda: self.generator(content, batch["noise"],
                                      preprocessed=True)
    judge = lambda embedding: self.discriminator(embedding, content,
                                                 preprocessed=True)
    with tf.GradientTape() as tape:
      real_logits = judge(real)
      d_loss = self.average(losses.gan_loss(
          real_logits, judge(generate())).discriminator_loss)
    self.apply(tape, d_loss, self.discriminator, self.d_optimizer)
    with tf.GradientTape() as tape:
      fake = generate()
      g_loss = self.average(losses.gan_loss(
          real_logits, judge(fake),
          generator_terms=self.config.similarity_weight *
          losses.cosine_anchor(fake, real)).generator_loss)
    self.apply(tape, g_loss, self.generator, self.g_optimizer)
    return {"d_loss": d_loss, "g_loss": g_loss}


def train_item_generator(item_features: FeatureTable,
                         warm_items: np.ndarray, warm_embeddings: np.ndarray,
                         config: Optional[ItemGANConfig] = None,
                         seed: int = 0,
                         checkpoint_dir: Optional[str] = None
                         ) -> ContentGenerator:
  """The content generator fitted on warm items' (content, embedding)
  pairs (see `ItemGANTrainer`), resumed from `checkpoint_dir` if it holds
  a checkpoint."""
  trainer = ItemGANTrainer(item_features, warm_items, warm_embeddings,
                           config or ItemGANConfig(), seed,
                           checkpoint_dir=checkpoint_dir)
  trainer.restore()
  trainer.train()
  return trainer.generator


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
