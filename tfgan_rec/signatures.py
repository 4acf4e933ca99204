"""What the exported SavedModels compute: `tf.Module`s with serving signatures.

- `RetrievalModule`: `serving_default(user_id) -> item_ids, scores` (top K).
- `RankingModule`: `serving_default(user_id, item_id) -> score`.
- `RecommendModule` (two-stage: retrieve top N, re-rank by predicted rating,
  return top k):
  - `serving_default(user_id [B], k [B])`;
  - `recommend_for_features(<one string input per raw user feature> [B],
    liked_item_ids [B, L] ("" pads), k [B])` for a user known only by
    features and perhaps a few liked items;
  - `recommend_group(member_ids [B, M] ("" pads), strategy [B], k [B])`, one
    group per row, strategy `average`, `least_misery` or `most_pleasure`.
  Outputs `item_ids` [B, max k] and `scores` [B, max k]; a row asking for a
  smaller k is padded with "" and 0.

A user's (or every group member's) training items are never recommended;
unknown users get popular items. When the model has a new-user scorer
(`tfgan_rec.new_users`), it retrieves for known users without training
interactions and for `recommend_for_features` rows without liked items (not
for group members). When it has a next-item blend (`tfgan_rec.next_items`),
retrieval scores of users with history, and of `recommend_for_features`
rows with liked items (read latest first), and of every group member,
blend in the transitions from their latest items. Bad requests (empty
batch, k out of range, unknown strategy) fail with an InvalidArgument
error naming the input.

Retrieval and the first stage of `serving_default` and
`recommend_for_features` search the catalogue exactly or, with
`index="compact"`, through `tfgan_rec.compact_index` (a bfloat16 first pass
and exact float32 scores for a shortlist); the signatures are the same.
"""
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from tfgan_rec.compact_index import CompactIndex
from tfgan_rec.config import INDEXES
from tfgan_rec.recommender.model import TwoStageModel

STRATEGIES = ("average", "least_misery", "most_pleasure")
# Why a model with a next-item blend is not exported with the compact index.
COMPACT_WITH_BLEND = ("blends next-item transitions into its retrieval "
                      "scores, which the compact index does not search; "
                      "export it with --index exact (or train with "
                      "--next-items off).")


class _IdTable(tf.Module):
  """String ID -> index: ids[i] -> i + 1, unknown IDs -> 0 (the package's
  own indexing), any input shape.

  A plain hash table rather than a Keras StringLookup: the layer keeps its
  vocabulary as a tracked Python list and in its saved config, so a 1M-item
  export held each vocabulary twice and spent most of its time walking those
  lists (see benchmarks/README.md)."""

  def __init__(self, ids):
    super().__init__()
    keys = tf.constant(np.asarray(ids, dtype=str))
    self.table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            keys, tf.range(1, tf.size(keys, tf.int64) + 1)), default_value=0)

  def __call__(self, ids: tf.Tensor) -> tf.Tensor:
    return self.table.lookup(ids)


def _ragged_rows(user: np.ndarray, item: np.ndarray, num_users: int):
  order = np.lexsort((item, user))
  counts = np.bincount(user, minlength=num_users + 1)
  splits = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
  return item[order].astype(np.int32), splits


class _IdLookups(tf.Module):
  """The model and its user and item ID lookups."""

  def __init__(self, model: TwoStageModel, user_ids, item_ids):
    super().__init__()
    self.model = model
    self.user_lookup = _IdTable(user_ids)
    self.item_lookup = _IdTable(item_ids)


