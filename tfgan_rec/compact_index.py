"""A compact candidate index: a bfloat16 first pass, exact float32 re-scoring.

Exact retrieval reads the whole float32 index once per query (1M items x 65
columns = 260 MB), so it is bound by memory bandwidth, and `tf.math.top_k`
over 1M scores adds ~5 ms. `CompactIndex.top` instead

1. scores every item against a bfloat16 copy of the index (half the bytes),
   with the excluded (row, item) pairs set to -inf;
2. picks a shortlist of `shortlist` items per row exactly from those
   scores without a catalogue-wide top-k: the items are cut into blocks of
   `block` consecutive items, the `shortlist` blocks with the highest maximum
   are kept (every item of the top `shortlist` lies in one of them), and
   top-k runs over those blocks only;
3. gathers the float32 rows of the shortlist alone and scores them exactly,
   excludes the excluded pairs again and returns the top n.

The float32 index is therefore read only at the shortlisted rows. Rows that
are not `known` (scored by popularity, whose bfloat16 values tie) take a
precomputed shortlist of the most popular items instead, so they are exact.

Why bfloat16 (measured on the project machine, AMD EPYC with AVX512-BF16, 2
cores, TF 2.21 with oneDNN, 1M x 64, batch 1, oneDNN kernel times): bf16
matmul 6.0 ms against float32 9.2 ms; int8 has no fast standard TF kernel on
CPU: BatchMatMulV3 int8 x int8 -> int32 was 3-7x slower than float32,
QuantizedMatMul (quint8) 4.4x slower, UniformQuantizedDotHybrid 3.5x
slower, and casting an int8 index to bfloat16 per query costs more than the
float32 matmul itself. All ops here are standard TensorFlow ops.
"""
import numpy as np
import tensorflow as tf



def default_block(rows: int, shortlist: int) -> int:
  """Items per block of the shortlist selection: the two top-k passes see
  rows / block maxima and shortlist x block scores, least in total at
  block = sqrt(rows / shortlist) (1M items, shortlist 200: 70; with a
  shortlist of 1,000 a fixed block of 64 made recommend at batch 64 slower
  than exact search at 100K items)."""
  return max(1, int(round(np.sqrt(rows / shortlist))))


def _padded(index: np.ndarray, block: int) -> np.ndarray:
  """`index` with zero rows appended up to a multiple of `block` rows."""
  pad = -len(index) % block
  return np.concatenate([index, np.zeros((pad, index.shape[1]),
                                         index.dtype)])


class CompactIndex(tf.Module):
  """Top-n search over an index with a bfloat16 first pass and exact
  float32 scores for a shortlist.

  Args:
    exact: [rows, columns] float32 variable (shared, not copied); row r is
      scored as query . exact[r].
    shortlist: items re-scored exactly per query row (at least the n of
      `top`; e.g. 10 x n).
    popularity: [rows] float32; rows of `top` that are not `known` are
      re-scored over the `shortlist` most popular index rows (give rows
      never to be recommended -inf).
    block: items per block of the shortlist selection (default:
      `default_block`).
  """

  def __init__(self, exact: tf.Variable, shortlist: int,
               popularity: np.ndarray, block: int = 0):
    super().__init__()
    index = exact.numpy()
    if shortlist < 1:
      raise ValueError(f"shortlist must be at least 1, got {shortlist}.")
    self.rows = len(index)
    self.block = min(block or default_block(self.rows, shortlist), self.rows)
    padded = _padded(index, self.block)
    self.blocks = len(padded) // self.block
    # At most `shortlist` blocks hold the top `shortlist` items.
    self.kept_blocks = min(shortlist, self.blocks)
    self.shortlist = min(shortlist, self.kept_blocks * self.block)
    self.exact = exact
    self.compact = tf.Variable(tf.cast(padded, tf.bfloat16), trainable=False,
                               name="compact_index")
    padding = np.arange(self.rows, len(padded), dtype=np.int32)
    self.padding = tf.constant(padding)
    popular = np.argsort(-np.asarray(popularity), kind="stable")
    self.popular = tf.constant(popular[:self.shortlist].astype(np.int32))

  def approximate_scores(self, query: tf.Tensor) -> tf.Tensor:
    """[batch, padded rows] float32 first-pass scores from bfloat16."""
    scores = tf.matmul(tf.cast(query, tf.bfloat16), self.compact,
                       transpose_b=True)
    return tf.cast(scores, tf.float32)

  def _with_padding(self, excluded: tf.Tensor, batch: tf.Tensor):
    """`excluded` (row, item) pairs plus every padding row of every row."""
    rows = tf.repeat(tf.range(batch), tf.size(self.padding))
    items = tf.tile(self.padding, [batch])
    return tf.concat([excluded, tf.stack([rows, items], 1)], 0)

  def shortlisted(self, query: tf.Tensor, excluded: tf.Tensor) -> tf.Tensor:
    """[batch, shortlist] rows with the best first-pass scores, the
    `excluded` (row, item) pairs never among them unless too few remain."""
    batch = tf.shape(query)[0]
    excluded = self._with_padding(excluded, batch)
    scores = tf.tensor_scatter_nd_update(
        self.approximate_scores(query), excluded,
        tf.fill(tf.shape(excluded)[:1], float("-inf")))
    blocks = tf.reshape(scores, [batch, self.blocks, self.block])
    best = tf.math.top_k(tf.reduce_max(blocks, axis=2),
                         self.kept_blocks).indices
    kept = tf.reshape(tf.gather(blocks, best, batch_dims=1), [batch, -1])
    chosen = tf.math.top_k(kept, self.shortlist).indices
    block = tf.gather(best, chosen // self.block, batch_dims=1)
    return block * self.block + chosen % self.block

  def top(self, query: tf.Tensor, known: tf.Tensor, excluded: tf.Tensor,
          n: int):
    """`tf.math.top_k` of the exact scores query . index, with -inf at the
    `excluded` (row, item) pairs, over each row's shortlist (the most
    popular rows where `known` is False).

    Args:
      query: [batch, columns] float32.
      known: [batch] bool.
      excluded: [pairs, 2] int32 (row, item).
      n: results per row, at most `shortlist`.

    Returns:
      (values [batch, n], row indices [batch, n]), best first.
    """
    candidates = tf.where(known[:, None], self.shortlisted(query, excluded),
                          self.popular[None, :])
    rows = tf.gather(self.exact, tf.minimum(candidates, self.rows - 1))
    scores = tf.einsum("bsc,bc->bs", rows, query)
    hits = _positions(candidates, excluded)
    masked = tf.tensor_scatter_nd_update(
        scores, hits, tf.fill(tf.shape(hits)[:1], float("-inf")))
    masked = tf.where(candidates < self.rows, masked, float("-inf"))
    best = tf.math.top_k(masked, n)
    return best.values, tf.gather(candidates, best.indices, batch_dims=1)


def _positions(candidates: tf.Tensor, excluded: tf.Tensor) -> tf.Tensor:
  """[m, 2] (row, position) of every candidate that is an excluded pair."""
  matches = tf.equal(tf.gather(candidates, excluded[:, 0]),
                     excluded[:, 1:2])
  hits = tf.cast(tf.where(matches), tf.int32)
  return tf.stack([tf.gather(excluded[:, 0], hits[:, 0]), hits[:, 1]], 1)
