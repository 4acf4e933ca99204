"""Small recommender trainings on synthetic data under tf.distribute
strategies; run as a script, it trains in its own process and saves the
weights.

    python recommender_worker.py OUT.npz mirrored   # 2 logical CPUs
    TF_CONFIG=... python recommender_worker.py OUT.npz multiworker RUN_DIR
        # the pipeline (`pipeline.run`) on this worker, writing RUN_DIR

`one_device()` trains the same models on one device, for comparison.
"""
import dataclasses
import sys

import tfgan_rec  # noqa: F401
import numpy as np
import tensorflow as tf

from tfgan_rec import config as config_lib
from tfgan_rec import pipeline
from tfgan_rec.gan import loop
from tfgan_rec.recommender import training


def small_config(deterministic: bool = False) -> config_lib.RunConfig:
  """A tiny model on 1,500 synthetic interactions in batches of 99 (the
  last batch of an epoch is odd, so a replica gets a padded row). With
  `deterministic`, nothing is random in training (no dropout, the whole
  catalogue as negatives), so training needs no strategy to be the same;
  else every random draw of the model is on, the graph tower's included."""
  config = config_lib.RunConfig(seed=3)
  config.data = dataclasses.replace(config.data, dataset="synthetic",
                                    synthetic_interactions=1500)
  config.train = dataclasses.replace(config.train, epochs=2, batch_size=99,
                                     patience=1, refit=False)
  config.model = dataclasses.replace(
      config.model, embedding_dim=16, feature_dim=4, query_hidden=(16,),
      candidate_hidden=(16,), ranking_hidden=(8,), history_length=20,
      extra_negatives=500 if deterministic else 40)
  if deterministic:
    config.model = dataclasses.replace(config.model, history_dropout=0.0,
                                       item_id_dropout=0.0)
  else:
    config.model = dataclasses.replace(config.model, new_user_dropout=0.2,
                                       tower="id+graph",
                                       graph_edge_dropout=0.2)
  return config


def fit(config, strategy=None):
  """The trained weights (early stopping on validation, no refit)."""
  split_data = pipeline.prepare(config.data, config.seed)
  result = training.train_recommender(
      config, split_data, split_data.examples("fit"),
      split_data.examples("train"), strategy=strategy)
  return result.model.get_weights()


def one_device(name: str) -> list:
  """The reference weights of config `name` on one device: "exact"
  without a strategy (as `python -m tfgan_rec.train` trains on one
  device), "random" under a one-device MirroredStrategy (whose random
  draws are the replicas')."""
  if name == "exact":
    return fit(small_config(True))
  return fit(small_config(), tf.distribute.MirroredStrategy(["/cpu:0"]))


def mirrored() -> dict:
  """The exact config under MirroredStrategy over 2 logical CPUs."""
  loop.use_logical_cpus(2)
  two = loop.make_strategy(("/cpu:0", "/cpu:1"))
  return {f"exact_{i}": w
          for i, w in enumerate(fit(small_config(True), two))}


def multiworker(run_dir: str) -> dict:
  """`pipeline.run` of the random config on this worker (no export);
  returns the trained model's weights, which every worker saves (the
  non-chief into its temporary folder)."""
  strategy = pipeline.recommender_strategy()
  assert isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
  saved = {}
  save_trained = pipeline.save_trained

  def keep_weights(model, *args):
    # The recommender's weights, compared with `fit`'s (no new-user scorer
    # or next-item blend there).
    scorer, blend = model.new_user_scorer, model.next_item_blend
    model.attach_new_user_scorer(None)
    model.attach_next_item_blend(None)
    saved.update({f"random_{i}": w
                  for i, w in enumerate(model.get_weights())})
    model.attach_new_user_scorer(scorer)
    model.attach_next_item_blend(blend)
    save_trained(model, *args)

  pipeline.save_trained = keep_weights
  config = small_config()
  config.export.enabled = False
  pipeline.run(config, run_dir)
  return saved


if __name__ == "__main__":
  weights = (mirrored() if sys.argv[2] == "mirrored"
             else multiworker(sys.argv[3]))
  np.savez(sys.argv[1], **weights)
