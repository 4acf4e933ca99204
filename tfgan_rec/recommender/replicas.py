"""One training step of the two-stage model shared by several replicas.

Under a `tf.distribute` strategy (MirroredStrategy over local devices, or
MultiWorkerMirroredStrategy over machines) every replica computes the loss
of ONE device for its share of the step's global batch:

- every replica receives the whole global batch (`global_batches`) and
  keeps its own rows as queries (`replica_rows`), so the global batch is the
  configured batch size whatever the number of replicas;
- the softmax's candidates are the global batch's items plus one set of
  sampled negatives for the step, not per replica: each replica embeds a
  1/N share of them and the shares are all-gathered (`embed_once`; the
  all-gather passes the gradients back to the replica that embedded each
  row), so every query scores the same candidates as on one device, and the
  candidate tower runs over batch + negatives once per step, not N times;
- every random draw (the negatives, the history, item-id, new-user and
  graph-edge dropouts) is a stateless function of (seed, step) over the
  global batch (`StepRandom`), so 1 or N replicas on one or several
  workers train the same model.

Each replica's losses are sums over its rows divided by the global batch,
so the optimizer's all-reduce (a sum) gives one device's gradient.
"""
from typing import Any, Callable, Dict, Tuple

import tensorflow as tf

# The purposes a step draws random numbers for; each gets its own stream.
NEGATIVES, HISTORY, NEW_USERS, ITEM_IDS, EDGES = range(5)
_PURPOSES = 8


class StepRandom:
  """Random draws that are a pure function of (seed, step, purpose).

  >>> draw = StepRandom(seed=1, step=tf.constant(3, tf.int64))
  >>> a, b = draw.uniform([2], HISTORY), draw.uniform([2], HISTORY)
  >>> bool(tf.reduce_all(a == b)), bool(tf.reduce_all(a == draw.uniform(
  ...     [2], NEGATIVES)))
  (True, False)
  """

  def __init__(self, seed: int, step: tf.Tensor):
    self.seed, self.step = seed, tf.cast(step, tf.int64)

  def seed_of(self, purpose: int) -> tf.Tensor:
    """The stateless seed [2] of `purpose` at this step."""
    return tf.stack([tf.constant(self.seed, tf.int64),
                     self.step * _PURPOSES + purpose])

  def uniform(self, shape, purpose: int) -> tf.Tensor:
    """Uniform [0, 1) floats of `shape` for `purpose`."""
    return tf.random.stateless_uniform(shape, self.seed_of(purpose))


def replica_rows(global_size: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor,
                                                  tf.Tensor]:
  """This replica's rows of a global batch of `global_size` rows.

  Replica r keeps rows [r * n, (r + 1) * n) with n = ceil(size / replicas);
  where the batch runs out (its last step) the rows are padded by repeating
  the last one, marked invalid (their weight must be 0), so every replica
  has n rows.

  Returns:
    (row indices [n], valid [n] bool, the first row r * n).
  """
  context = tf.distribute.get_replica_context()
  replicas = context.num_replicas_in_sync
  per_replica = (global_size + replicas - 1) // replicas
  first = tf.cast(context.replica_id_in_sync_group, tf.int32) * per_replica
  rows = first + tf.range(per_replica)
  return tf.minimum(rows, global_size - 1), rows < global_size, first


def embed_once(embed: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
               ids: tf.Tensor, noise: tf.Tensor) -> tf.Tensor:
  """`embed(ids, noise)` of every id [S] (with its per-id `noise` [S]),
  computed once across the replicas: each embeds a share of ceil(S / N)
  ids (padded with id 0, dropped again) and the shares are all-gathered.

  Returns:
    [S, dim] embeddings, the same on every replica.
  """
  context = tf.distribute.get_replica_context()
  replicas = context.num_replicas_in_sync
  count = tf.shape(ids)[0]
  share = (count + replicas - 1) // replicas
  padding = share * replicas - count
  ids = tf.pad(ids, [[0, padding]])
  noise = tf.pad(noise, [[0, padding]])
  first = tf.cast(context.replica_id_in_sync_group, tf.int32) * share
  mine = embed(ids[first:first + share], noise[first:first + share])
  gathered = context.all_gather(mine, axis=0)[:count]
  # The gather loses the static width, which Dense layers downstream need.
  return tf.ensure_shape(gathered, [None] + mine.shape[1:])


def global_batches(strategy: tf.distribute.Strategy,
                   dataset: tf.data.Dataset, fit_kwargs: Dict[str, Any]
                   ) -> Tuple[Any, Dict[str, Any]]:
  """What Keras' `fit` takes to train one epoch of `dataset`'s global
  batches under `strategy`: each batch given whole to every replica
  (every worker builds the same seeded dataset; each of its local replicas
  receives one copy, in order), and `fit_kwargs` with the epoch's steps.

  Raises:
    ValueError: for more than one epoch per call (a repeated distributed
      dataset prefetches into the next epoch, whose order would then depend
      on timing), or a dataset of unknown length.
  """
  if fit_kwargs.get("epochs", 1) != 1:
    raise ValueError("under a tf.distribute strategy, TwoStageModel.fit "
                     "trains one epoch per call; call it once per epoch.")
  steps = int(dataset.cardinality())
  if steps < 0:
    raise ValueError("under a tf.distribute strategy, TwoStageModel.fit "
                     "needs a dataset of known length (assert_cardinality).")

  def per_worker(context: tf.distribute.InputContext) -> tf.data.Dataset:
    local = context.num_replicas_in_sync // context.num_input_pipelines
    if local == 1:
      return dataset
    return dataset.flat_map(
        lambda batch: tf.data.Dataset.from_tensors(batch).repeat(local))

  # Each iterator of `dataset` draws the next epoch's order (make_dataset).
  # Keras' fit of a plain dataset starts two per call and reads the second;
  # of a distributed one, one: dropping one here gives the replicas the
  # epochs one device trains on.
  iter(dataset)
  return (strategy.distribute_datasets_from_function(per_worker),
          dict(fit_kwargs, steps_per_epoch=steps))
