"""The compact index (bfloat16 first pass, exact float32 re-scoring) against
exact search: the same top-K on small catalogues, exclusions honoured, and
exported SavedModels that use standard TensorFlow ops only."""
import os

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from tfgan_rec import config as config_lib
from tfgan_rec import saved_models
from tfgan_rec.compact_index import CompactIndex
from tfgan_rec.errors import InputError

ROWS, COLUMNS, N = 3001, 17, 10


def exact_top(index, query, excluded, n):
  """numpy reference: top-n of query @ index.T with -inf at `excluded`."""
  scores = query @ index.T
  for row, item in excluded:
    scores[row, item] = -np.inf
  order = np.argsort(-scores, axis=1, kind="stable")[:, :n]
  return np.take_along_axis(scores, order, 1), order


@pytest.fixture(scope="module")
def catalogue():
  rng = np.random.default_rng(3)
  index = rng.normal(size=(ROWS, COLUMNS)).astype(np.float32)
  popularity = rng.random(ROWS).astype(np.float32)
  return index, popularity, rng


def search(index, popularity, shortlist, block=16):
  return CompactIndex(tf.Variable(index), shortlist, popularity, block=block)


def test_compact_top_k_equals_exact_top_k(catalogue):
  # A shortlist of 10 x K re-scored in float32: the bfloat16 first pass only
  # has to put the true top K among the top 10 x K, so (ties aside, which
  # random floats do not have) the top K are identical and their scores
  # equal to float32 rounding.
  index, popularity, rng = catalogue
  query = rng.normal(size=(64, COLUMNS)).astype(np.float32)
  compact = search(index, popularity, 10 * N)
  values, items = compact.top(tf.constant(query), tf.ones([64], tf.bool),
                              tf.zeros([0, 2], tf.int32), N)
  want_values, want_items = exact_top(index, query, [], N)
  np.testing.assert_array_equal(items.numpy(), want_items)
  np.testing.assert_allclose(values.numpy(), want_values, rtol=1e-5,
                             atol=1e-5)


def test_exclusions_are_honoured_even_when_they_fill_the_shortlist(catalogue):
  # Row 0 excludes its 3 x shortlist best items: the first pass skips them,
  # so the answer is the exact top-N of what remains; row 1 excludes
  # scattered items, row 2 none.
  index, popularity, rng = catalogue
  query = rng.normal(size=(3, COLUMNS)).astype(np.float32)
  best = np.argsort(-(query[0] @ index.T))[:60]
  excluded = [(0, int(item)) for item in best] + [
      (1, int(item)) for item in rng.choice(ROWS, 200, replace=False)]
  compact = search(index, popularity, 2 * N)
  values, items = compact.top(tf.constant(query), tf.ones([3], tf.bool),
                              tf.constant(excluded, tf.int32), N)
  want_values, want_items = exact_top(index, query, excluded, N)
  np.testing.assert_array_equal(items.numpy(), want_items)
  assert not set(items.numpy()[0]) & set(best)
  np.testing.assert_allclose(values.numpy(), want_values, rtol=1e-5,
                             atol=1e-5)


def test_unknown_rows_get_the_exact_most_popular(catalogue):
  index, popularity, _ = catalogue
  popular_index = index.copy()
  popular_index[:, -1] = popularity
  query = np.zeros((2, COLUMNS), np.float32)
  query[:, -1] = 1
  compact = search(popular_index, popularity, 3 * N)
  values, items = compact.top(tf.constant(query), tf.constant([False, True]),
                              tf.constant([[0, int(np.argmax(popularity))]],
                                          tf.int32), N)
  order = np.argsort(-popularity)
  np.testing.assert_array_equal(items.numpy()[0], order[1:N + 1])
  np.testing.assert_array_equal(items.numpy()[1], order[:N])
  np.testing.assert_allclose(values.numpy()[1], popularity[order[:N]])


@pytest.mark.parametrize("rows", [5, 64, 65, 1000])
def test_catalogues_smaller_than_or_not_a_multiple_of_the_block(rows):
  rng = np.random.default_rng(rows)
  index = rng.normal(size=(rows, 4)).astype(np.float32)
  query = rng.normal(size=(4, 4)).astype(np.float32)
  n = min(N, rows)
  compact = search(index, np.zeros(rows, np.float32), 5 * n, block=64)
  _, items = compact.top(tf.constant(query), tf.ones([4], tf.bool),
                         tf.zeros([0, 2], tf.int32), n)
  np.testing.assert_array_equal(items.numpy(),
                                exact_top(index, query, [], n)[1])


def test_bad_shortlist_is_one_clear_error(catalogue):
  index, popularity, _ = catalogue
  with pytest.raises(ValueError, match="shortlist must be at least 1"):
    search(index, popularity, 0)


# --- exported SavedModels ----------------------------------------------------

