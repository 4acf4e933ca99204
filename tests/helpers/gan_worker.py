"""Small trainers of every adversarial model (the interaction GAN, the user
generator, the item generator) on synthetic data; run as a script, it trains
a few seeded steps of each in its own process and saves the weights.

    python gan_worker.py OUT.npz mirrored   # 1 device vs 2 logical CPUs
    TF_CONFIG=... python gan_worker.py OUT.npz multiworker
"""
import sys

import tfgan_rec  # noqa: F401
import numpy as np
import tensorflow as tf

from tfgan_rec.config import GANConfig, ItemGANConfig, UserGANConfig
from tfgan_rec.data import dataset, synthetic
from tfgan_rec import privacy
from tfgan_rec import release as release_lib
from tfgan_rec.config import PrivacyConfig
from tfgan_rec.gan import item_generator, loop, private, user_generator
from tfgan_rec.gan import trainer as gan_trainer
from tfgan_rec.layers import FeaturePreprocessing

GAN_CONFIG = GANConfig(steps=3, batch_size=32, hidden=(32,), noise_dim=8,
                       d_steps=2, checkpoint_every=5)
USER_CONFIG = UserGANConfig(steps=3, batch_size=32, hidden=32, min_history=5,
                            checkpoint_every=5)
ITEM_CONFIG = ItemGANConfig(steps=3, batch_size=32, hidden=32,
                            checkpoint_every=5)
DIM = 8
# The profile (CFGAN) target with the loss settings it was measured with.
PROFILE_TARGET = dict(target="profile", item_to_item=False, ranking_weight=0.0,
                      negative_rate=0.1, zr_weight=1.0,
                      reconstruction_weight=5.0)


def small_data():
  return dataset.encode(synthetic.make_synthetic(
      synthetic.SyntheticConfig(num_interactions=3000, seed=2)))


def _unit_rows(count, seed):
  rows = np.random.default_rng(seed).normal(size=(count, DIM))
  return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(
      np.float32)


def gan(data, steps=3, loss="modified", **kwargs):
  gan_data = gan_trainer.GANData.from_rows(
      data.user, data.item, data.num_users, data.num_items,
      data.user_features)
  config = GANConfig(**{**GAN_CONFIG.__dict__, "steps": steps,
                        "loss": loss})
  return gan_trainer.GANTrainer(config, gan_data, seed=3, **kwargs)


def user(data, steps=3, **kwargs):
  """A user generator against random (unit) teacher queries and items."""
  histories = user_generator.UserHistories.from_interactions(
      data.user, data.item, data.timestamp, data.num_users)
  preprocessing = FeaturePreprocessing.adapted(data.user_features)
  features = {name: value.numpy() for name, value in preprocessing(
      {name: tf.constant(column, tf.string) for name, column
       in data.user_features.columns.items()}).items()}
  config = UserGANConfig(**{**USER_CONFIG.__dict__, "steps": steps})
  return user_generator.UserGANTrainer(
      config, _unit_rows(data.num_users + 1, 0),
      _unit_rows(data.num_items + 1, 1), histories, features, preprocessing,
      seed=3, **kwargs)


def item(data, steps=3, **kwargs):
  """An item generator fitting random (unit) embeddings of every item."""
  items = np.arange(1, data.num_items + 1)
  config = ItemGANConfig(**{**ITEM_CONFIG.__dict__, "steps": steps})
  return item_generator.ItemGANTrainer(
      data.item_features, items, _unit_rows(len(items), 2), config, seed=3,
      **kwargs)


def release(data, steps=3, **kwargs):
  """The private release generator (epsilon 5 over 20 steps), with a
  fixed secret seed so that runs can be compared."""
  gan_data = gan_trainer.GANData.from_rows(
      data.user, data.item, data.num_users, data.num_items,
      data.user_features)
  config = GANConfig(**{**GAN_CONFIG.__dict__, "steps": steps})
  plan = privacy.plan(PrivacyConfig(epsilon=5.0), len(gan_data.train_users),
                      config.batch_size, 20, config.d_steps, replicas=2)
  marginals = privacy.noisy_marginals(
      data.user_features, gan_data.train_users, float("inf"), 1.0,
      np.random.default_rng(0))
  released = marginals.sample(len(gan_data.train_users),
                              np.random.default_rng(1))
  # The released lengths and popularity prior, so that every release test
  # (1 vs 2 replicas, workers, resume) covers the pull to the prior.
  _, lengths, prior = release_lib.release_summaries(
      gan_data, None, np.random.default_rng(0))
  kwargs = {"lengths": lengths, "prior": prior, **kwargs}
  return private.ReleaseGANTrainer(config, gan_data, released, plan, seed=3,
                                   secret_seed=11, **kwargs)


TRAINERS = {"gan": gan, "user": user, "item": item, "release": release}


def weights(trainer):
  return [w.numpy() for w in trainer.generator.weights +
          trainer.discriminator.weights]


def main(out, mode):
  saved = {}
  if mode == "mirrored":
    loop.use_logical_cpus(2)
    data = small_data()
    # One strategy per device set, shared by the trainers: a second
    # two-device strategy in the process reuses collective instance keys
    # and aborts ("shape mismatch in the collective instance").
    strategies = {"one": tf.distribute.MirroredStrategy(["/cpu:0"]),
                  "two": tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])}
    for kind, make in TRAINERS.items():
      for name, strategy in strategies.items():
        trainer = make(data, strategy=strategy)
        trainer.train()
        saved.update({f"{kind}_{name}_{i}": w
                      for i, w in enumerate(weights(trainer))})
  else:
    strategy = loop.make_strategy()
    assert isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    data = small_data()
    for kind, make in TRAINERS.items():
      trainer = make(data, strategy=strategy)
      trainer.train()
      saved.update({f"{kind}_{i}": w for i, w in enumerate(weights(trainer))})
  np.savez(out, **saved)


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2])
