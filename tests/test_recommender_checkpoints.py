"""A recommender fit killed between epochs resumes from its checkpoints and
ends with the weights of a fit that was not interrupted."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf
from helpers import recommender_worker

from tfgan_rec import pipeline
from tfgan_rec.recommender import training


class Killed(Exception):
  pass


class Epochs(tf.keras.callbacks.Callback):
  """Counts the epochs trained (every fit call is one); raises `Killed`
  when the `kill_at`-th starts."""

  def __init__(self, kill_at: int = 0):
    super().__init__()
    self.kill_at, self.started = kill_at, 0

  def on_train_begin(self, logs=None):
    self.started += 1
    if self.started == self.kill_at:
      raise Killed()


@pytest.mark.parametrize("name, strategy, kill_at", [
    # No random draw; killed in the refit (the fit's 3 epochs are done).
    ("exact", None, 5),
    # Every random draw on, stateless under a strategy; killed in the fit.
    ("random", lambda: tf.distribute.MirroredStrategy(["/cpu:0"]), 3)])
def test_killed_fit_resumes_to_the_uninterrupted_weights(
    tmp_path, name, strategy, kill_at):
  config = recommender_worker.small_config(deterministic=name == "exact")
  config.train = dataclasses.replace(config.train, epochs=3, patience=3,
                                     refit=True)
  split_data = pipeline.prepare(config.data, config.seed)
  train = lambda folder, epochs: training.train_recommender(
      config, split_data, split_data.examples("fit"),
      split_data.examples("train"), [epochs],
      strategy() if strategy else None, str(tmp_path / folder))
  whole = Epochs()
  uninterrupted = train("whole", whole)
  with pytest.raises(Killed):
    train("killed", Epochs(kill_at))
  rest = Epochs()
  resumed = train("killed", rest)
  # It went on after the last saved epoch, with the data order, optimizer
  # state and early-stopping state of the run that was not interrupted.
  assert rest.started == whole.started - (kill_at - 1)
  assert resumed.history == uninterrupted.history
  for before, after in zip(uninterrupted.model.get_weights(),
                           resumed.model.get_weights()):
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=2e-6)