class _Catalogue(_IdLookups):
  """What the retrieving modules share: ID lookups, the candidate index,
  each user's training items, and popularity.

  `index` chooses how the top items are found: `exact` scores the whole
  float32 index per query; `compact` (`tfgan_rec.compact_index`) scores a
  bfloat16 copy, then re-scores `shortlist_factor` x n items exactly.
  """

  def __init__(self, model: TwoStageModel, user_ids, item_ids, train_user,
               train_item, candidates=None, index: str = "exact",
               shortlist_factor: int = 10):
    super().__init__(model, user_ids, item_ids)
    if index not in INDEXES:
      raise ValueError(f"index '{index}' is unknown; use "
                       f"{' or '.join(INDEXES)}.")
    if shortlist_factor < 1:
      raise ValueError(f"shortlist_factor must be at least 1, got "
                       f"{shortlist_factor}.")
    self.index_kind, self.shortlist_factor = index, shortlist_factor
    self.num_items = model.num_items
    # A variable, saved once; a constant is copied into every signature's
    # graph.
    self.item_vocabulary = tf.Variable(
        np.concatenate([[""], np.asarray(item_ids, dtype=str)]),
        trainable=False, name="item_vocabulary")
    if candidates is None:
      candidates = model.item_embeddings(
          tf.range(model.num_items + 1, dtype=tf.int32))
    counts = np.bincount(train_item, minlength=model.num_items + 1)
    popularity = np.log1p(counts).astype(np.float32)[:, None]
    # The last column holds log-popularity, so one matmul scores known users
    # (query, 0) by the model and unknown users (0, 1) by popularity: a
    # single pass over the catalogue, which bounds latency at 1M items.
    self.index = tf.Variable(np.concatenate([candidates, popularity], 1),
                             trainable=False, name="candidate_index")
    values, splits = _ragged_rows(np.asarray(train_user),
                                  np.asarray(train_item), len(user_ids))
    self.seen_values = tf.Variable(values, trainable=False)
    self.seen_splits = tf.Variable(splits, trainable=False)
    self.compact = None

  def _use_compact(self, n: int) -> None:
    """Builds the compact index for top-n searches when it was chosen."""
    if self.index_kind != "compact":
      return
    if self.model.next_item_blend is not None:
      raise ValueError(f"the model {COMPACT_WITH_BLEND}")
    popularity = self.index.numpy()[:, -1].copy()
    popularity[0] = float("-inf")  # item 0, the padding, is never returned
    self.compact = CompactIndex(self.index, self.shortlist_factor * n,
                                popularity)

  def top(self, query: tf.Tensor, known: tf.Tensor, excluded: tf.Tensor,
          n: int, by_features=None, history=None):
    """(scores, item indices) [batch, n] of the best items: `scores` except
    the `excluded` (row, item) pairs, exactly or through the compact
    index; with `history` [batch, L] (latest first), through the model's
    next-item blend. `by_features` (encoded features, a [batch] mask: the
    model's `new_user_rows`) hands the rows it marks to the new-user
    scorer, searched exactly."""
    if self.compact is not None:
      best = self.compact.top(self._query_rows(query, known), known,
                              excluded, n)
    else:
      scores = self.scores(query, known)
      if history is not None:
        scores = self.model.blended_scores(scores, history)
      best = tf.math.top_k(_excluded(scores, excluded), n)
      best = best.values, best.indices
    if by_features is None:
      return best
    features, scored = by_features

    def replaced():
      scores = self.model.new_user_scorer(features)
      chosen = tf.math.top_k(_excluded(scores, excluded), n)
      return (tf.where(scored[:, None], chosen.values, best[0]),
              tf.where(scored[:, None], chosen.indices, best[1]))

    # Requests without a new user never run the scorer.
    return tf.cond(tf.reduce_any(scored), replaced, lambda: best)

  def seen_indices(self, user: tf.Tensor) -> tf.Tensor:
    """[n, 2] (row, item) pairs: the training items of each user (row), and
    the padding item 0 of every row."""
    # tf.ragged.range validates its inputs; gathering rows of a RaggedTensor
    # with a malformed (e.g. 2-D) request CHECK-fails and would kill the
    # server.
    positions = tf.ragged.range(tf.gather(self.seen_splits, user),
                                tf.gather(self.seen_splits, user + 1))
    items = tf.gather(self.seen_values, positions.flat_values)
    rows = tf.cast(positions.value_rowids(), tf.int32)
    padding = tf.range(tf.shape(user)[0])
    return tf.concat([tf.stack([rows, items], axis=1),
                      tf.stack([padding, tf.zeros_like(padding)], axis=1)], 0)

  @staticmethod
  def _query_rows(query: tf.Tensor, known: tf.Tensor) -> tf.Tensor:
    """[batch, dim + 1]: (query, 0) where `known`, else (0, ..., 0, 1)."""
    learned = tf.concat([query, tf.zeros_like(query[:, :1])], axis=1)
    popular = tf.one_hot(tf.fill(tf.shape(known), tf.shape(query)[1]),
                         tf.shape(query)[1] + 1)
    return tf.where(known[:, None], learned, popular)

  def scores(self, query: tf.Tensor, known: tf.Tensor) -> tf.Tensor:
    """[batch, num_items + 1]: query . candidate where `known`, else the
    item's log-popularity."""
    return tf.matmul(self._query_rows(query, known), self.index,
                     transpose_b=True)

  def to_ids(self, indices: tf.Tensor) -> tf.Tensor:
    return tf.gather(self.item_vocabulary, indices)


