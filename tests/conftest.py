"""Shared fixtures: small synthetic data and one trained model per session."""
import dataclasses

import tfgan_rec  # noqa: F401  (Keras 2 before TensorFlow loads)
import pytest

from tfgan_rec import config as config_lib
from tfgan_rec import data as data_lib
from tfgan_rec.recommender import training


def small_config(**data_overrides) -> config_lib.RunConfig:
  config = config_lib.RunConfig(seed=7)
  config.data = dataclasses.replace(
      config.data, dataset="synthetic", synthetic_interactions=20_000,
      **data_overrides)
  config.train.epochs = 12
  return config


@pytest.fixture(scope="session")
def prepared():
  config = small_config()
  return config, data_lib.prepare(config.data, config.seed)


@pytest.fixture(scope="session")
def trained(prepared):
  config, ready = prepared
  split = ready.split
  result = training.train_recommender(
      config, ready.data, training.TrainingRows.real(ready.data, split.fit),
      training.TrainingRows.real(ready.data, split.train), split.validation)
  return config, ready, result
