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
from typing import List, NamedTuple, Optional

import numpy as np
import tensorflow as tf

from tfgan_rec import cluster

STATE_FILE = "state.json"


class Restored(NamedTuple):
  """What `EpochCheckpoints.restore` found: the early-stopping state (JSON),
  the best epoch's weights (None before any epoch was the best) and the
  checkpoint's restore status (to check once the model is built)."""
  state: dict
  best_weights: Optional[List[np.ndarray]]
  status: object


class EpochCheckpoints:
  """The checkpoints of one fit (one call of `fit_with_early_stopping`).

  Args:
    directory: the fit's folder (created when the first epoch is saved).
  """

  def __init__(self, directory: str):
    self.directory = cluster.checkpoint_path(directory)
    self._checkpoint = self._manager = None

  def _checkpoint_of(self, model: tf.keras.Model) -> tf.train.Checkpoint:
    if self._checkpoint is None:
      self._checkpoint = tf.train.Checkpoint(model=model,
                                             optimizer=model.optimizer)
    return self._checkpoint

  def save(self, model: tf.keras.Model, state: dict,
           best_weights: Optional[List[np.ndarray]],
           best_changed: bool) -> None:
    """Keeps `model` after epoch `state["epoch"]` with the early-stopping
    `state` and, when they changed, the `best_weights` (in a file of that
    epoch's, named in the state). The state file is replaced last and
    atomically: it names a complete checkpoint and best-weights file."""
    if self._manager is None:
      # Two kept: a kill after the next save still finds the one the state
      # file names.
      self._manager = tf.train.CheckpointManager(
          self._checkpoint_of(model), self.directory, max_to_keep=2)
    self._manager.save(checkpoint_number=state["epoch"])
    previous = self._state()
    state = dict(state, best_file=previous and previous.get("best_file"))
    if best_changed and best_weights is not None:
      state["best_file"] = f"best-{state['epoch']}.npz"
      _write_atomically(os.path.join(self.directory, state["best_file"]),
                        lambda out: np.savez(out, *best_weights))
    _write_atomically(os.path.join(self.directory, STATE_FILE),
                      lambda out: out.write(json.dumps(state).encode()))
    stale = previous and previous.get("best_file")
    if stale and stale != state["best_file"]:
      os.remove(os.path.join(self.directory, stale))

  def restore(self, model: tf.keras.Model) -> Optional[Restored]:
    """The `Restored` state of the last saved epoch, its variables restored
    into `model` as it builds them (the optimizer's when it first applies a
    gradient); None when nothing was saved."""
    state = self._state()
    if state is None:
      return None
    status = self._checkpoint_of(model).restore(
        os.path.join(self.directory, f"ckpt-{state['epoch']}"))
    weights = None
    if state.get("best_file"):
      with np.load(os.path.join(self.directory, state["best_file"])) as saved:
        weights = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    state = {key: value for key, value in state.items() if key != "best_file"}
    return Restored(state, weights, status)

  def _state(self) -> Optional[dict]:
    path = os.path.join(self.directory, STATE_FILE)
    if not os.path.exists(path):
      return None
    with open(path, encoding="utf-8") as state_file:
      return json.load(state_file)


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
    out.flush()
    os.fsync(out.fileno())
  os.replace(partial, path)