def _excluded(scores: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
  """`scores` with -inf at the (row, item) `indices`."""
  return tf.tensor_scatter_nd_update(
      scores, indices, tf.fill(tf.shape(indices)[:1], float("-inf")))


def _check_batch(tensor: tf.Tensor, name: str):
  return tf.debugging.assert_positive(
      tf.size(tensor), message=f"{name} is empty: send at least one row")


class RetrievalModule(_Catalogue):
  """Top-K items for user IDs, the user's training items excluded."""

  def __init__(self, *args, top_k: int = 20, **kwargs):
    super().__init__(*args, **kwargs)
    self.top_k = min(top_k, self.num_items)
    self._use_compact(self.top_k)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string,
                                              name="user_id")])
  def recommend(self, user_id):
    with tf.control_dependencies([_check_batch(user_id, "user_id")]):
      user = tf.cast(self.user_lookup(user_id), tf.int32)
    scores, items = self.top(self.model.user_embeddings(user), user > 0,
                             self.seen_indices(user), self.top_k,
                             self.model.stored_new_user_rows(user),
                             tf.gather(self.model.history_items, user))
    return {"item_ids": self.to_ids(items), "scores": scores}


class RankingModule(_IdLookups):
  """Predicted rating for (user ID, item ID) pairs; unknown IDs are scored
  from what is known about them, never an error."""

  @tf.function(input_signature=[
      tf.TensorSpec([None], tf.string, name="user_id"),
      tf.TensorSpec([None], tf.string, name="item_id")])
  def score(self, user_id, item_id):
    checks = [_check_batch(user_id, "user_id"),
              tf.debugging.assert_equal(
                  tf.size(user_id), tf.size(item_id),
                  message="user_id and item_id must have the same length")]
    with tf.control_dependencies(checks):
      user = tf.cast(self.user_lookup(user_id), tf.int32)
      item = tf.cast(self.item_lookup(item_id), tf.int32)
    rating = self.model.predict_rating(self.model.user_embeddings(user),
                                       self.model.item_embeddings(item))
    return {"score": rating}


