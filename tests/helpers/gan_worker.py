"""Runs a few seeded GAN steps in its own process and saves the weights.

    python gan_worker.py OUT.npz mirrored   # 1 device vs 2 logical CPUs
    TF_CONFIG=... python gan_worker.py OUT.npz multiworker
"""
import sys

import tfgan_rec  # noqa: F401
import numpy as np
import tensorflow as tf

from tfgan_rec.config import GANConfig
from tfgan_rec.data import dataset, synthetic
from tfgan_rec.gan import trainer as gan_trainer


def small_gan_data():
  data = dataset.encode(synthetic.make_synthetic(
      synthetic.SyntheticConfig(num_interactions=3000, seed=2)))
  return gan_trainer.GANData.from_rows(data.user, data.item, data.num_users,
                                       data.num_items, data.user_features)


CONFIG = GANConfig(steps=3, batch_size=32, hidden=(32,), noise_dim=8,
                   d_steps=2)


def weights(trainer):
  return [w.numpy() for w in trainer.generator.weights +
          trainer.discriminator.weights]


def main(out, mode):
  if mode == "mirrored":
    gan_trainer.use_logical_cpus(2)
    data = small_gan_data()
    runs = {}
    for name, devices in (("one", ["/cpu:0"]), ("two", ["/cpu:0", "/cpu:1"])):
      strategy = tf.distribute.MirroredStrategy(devices)
      trainer = gan_trainer.GANTrainer(CONFIG, data, seed=3, strategy=strategy)
      assert strategy.num_replicas_in_sync == len(devices)
      trainer.train()
      runs[name] = weights(trainer)
    np.savez(out, **{f"{name}_{i}": w for name, ws in runs.items()
                     for i, w in enumerate(ws)})
  else:
    strategy = gan_trainer.make_strategy()
    assert isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    trainer = gan_trainer.GANTrainer(CONFIG, small_gan_data(), seed=3,
                                     strategy=strategy)
    trainer.train()
    np.savez(out, *weights(trainer))


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2])