@pytest.fixture(scope="module")
def both_exports(trained, serving_export, tmp_path_factory):
  """The trained model exported with each index: {index: {model: path}}
  (the exact one is the session's `serving_export`, also top_k=10)."""
  _, ready, result = trained
  _, exact_paths, _ = serving_export
  data, train = ready.data, ready.split.train
  compact = saved_models.export_models(
      result.model, data.user_ids, data.item_ids, data.user[train],
      data.item[train], str(tmp_path_factory.mktemp("compact")), top_k=10,
      user_columns=list(data.user_features.columns), index="compact",
      shortlist_factor=3)
  return ready, {"exact": exact_paths, "compact": compact}


def test_exported_compact_retrieval_equals_exact(both_exports):
  # Every user plus an unknown one, in one batch: identical top-10 items (the
  # trained scores have no ties here) with scores equal to float32 rounding.
  ready, exports = both_exports
  users = tf.constant(list(ready.data.user_ids.astype(str)) + ["nobody"])
  out = {kind: tf.saved_model.load(paths["retrieval"]).signatures[
      "serving_default"](user_id=users) for kind, paths in exports.items()}
  np.testing.assert_array_equal(out["compact"]["item_ids"].numpy(),
                                out["exact"]["item_ids"].numpy())
  np.testing.assert_allclose(out["compact"]["scores"].numpy(),
                             out["exact"]["scores"].numpy(), rtol=1e-5,
                             atol=1e-5)


def test_exported_compact_recommend_equals_exact(both_exports):
  ready, exports = both_exports
  users = tf.constant(ready.data.user_ids[:50].astype(str))
  k = tf.fill([50], 10)
  liked = tf.constant(ready.data.item_ids[:100].astype(str).reshape(50, 2))
  features = {name: tf.fill([50], "")
              for name in ready.data.user_features.columns}
  out = {}
  for kind, paths in exports.items():
    model = tf.saved_model.load(paths["recommend"])
    out[kind] = (model.signatures["serving_default"](user_id=users, k=k),
                 model.signatures["recommend_for_features"](
                     liked_item_ids=liked, k=k, **features))
  for compact, exact in zip(out["compact"], out["exact"]):
    np.testing.assert_array_equal(compact["item_ids"].numpy(),
                                  exact["item_ids"].numpy())


def graph_ops(saved_model_dir):
  """Every op type in a SavedModel's graphs: the meta graphs' graph_def
  nodes and every function of their function library."""
  proto = saved_model_pb2.SavedModel()
  with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as handle:
    proto.ParseFromString(handle.read())
  ops = set()
  for meta_graph in proto.meta_graphs:
    ops |= {node.op for node in meta_graph.graph_def.node}
    for function in meta_graph.graph_def.library.function:
      ops |= {node.op for node in function.node_def}
  return ops


# The ops the three exported models use today, read with graph_ops: all core
# TensorFlow ops, which the stock TF Serving binary has. ScaNN's ops
# (ScannSearchBatched, ...) or any other custom op would fail this test; a
# new core op may be added here after checking that it is one.
STANDARD_OPS = frozenset("""
AddV2 All Any Assert AssignVariableOp BiasAdd BroadcastTo Bucketize Cast
ConcatV2 Const DisableCopyOnRead Einsum Equal Erfc ExpandDims Fill FloorDiv
FloorMod GatherNd GatherV2 Greater GreaterEqual HashTableV2 Identity If
IsFinite IsNan Less LessEqual LogicalAnd LogicalOr LookupTableFindV2
LookupTableImportV2 MatMul Max Maximum Mean MergeV2Checkpoints Min Minimum
Mul Neg NoOp NotEqual OneHot Pack Placeholder Prod RaggedRange Range
ReadVariableOp RealDiv Reshape ResourceGather RestoreV2 Rsqrt SaveV2 Select
SelectV2 Shape ShardedFilename Size SparseTensorDenseMatMul Sqrt Square
SquaredDifference Squeeze StatefulPartitionedCall StaticRegexFullMatch
StopGradient StridedSlice StringJoin StringStrip StringToNumber Sub Sum
TensorScatterUpdate Tile TopKV2 VarHandleOp Where ZerosLike
""".split())


@pytest.mark.parametrize("model", saved_models.MODEL_NAMES)
def test_exported_graphs_use_standard_ops_only(both_exports, model):
  _, exports = both_exports
  ops = graph_ops(exports["compact"][model])
  assert ops - STANDARD_OPS == set()


def test_index_setting_is_checked_in_one_line():
  config = config_lib.RunConfig()
  config.export.index = "fast"
  with pytest.raises(InputError, match="export.index='fast' is unknown; use "
                                       "exact, compact"):
    config.check()
  config.export.index, config.export.shortlist_factor = "compact", 0
  with pytest.raises(InputError, match="export.shortlist_factor=0"):
    config.check()
