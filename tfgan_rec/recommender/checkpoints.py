"""Per-epoch checkpoints of a recommender fit, so a killed run resumes.

Early stopping trains one epoch at a time; after each, `EpochCheckpoints`
keeps the model's variables and its optimizer's (moments, step counter),
the early-stopping state (epochs done, the best validation figure and its
epoch, the history so far) and the best epoch's weights. A process started
again with the same folder (`python -m tfgan_rec.train --resume`) restores
them and trains the remaining epochs: the epochs' data order continues
where it stopped (`skip_epochs`), and under a `tf.distribute` strategy the
random draws are functions of (seed, optimizer step) (`replicas`), so the
resumed run ends with the weights of the one that was not interrupted. On
one device without a strategy, dropout and sampled negatives come from
TensorFlow's stateful generators, which restart with the process: the
resumed epochs draw new samples of the same distributions.

Under `MultiWorkerMirroredStrategy` every worker saves (it is collective)
and resumes from its own copy (`cluster.checkpoint_path`).
"""
import json
import os
from typing import List, Optional

import numpy as np
import tensorflow as tf

from tfgan_rec import cluster

STATE_FILE, BEST_FILE = "state.json", "best_weights.npz"


class EpochCheckpoints:
  """The checkpoints of one fit (one call of `fit_with_early_stopping`).

  Args:
    directory: the fit's folder (created when the first epoch is saved).
  """

  def __init__(self, directory: str):
    self.directory = cluster.checkpoint_path(directory)
    self._manager = None

  def _manager_of(self, model: tf.keras.Model
                  ) -> tf.train.CheckpointManager:
    if self._manager is None:
      checkpoint = tf.train.Checkpoint(model=model,
                                       optimizer=model.optimizer)
      self._manager = tf.train.CheckpointManager(checkpoint, self.directory,
                                                 max_to_keep=2)
    return self._manager

  def save(self, model: tf.keras.Model, state: dict,
           best_weights: Optional[List[np.ndarray]],
           best_changed: bool) -> None:
    """Keeps `model` after epoch `state["epoch"]` with the early-stopping
    `state` (JSON) and, when they changed, the `best_weights`. The state
    file is replaced last and atomically: it names a complete checkpoint."""
    self._manager_of(model).save(checkpoint_number=state["epoch"])
    if best_changed and best_weights is not None:
      _write_atomically(os.path.join(self.directory, BEST_FILE),
                        lambda out: np.savez(out, *best_weights))
    _write_atomically(os.path.join(self.directory, STATE_FILE),
                      lambda out: out.write(json.dumps(state).encode()))

  def restore(self, model: tf.keras.Model
              ) -> Optional[tuple]:
    """(state, best weights or None) of the last saved epoch, its variables
    restored into `model` (the optimizer's when it first applies a
    gradient); None when nothing was saved."""
    path = os.path.join(self.directory, STATE_FILE)
    if not os.path.exists(path):
      return None
    with open(path, encoding="utf-8") as state_file:
      state = json.load(state_file)
    checkpoint = os.path.join(self.directory, f"ckpt-{state['epoch']}")
    tf.train.Checkpoint(model=model, optimizer=model.optimizer).restore(
        checkpoint)
    best = os.path.join(self.directory, BEST_FILE)
    weights = None
    if os.path.exists(best):
      with np.load(best) as saved:
        weights = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    return state, weights


def skip_epochs(dataset: tf.data.Dataset, epochs: int) -> None:
  """Advances `dataset` (`training.make_dataset`: each iterator draws the
  next epoch's order) past `epochs` epochs of `fit`, which starts two
  iterators per epoch (`replicas.global_batches` keeps that count under a
  strategy)."""
  for _ in range(2 * epochs):
    iter(dataset)


def _write_atomically(path: str, write) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  partial = path + ".partial"
  with open(partial, "wb") as out:
    write(out)
  os.replace(partial, path)
