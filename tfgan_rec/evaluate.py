"""Top-K retrieval metrics and rating error, overall and per user slice.

Definitions (per user with at least one held-out item, then averaged):
- Recall@K = hits in the top K / number of held-out items;
- NDCG@K = sum over hits of 1/log2(rank + 1), divided by the best possible
  DCG with min(K, held-out) hits;
- HitRate@K = 1 if any held-out item is in the top K;
- Coverage@K = distinct items recommended to the slice / catalogue size.
Items the user has in training are never recommended.
"""
from typing import Callable, Dict, List, Optional

import numpy as np
from scipy import sparse

ScoreFn = Callable[[np.ndarray], np.ndarray]


def top_k(scores: np.ndarray, exclude: sparse.csr_matrix, k: int) -> np.ndarray:
  """Indices of the k best items per row; excluded and padding items never
  appear (column 0 is the padding item)."""
  scores = np.array(scores, dtype=np.float32)
  scores[:, 0] = -np.inf
  rows, cols = exclude.nonzero()
  scores[rows, cols] = -np.inf
  k = min(k, scores.shape[1] - 1)
  best = np.argpartition(-scores, k - 1, axis=1)[:, :k]
  order = np.argsort(-np.take_along_axis(scores, best, axis=1), axis=1,
                     kind="stable")
  return np.take_along_axis(best, order, axis=1)


def user_metrics(recommended: np.ndarray, truth: sparse.csr_matrix) -> dict:
  """Recall, NDCG and hit per row of `recommended` against `truth` rows."""
  hits = np.asarray(truth[np.arange(truth.shape[0])[:, None],
                          recommended].todense()) > 0
  num_true = np.asarray(truth.sum(axis=1)).ravel()
  k = recommended.shape[1]
  discounts = 1.0 / np.log2(np.arange(2, k + 2))
  ideal = np.cumsum(discounts)[np.minimum(num_true, k).astype(int) - 1]
  return {"recall": hits.sum(axis=1) / num_true,
          "ndcg": (hits * discounts).sum(axis=1) / ideal,
          "hit_rate": hits.any(axis=1).astype(np.float64)}


def per_user_retrieval(score_fn: ScoreFn, train: sparse.csr_matrix,
                       test: sparse.csr_matrix, k: int = 20,
                       batch_size: int = 1024,
                       candidates: Optional[np.ndarray] = None):
  """The per-user metrics `evaluate_retrieval` averages.

  Returns:
    (users with held-out items [n], {"recall": [n], "ndcg": [n],
    "hit_rate": [n]}, their top-k items [n, k]); `candidates` as for
    `evaluate_retrieval`.
  """
  blocked = None
  if candidates is not None:
    blocked = np.ones(train.shape[1], dtype=bool)
    blocked[candidates] = False
    test = test.multiply(~blocked[None, :]).tocsr()
    test.eliminate_zeros()
  users = np.flatnonzero(np.asarray(test.sum(axis=1)).ravel() > 0)
  per_user = {"recall": [], "ndcg": [], "hit_rate": []}
  recommended = []
  for start in range(0, len(users), batch_size):
    batch = users[start:start + batch_size]
    scores = np.array(score_fn(batch), dtype=np.float32)
    if blocked is not None:
      scores[:, blocked] = -np.inf
    top = top_k(scores, train[batch], k)
    for name, values in user_metrics(top, test[batch]).items():
      per_user[name].append(values)
    recommended.append(top)
  if not len(users):
    return (users, {name: np.zeros(0) for name in per_user},
            np.zeros((0, k), np.int64))
  return (users, {name: np.concatenate(v) for name, v in per_user.items()},
          np.concatenate(recommended))


def evaluate_retrieval(score_fn: ScoreFn, train: sparse.csr_matrix,
                       test: sparse.csr_matrix, k: int = 20,
                       slices: Optional[Dict[str, np.ndarray]] = None,
                       batch_size: int = 1024,
                       candidates: Optional[np.ndarray] = None
                       ) -> Dict[str, dict]:
  """Scores every user with held-out items and reports metrics per slice.

  `score_fn(users)` returns a [len(users), num_items + 1] score matrix.
  `slices` maps a slice name to a boolean mask over user indices; "overall"
  is always added. `candidates` (item indices) restricts both the ranking
  and the held-out items to those items, e.g. to measure cold items alone.
  Returns {slice: {"recall@k": ..., "ndcg@k": ..., ..., "users": n}}; {}
  when no user has a held-out item.
  """
  users, per_user, recommended = per_user_retrieval(
      score_fn, train, test, k, batch_size, candidates)
  if not len(users):
    return {}
  num_items = train.shape[1] - 1 if candidates is None else len(candidates)
  masks = {"overall": np.ones(train.shape[0], dtype=bool), **(slices or {})}
  report = {}
  for name, mask in masks.items():
    chosen = mask[users]
    if not chosen.any():
      continue
    report[name] = {
        f"{metric}@{k}": float(values[chosen].mean())
        for metric, values in per_user.items()}
    report[name][f"coverage@{k}"] = (
        len(np.unique(recommended[chosen])) / num_items)
    report[name]["users"] = int(chosen.sum())
  return report


def rmse(predictions: np.ndarray, ratings: np.ndarray) -> float:
  return float(np.sqrt(np.mean((np.asarray(predictions) - ratings) ** 2)))


def popularity_shares(items: np.ndarray, reference: np.ndarray,
                      num_items: int, buckets: int = 10) -> List[float]:
  """The share of `items` in each of `buckets` equal groups of the
  catalogue, the groups ordered by the items' popularity in `reference`
  (most popular first; ties by item index). A generator with the real
  data's popularity profile gives the real items' shares.

  Args:
    items: item indices (1 .. num_items), e.g. generated interactions.
    reference: the item indices that rank the catalogue (real ones).
    num_items: catalogue size.
    buckets: how many groups.
  Returns:
    `buckets` shares summing to 1 (all 0 when `items` is empty).

  >>> popularity_shares(np.array([1, 1, 2, 3]), np.array([1, 1, 2]), 4, 2)
  [0.75, 0.25]
  """
  popularity = np.bincount(reference, minlength=num_items + 1)[1:]
  rank = np.empty(num_items, np.int64)
  rank[np.argsort(-popularity, kind="stable")] = np.arange(num_items)
  group = rank * buckets // max(num_items, 1)
  counts = np.bincount(group[np.asarray(items) - 1], minlength=buckets)
  total = counts.sum()
  return [float(c / total) if total else 0.0 for c in counts]


def gini(items: np.ndarray, num_items: int) -> float:
  """Gini coefficient of how often each catalogue item occurs in `items`
  (0: all equally often; near 1: a few items take everything).

  >>> gini(np.array([1, 2, 3, 4]), 4), round(gini(np.array([1, 1, 1, 1]), 4), 2)
  (0.0, 0.75)
  """
  counts = np.sort(np.bincount(items, minlength=num_items + 1)[1:])
  if not counts.sum():
    return 0.0
  ranks = np.arange(1, len(counts) + 1)
  return float(np.sum((2 * ranks - len(counts) - 1) * counts) /
               (len(counts) * counts.sum()))
