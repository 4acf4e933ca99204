"""Shared fixtures: small synthetic data and one trained model per session."""
import dataclasses

import tfgan_rec  # noqa: F401  (Keras 2 before TensorFlow loads)
import pytest
import tensorflow as tf

from tfgan_rec import config as config_lib
from tfgan_rec import pipeline
from tfgan_rec import saved_models


def small_config(**data_overrides) -> config_lib.RunConfig:
  config = config_lib.RunConfig(seed=7)
  config.data = dataclasses.replace(
      config.data, dataset="synthetic", synthetic_interactions=20_000,
      **data_overrides)
  config.train.epochs = 12
  # The session's model is the tower's alone (the exact and compact exports
  # compare it); tests/test_next_items.py attaches and chooses the blend.
  config.model.next_items = "off"
  return config


@pytest.fixture(scope="session")
def prepared():
  config = small_config()
  return config, pipeline.prepare(config.data, config.seed)


@pytest.fixture(scope="session")
def trained(prepared):
  config, ready = prepared
  result = pipeline.train_recommender(config, ready, ready.examples("fit"),
                                      ready.examples("train"))
  return config, ready, result


@pytest.fixture(scope="session")
def serving_export(trained, tmp_path_factory):
  """The trained model exported once: (prepared data, {model: path},
  {model: loaded SavedModel})."""
  _, ready, result = trained
  data, train = ready.data, ready.split.train
  export_dir = str(tmp_path_factory.mktemp("serving"))
  paths = saved_models.export_models(
      result.model, data.user_ids, data.item_ids, data.user[train],
      data.item[train], export_dir, top_k=10,
      user_columns=list(data.user_features.columns))
  loaded = {name: tf.saved_model.load(path) for name, path in paths.items()}
  return ready, paths, loaded
