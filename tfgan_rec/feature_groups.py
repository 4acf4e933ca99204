"""Demographic groups of users, read off the shared feature encoder.

A user's groups are the ids `layers.FeaturePreprocessing` gives their small
categorical features (at most `max_groups` ids, 0 = missing or unknown
included; a number's group is its decile, `<name>_bucket`), and every pair
of them crossed. `GroupPopular` and `FeatureSoftmax` (`baselines`) fit on
these groups in numpy; `GroupSoftmax` scores with the fitted weights in the
graph, from the encoder's output for a serving request. Both read the ids
through `FeatureGroups.input_ids`, so what a model is fitted on is what it
serves.
"""
import dataclasses
from typing import Dict, List, Mapping, Tuple

import numpy as np
import tensorflow as tf

from tfgan_rec.data.features import CATEGORICAL, FeatureTable
from tfgan_rec.layers import FeaturePreprocessing

DEFAULT_MAX_GROUPS = 25


@dataclasses.dataclass(frozen=True)
class FeatureGroups:
  """Which encoded features are groups, and how many ids each has.

  Input ids lay out every group feature's ids, then every pair's crossed
  ids (a * size_b + b), one block after another: `num_inputs` in all.

  >>> groups = FeatureGroups((("gender", 3), ("age_bucket", 4)))
  >>> groups.num_inputs, groups.input_ids(
  ...     {"gender": np.array([1]), "age_bucket": np.array([2])})
  (19, [array([1]), array([5]), array([13])])
  """
  sizes: Tuple[Tuple[str, int], ...]

  @classmethod
  def of(cls, preprocessing: FeaturePreprocessing,
         max_groups: int = DEFAULT_MAX_GROUPS) -> "FeatureGroups":
    """The group features of `preprocessing`'s output."""
    return cls(tuple(
        (name, feature.vocabulary_size) for name, feature
        in preprocessing.encoded_features.items()
        if feature.kind == CATEGORICAL and feature.length == 1 and
        feature.vocabulary_size <= max_groups))

  @property
  def num_inputs(self) -> int:
    sizes = [size for _, size in self.sizes]
    return sum(sizes) + sum(a * b for i, a in enumerate(sizes)
                            for b in sizes[i + 1:])

  def input_ids(self, encoded: Mapping[str, object]) -> List[object]:
    """Per group feature and per pair, each row's input id; `encoded` is
    the encoder's output ({name: [rows]} ids, numpy arrays or tensors)."""
    ids, offset = [], 0
    for name, size in self.sizes:
      ids.append(encoded[name] + offset)
      offset += size
    for i, (first, first_size) in enumerate(self.sizes):
      for second, second_size in self.sizes[i + 1:]:
        ids.append(encoded[first] * second_size + encoded[second] + offset)
        offset += first_size * second_size
    return ids


def encode_groups(table: FeatureTable, max_groups: int = DEFAULT_MAX_GROUPS
                  ) -> Tuple[FeatureGroups, Dict[str, np.ndarray]]:
  """`table`'s groups and every row's group ids, {name: [rows]}, encoded
  by the `FeaturePreprocessing` a model adapts on the same table."""
  preprocessing = FeaturePreprocessing.adapted(table)
  groups = FeatureGroups.of(preprocessing, max_groups)
  if not groups.sizes:
    return groups, {}
  encoded = preprocessing({name: tf.constant(np.asarray(column, object),
                                             tf.string)
                           for name, column in table.columns.items()})
  return groups, {name: encoded[name].numpy() for name, _ in groups.sizes}


class GroupSoftmax(tf.keras.layers.Layer):
  """Item scores of users known by their groups: inputs W + b.

  The inputs are the user's group ids and their crosses (`FeatureGroups`),
  multi-hot; W [num_inputs, items + 1] and b [items + 1] are fitted outside
  (`baselines.FeatureSoftmax`) and held as non-trainable weights, so a
  checkpoint or SavedModel carries them.

  Args:
    groups: the group features.
    weights: [groups.num_inputs, items + 1] (zeros: filled by a checkpoint).
    bias: [items + 1].

  Call it on the encoder's output {name: [B]}; it returns [B, items + 1]
  logits.
  """

  def __init__(self, groups: FeatureGroups, weights: np.ndarray,
               bias: np.ndarray, **kwargs):
    kwargs.setdefault("trainable", False)
    super().__init__(**kwargs)
    self.groups = groups
    self.input_weights = tf.Variable(np.asarray(weights, np.float32),
                                     trainable=False, name="input_weights")
    self.item_bias = tf.Variable(np.asarray(bias, np.float32),
                                 trainable=False, name="item_bias")

  def call(self, encoded: Mapping[str, tf.Tensor]) -> tf.Tensor:
    ids = tf.stack([tf.cast(i, tf.int64)
                    for i in self.groups.input_ids(encoded)], axis=1)
    # A sparse [B, inputs] multi-hot times W holds [B, items + 1] only;
    # gathering W's rows would hold [B, ids, items + 1], a dense one-hot
    # [B, ids, inputs]. Each row's ids ascend (block after block).
    size = tf.shape(ids, out_type=tf.int64)
    rows = tf.repeat(tf.range(size[0]), size[1])
    inputs = tf.sparse.SparseTensor(
        tf.stack([rows, tf.reshape(ids, [-1])], axis=1),
        tf.ones([size[0] * size[1]], tf.float32),
        [size[0], self.groups.num_inputs])
    return (tf.sparse.sparse_dense_matmul(inputs, self.input_weights) +
            self.item_bias)