class RecommendModule(_Catalogue):
  """Two-stage recommendation: retrieve `num_candidates`, re-rank them by
  predicted rating, return the best k (1 <= k <= max_k)."""

  def __init__(self, *args, user_columns: Optional[Sequence[str]] = None,
               num_candidates: int = 100, max_k: int = 50, **kwargs):
    super().__init__(*args, **kwargs)
    self.num_candidates = min(num_candidates, self.num_items)
    self.max_k = min(max_k, self.num_candidates)
    self._use_compact(self.num_candidates)
    # One string input per raw user feature column the query tower encodes.
    self.feature_names = list(self.model.user_preprocessing.kinds)
    if user_columns is not None and list(user_columns) != self.feature_names:
      raise ValueError(f"user_columns {list(user_columns)} are not the "
                       f"model's raw user features {self.feature_names}.")
    self.recommend_for_features = tf.function(
        self._for_features,
        input_signature=[
            {name: tf.TensorSpec([None], tf.string, name=name)
             for name in self.feature_names},
            tf.TensorSpec([None, None], tf.string, name="liked_item_ids"),
            tf.TensorSpec([None], tf.int32, name="k")])

  # --- shared stages -------------------------------------------------------

  def _check_k(self, k):
    return [_check_batch(k, "k"),
            tf.debugging.assert_greater_equal(
                k, 1, message=f"k must be between 1 and {self.max_k}"),
            tf.debugging.assert_less_equal(
                k, self.max_k, message=f"k must be between 1 and {self.max_k}")]

  def _rerank(self, candidates, rating_fn, k):
    """Scores `candidates` [B, N] with rating_fn -> [B, N] ratings, keeps the
    best max(k) per row and pads rows beyond their own k."""
    ratings = rating_fn(candidates)
    ratings = tf.where(candidates > 0, ratings, float("-inf"))
    width = tf.reduce_max(k)
    best = tf.math.top_k(ratings, width)
    items = tf.gather(candidates, best.indices, batch_dims=1)
    keep = (tf.range(width)[None, :] < k[:, None]) & tf.math.is_finite(
        best.values)
    return {"item_ids": tf.where(keep, self.to_ids(items), ""),
            "scores": tf.where(keep, best.values, 0.0)}

  def _two_stage(self, query, known, excluded, k, by_features=None,
                 history=None):
    """The top `num_candidates` items for `query` (popularity where not
    `known`, the new-user scorer's where `by_features` says, blended with
    next-item transitions of `history`) except the `excluded` (row, item)
    pairs, re-ranked by the ratings predicted for `query`."""
    candidates = self.top(query, known, excluded, self.num_candidates,
                          by_features, history)[1]
    ratings = lambda items: self._ratings(query, items)
    return self._rerank(candidates, ratings, k)

  def _ratings(self, query, items):
    """Predicted ratings [B, N] of items [B, N] for queries [B, d]."""
    size = tf.shape(items)
    flat_items = tf.reshape(items, [-1])
    flat_query = tf.repeat(query, size[1], axis=0)
    rating = self.model.predict_rating(
        flat_query, self.model.item_embeddings(flat_items))
    return tf.reshape(rating, size)

  # --- signatures ----------------------------------------------------------

  @tf.function(input_signature=[
      tf.TensorSpec([None], tf.string, name="user_id"),
      tf.TensorSpec([None], tf.int32, name="k")])
  def recommend(self, user_id, k):
    checks = self._check_k(k) + [
        _check_batch(user_id, "user_id"),
        tf.debugging.assert_equal(tf.size(user_id), tf.size(k),
                                  message="give one k per user_id")]
    # k too waits for the checks: an empty k would otherwise reach top_k
    # (as a width of INT_MIN) before the error that names the input.
    with tf.control_dependencies(checks):
      user = tf.cast(self.user_lookup(user_id), tf.int32)
      k = tf.identity(k)
    query = self.model.user_embeddings(user)
    return self._two_stage(query, user > 0, self.seen_indices(user), k,
                           self.model.stored_new_user_rows(user),
                           tf.gather(self.model.history_items, user))

  def _for_features(self, features, liked_item_ids, k):
    checks = self._check_k(k) + [tf.debugging.assert_equal(
        tf.shape(liked_item_ids)[0], tf.size(k),
        message="give one row of liked_item_ids (\"\" pads) and one k per "
                "user")]
    with tf.control_dependencies(checks):
      liked = tf.cast(self.item_lookup(liked_item_ids), tf.int32)
      k = tf.identity(k)
    # Unknown liked IDs and "" padding both map to 0, which pools as empty;
    # the raw strings go to the query tower's own FeaturePreprocessing.
    encoded = self.model.user_preprocessing(features)
    query = self.model.new_user_embeddings(encoded, liked)
    # Liked items are excluded, and "" (item 0, the padding) with them.
    rows = tf.repeat(tf.range(tf.shape(liked)[0]), tf.shape(liked)[1])
    liked_pairs = tf.stack([rows, tf.reshape(liked, [-1])], axis=1)
    padding = tf.stack([tf.range(tf.size(k)), tf.zeros_like(k)], axis=1)
    # Known through features, so the learned scores are used, not popularity.
    return self._two_stage(query, tf.ones_like(k, tf.bool),
                           tf.concat([liked_pairs, padding], 0), k,
                           self.model.new_user_rows(encoded, liked), liked)

  @tf.function(input_signature=[
      tf.TensorSpec([None, None], tf.string, name="member_ids"),
      tf.TensorSpec([None], tf.string, name="strategy"),
      tf.TensorSpec([None], tf.int32, name="k")])
  def recommend_group(self, member_ids, strategy, k):
    known_strategy = tf.reduce_any(
        strategy[:, None] == tf.constant(STRATEGIES)[None, :], axis=1)
    checks = self._check_k(k) + [
        tf.debugging.assert_equal(
            known_strategy, True,
            message=f"strategy must be one of {', '.join(STRATEGIES)}"),
        tf.debugging.assert_equal(
            tf.shape(member_ids)[0], tf.size(k),
            message="give one row of member_ids, one strategy and one k per "
                    "group"),
        tf.debugging.assert_equal(tf.size(strategy), tf.size(k),
                                  message="give one strategy per group"),
        tf.debugging.assert_equal(
            tf.reduce_all(tf.reduce_any(member_ids != "", axis=1)), True,
            message="every group needs at least one member ID")]
    with tf.control_dependencies(checks):
      present = member_ids != ""
      members = tf.cast(self.user_lookup(member_ids), tf.int32)
      k = tf.identity(k)
    groups, size = tf.shape(members)[0], tf.shape(members)[1]
    flat = tf.reshape(members, [-1])
    queries = self.model.user_embeddings(flat)
    # z-normalise each member's scores so learned scores and popularity mix.
    # This needs every item's score, so groups read the float32 index in
    # full with either index (the compact one shares that variable).
    # Each member's scores as their own retrieval's, the next-item blend
    # included, so a one-member group gets that member's list (except a
    # known member without history, whom the new-user scorer would serve).
    scores = self.model.blended_scores(
        self.scores(queries, flat > 0),
        tf.gather(self.model.history_items, flat))
    mean, var = tf.nn.moments(scores[:, 1:], axes=[1], keepdims=True)
    scores = tf.reshape((scores - mean) / tf.sqrt(var + 1e-9),
                        [groups, size, -1])
    # Every member's training items; "" and unknown members have none.
    member_pairs = self.seen_indices(flat)
    group_pairs = tf.stack([member_pairs[:, 0] // size, member_pairs[:, 1]],
                           axis=1)
    candidates = tf.math.top_k(
        _excluded(self._aggregate(scores, present, strategy), group_pairs),
        self.num_candidates).indices
    queries = tf.reshape(queries, [groups, size, -1])
    return self._rerank(candidates, lambda items: self._member_ratings(
        queries, items, present, strategy), k)

  def _member_ratings(self, queries, items, present, strategy):
    """Aggregated predicted ratings [B, N] of a group's members."""
    groups, size = tf.shape(queries)[0], tf.shape(queries)[1]
    flat_queries = tf.reshape(queries, [groups * size, -1])
    flat_items = tf.repeat(items, size, axis=0)
    ratings = self._ratings(flat_queries, flat_items)
    return self._aggregate(tf.reshape(ratings, [groups, size, -1]), present,
                           strategy)

  @staticmethod
  def _aggregate(scores, present, strategy):
    """[B, M, N] member scores -> [B, N] by each row's strategy."""
    mask = present[:, :, None]
    count = tf.maximum(tf.reduce_sum(tf.cast(mask, scores.dtype), axis=1), 1)
    average = tf.reduce_sum(tf.where(mask, scores, 0.0), axis=1) / count
    least = tf.reduce_min(tf.where(mask, scores, float("inf")), axis=1)
    most = tf.reduce_max(tf.where(mask, scores, float("-inf")), axis=1)
    choice = strategy[:, None]
    return tf.where(choice == "least_misery", least,
                    tf.where(choice == "most_pleasure", most, average))
