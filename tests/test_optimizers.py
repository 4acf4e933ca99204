"""LazyAdam: sparse rows updated lazily, everything else as Adam."""
import numpy as np
import pytest

import tfgan_rec  # noqa: F401  (Keras 2 before TensorFlow loads)
import tensorflow as tf

from tfgan_rec.recommender.optimizers import LazyAdam


def _table(rows=6, dim=3):
  return tf.Variable(np.arange(rows * dim, dtype=np.float32).reshape(rows, dim))


def _rows_slices(rows, dim=3, scale=1.0):
  rows = list(rows)
  values = scale * np.ones((len(rows), dim), np.float32)
  return tf.IndexedSlices(tf.constant(values), tf.constant(rows, tf.int32),
                          tf.constant([6, dim]))


def _apply(optimizer, variable, gradients, graph=False):
  step = lambda g: optimizer.apply_gradients([(g, variable)])
  if graph:
    step = tf.function(step)
  for gradient in gradients:
    step(gradient)
  return variable.numpy()


@pytest.mark.parametrize("graph", [False, True])
def test_rows_missing_from_a_batch_keep_their_values(graph):
  first, second = _rows_slices([1, 2]), _rows_slices([4])
  lazy = _apply(LazyAdam(0.1), _table(), [first, second], graph)
  adam = _apply(tf.keras.optimizers.Adam(0.1), _table(), [first, second],
                graph)
  after_first = _apply(LazyAdam(0.1), _table(), [first], graph)
  # Adam's momentum keeps moving rows 1 and 2 in step 2; LazyAdam does not.
  np.testing.assert_array_equal(lazy[[1, 2]], after_first[[1, 2]])
  assert not np.allclose(adam[[1, 2]], after_first[[1, 2]])
  np.testing.assert_array_equal(lazy[[0, 3, 5]], _table().numpy()[[0, 3, 5]])
  assert not np.allclose(lazy[4], _table().numpy()[4])


def test_repeated_rows_are_summed_like_adam():
  repeated = _rows_slices([2, 2, 5])
  lazy = _apply(LazyAdam(0.1), _table(), [repeated])
  adam = _apply(tf.keras.optimizers.Adam(0.1), _table(),
                [tf.convert_to_tensor(repeated)])
  # On the first step Adam leaves rows with zero gradient unchanged too.
  np.testing.assert_allclose(lazy, adam, rtol=1e-6)


def test_dense_gradients_and_batches_touching_every_row_get_adam_updates():
  dense = tf.constant(np.linspace(-1, 1, 18, dtype=np.float32).reshape(6, 3))
  every_row = _rows_slices([5, 0, 1, 2, 3, 4, 1])
  for gradients in ([dense, dense], [every_row, _rows_slices(range(6), 3, -2)]):
    lazy = _apply(LazyAdam(0.1), _table(), gradients)
    adam = _apply(tf.keras.optimizers.Adam(0.1), _table(),
                  [tf.convert_to_tensor(g) for g in gradients])
    np.testing.assert_allclose(lazy, adam, rtol=1e-6, atol=1e-6)


def test_amsgrad_is_refused():
  with pytest.raises(ValueError, match="amsgrad"):
    LazyAdam(0.1, amsgrad=True)
