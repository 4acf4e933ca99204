"""Simple, strong baselines computed on the same split as the model.

- `MostPopular`: every user gets the items most often interacted with.
- `GroupPopular`: popularity within the user's demographic groups.
- `FeatureSoftmax`: softmax regression from the user's groups and their
  pairwise crosses to the items they take (for users known by features).
- `EASE` (Steck, 2019): a closed-form item-item linear model,
  B = I - P diag(1/diag(P)) with P = (X'X + lambda I)^-1, zero diagonal.
- `ItemTransitions`: which items follow a user's latest items in other
  users' time-ordered histories (a first-order sequential model).
- `ItemMeanRating`: the rating baseline for RMSE, an item's mean training
  rating shrunk toward the global mean.
"""
import logging
from typing import Optional, Sequence, Tuple

import numpy as np
from scipy import sparse

from tfgan_rec import evaluate, feature_groups

log = logging.getLogger(__name__)

EASE_MAX_ITEMS = 30_000  # X'X is items x items and dense.
EASE_DEFAULT_L2 = 500.0  # lambda when there is no validation split to tune it
# FeatureSoftmax fits on at most this many [users, items + 1] cells (a
# seeded sample of users), and `new_users` refuses weights [inputs, items +
# 1] above it: each of the fit's few dense arrays stays within 80 MB, and a
# fit's 300 steps scale with them (MovieLens 100K: 1.6M and 0.6M cells).
FEATURE_SOFTMAX_CELLS = 20_000_000


class MostPopular:
  """Scores items by their training interaction count.

  >>> from tfgan_rec.data import interaction_matrix
  >>> train = interaction_matrix(np.array([1, 2]), np.array([1, 1]), 2, 2)
  >>> MostPopular(train).scores(np.array([1]))[0].tolist()
  [0.0, 2.0, 0.0]
  """

  def __init__(self, train: sparse.csr_matrix):
    self.counts = np.asarray(train.sum(axis=0), dtype=np.float32).ravel()

  def scores(self, users: np.ndarray) -> np.ndarray:
    return np.broadcast_to(self.counts, (len(users), len(self.counts)))


class GroupPopular:
  """Popularity within the user's demographic groups.

  For each user feature with at most `max_groups` groups (`feature_groups`:
  the shared encoder's ids, numbers in deciles), the share of each item
  among the interactions of users in the same group, shrunk toward the
  global share by `shrinkage` interactions: (n_gi + a p_i) / (n_g + a); a
  user's score is the sum over features. This is what features alone say
  about a new user's taste.

  >>> import pandas as pd
  >>> from tfgan_rec.data import features, interaction_matrix
  >>> table = features.feature_table(pd.DataFrame(
  ...     {"gender": ["F", "M", "F"]}, index=["a", "b", "c"]), ["a", "b", "c"])
  >>> train = interaction_matrix(np.array([1, 2]), np.array([1, 2]), 3, 2)
  >>> GroupPopular(train, table, shrinkage=0).scores(np.array([3]))[0].tolist()
  [0.0, 1.0, 0.0]
  """

  def __init__(self, train: sparse.csr_matrix, user_features,
               shrinkage: float = 100.0,
               max_groups: int = feature_groups.DEFAULT_MAX_GROUPS):
    counts = np.asarray(train.sum(axis=0), dtype=np.float64).ravel()
    share = counts / max(counts.sum(), 1.0)
    self.groups, self.tables = [], []
    _, codes_by_name = feature_groups.encode_groups(user_features, max_groups)
    for codes in codes_by_name.values():
      members = sparse.csr_matrix(
          (np.ones(len(codes)), (codes, np.arange(len(codes)))))
      group_counts = np.asarray((members @ train).todense())
      totals = group_counts.sum(axis=1, keepdims=True)
      self.groups.append(codes)
      self.tables.append(((group_counts + shrinkage * share) /
                          np.maximum(totals + shrinkage, 1e-9))
                         .astype(np.float32))
    self.share = share.astype(np.float32)

  def scores(self, users: np.ndarray) -> np.ndarray:
    total = np.broadcast_to(self.share, (len(users), len(self.share))) * 0.0
    for codes, table in zip(self.groups, self.tables):
      total = total + table[codes[users]]
    return total if self.tables else total + self.share


class FeatureSoftmax:
  """Softmax regression from a user's demographic groups to their items.

  The inputs are one-hot groups (`feature_groups`: the shared encoder's
  ids of the features with at most `max_groups` of them, numbers in
  deciles) and every pair of features' crossed groups; the weights and a
  per-item bias are fitted by full-batch Adam to each training user's items
  as a distribution (multinomial likelihood, L2 penalty `l2`), on at most
  `max_users` users (default: as many as keep [users, items + 1] within
  `FEATURE_SOFTMAX_CELLS`). Where `GroupPopular` adds per-feature shares, this
  learns how the groups combine (README, "New users": the measured figures
  on MovieLens 100K's `--cold-users 0.1`). `layer()` scores the same way
  in the graph, for serving. The inputs are sparse; the fit holds a few
  dense [max_users, items + 1] arrays, so it is refused above
  `EASE_MAX_ITEMS` items.

  >>> import pandas as pd
  >>> from tfgan_rec.data import features, interaction_matrix
  >>> table = features.feature_table(pd.DataFrame(
  ...     {"gender": ["F", "M", "F"]}, index=["a", "b", "c"]), ["a", "b", "c"])
  >>> train = interaction_matrix(np.array([1, 2]), np.array([1, 2]), 3, 2)
  >>> int(FeatureSoftmax(train, table).scores(np.array([3]))[0, 1:].argmax())
  0
  """

  def __init__(self, train: sparse.csr_matrix, user_features,
               l2: float = 3e-3, steps: int = 300,
               learning_rate: float = 0.05,
               max_groups: int = feature_groups.DEFAULT_MAX_GROUPS,
               max_users: Optional[int] = None, seed: int = 0):
    if train.shape[1] > EASE_MAX_ITEMS:
      raise ValueError(f"FeatureSoftmax holds dense [users, items] arrays; "
                       f"over {EASE_MAX_ITEMS} items it is skipped.")
    self.groups, self.inputs = group_crosses(user_features, max_groups)
    if max_users is None:
      max_users = max(1, FEATURE_SOFTMAX_CELLS // train.shape[1])
    users = np.flatnonzero(np.asarray(train.sum(axis=1)).ravel() > 0)
    if len(users) > max_users:
      users = np.sort(np.random.default_rng(seed).choice(
          users, max_users, replace=False))
    self.weights, self.bias = _fit_softmax(
        self.inputs[users], train[users], l2, steps, learning_rate)

  def scores(self, users: np.ndarray) -> np.ndarray:
    return np.asarray(self.inputs[users] @ self.weights) + self.bias

  def layer(self, **kwargs) -> feature_groups.GroupSoftmax:
    """The fitted model as a Keras layer on the encoder's output."""
    return feature_groups.GroupSoftmax(self.groups, self.weights, self.bias,
                                       **kwargs)


def group_crosses(user_features,
                  max_groups: int = feature_groups.DEFAULT_MAX_GROUPS
                  ) -> Tuple[feature_groups.FeatureGroups, sparse.csr_matrix]:
  """The group features and [users, inputs] sparse 0/1: each user's group
  of every feature with at most `max_groups` ids, and of every pair of them
  (crossed)."""
  groups, codes = feature_groups.encode_groups(user_features, max_groups)
  rows = len(next(iter(user_features.columns.values()), []))
  ids = groups.input_ids(codes)
  # No feature with few enough groups: no inputs, popularity only.
  inputs = sparse.csr_matrix(
      (np.ones(rows * len(ids), np.float32),
       (np.repeat(np.arange(rows), len(ids)),
        np.stack(ids, axis=1).ravel() if ids else np.zeros(0, int))),
      shape=(rows, groups.num_inputs))
  return groups, inputs


def _fit_softmax(inputs: sparse.csr_matrix, items: sparse.csr_matrix,
                 l2: float, steps: int, learning_rate: float) -> tuple:
  """(weights [inputs, items], bias [items]) minimising the mean cross-
  entropy of softmax(inputs W + b) against each row of `items` normalised
  to sum 1, plus l2 |W|^2, by full-batch Adam from W = 0 and
  b = log(item counts + 1)."""
  counts = np.asarray(items.sum(axis=0), np.float64).ravel()
  targets = sparse.diags(1.0 / np.maximum(np.asarray(
      items.sum(axis=1)).ravel(), 1e-9)) @ items
  # The targets' part of the gradient is the same every step.
  target_inputs = np.asarray((targets.T @ inputs).T.todense(), np.float32)
  target_bias = np.asarray(targets.sum(axis=0), np.float32).ravel()
  params = [np.zeros((inputs.shape[1], items.shape[1]), np.float32),
            np.log(counts + 1.0).astype(np.float32)]
  moments = [[np.zeros_like(p), np.zeros_like(p)] for p in params]
  n = float(inputs.shape[0])
  for step in range(1, steps + 1):
    logits = np.asarray(inputs @ params[0]) + params[1]
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    grads = [(np.asarray(inputs.T @ probs) - target_inputs) / n +
             2 * l2 * params[0],
             (probs.sum(axis=0) - target_bias) / n]
    for param, grad, moment in zip(params, grads, moments):
      moment[0] += 0.1 * (grad - moment[0])
      moment[1] += 0.001 * (grad * grad - moment[1])
      param -= learning_rate * (moment[0] / (1 - 0.9 ** step)) / (
          np.sqrt(moment[1] / (1 - 0.999 ** step)) + 1e-8)
  return params[0], params[1]


class EASE:
  """Embarrassingly Shallow Autoencoder; `l2` is lambda."""

  def __init__(self, train: sparse.csr_matrix, l2: float = EASE_DEFAULT_L2):
    if train.shape[1] > EASE_MAX_ITEMS:
      raise ValueError(f"EASE needs a dense {train.shape[1]}^2 matrix; over "
                       f"{EASE_MAX_ITEMS} items it is skipped.")
    self.train = train
    gram = (train.T @ train).toarray().astype(np.float64)
    gram[np.diag_indices_from(gram)] += l2
    precision = np.linalg.inv(gram)
    weights = precision / -np.diag(precision)
    weights[np.diag_indices_from(weights)] = 0.0
    self.weights = weights.astype(np.float32)

  def scores(self, users: np.ndarray) -> np.ndarray:
    return np.asarray(self.train[users] @ self.weights)


class ItemTransitions:
  """Next-item transitions, the sequential baseline of a temporal split.

  T[i, j] counts how often item j follows item i within `window` positions
  of a user's time-ordered history, a gap of g weighing 0.9^(g - 1); each
  row is divided by its total plus one. A user scores items by the rows of
  their latest `history` items, the latest weighing 1, the one before 0.8,
  then 0.64 and so on. It reads order, which EASE and the towers' pooled
  history do not.

  Two users took item 1, then one item 2 and the other item 3: T[1] =
  (1/3 for 2, 1/3 for 3); user 1's latest items are 2 (weight 1, no row)
  and 1 (weight 0.8).

  >>> t = ItemTransitions(np.array([1, 1, 2, 2]), np.array([1, 2, 1, 3]),
  ...                     np.array([0.0, 1, 0, 1]), 2, 3, window=1)
  >>> t.scores(np.array([1, 0])).astype(float).round(3).tolist()
  [[0.0, 0.0, 0.267, 0.267], [0.0, 0.0, 0.0, 0.0]]

  Args:
    user, item, timestamp: the training interactions.
    num_users, num_items: sizes of the encoded index (0 is padding).
    window: how many following positions count as a transition.
    history: how many of a user's latest items score.
  """

  def __init__(self, user: np.ndarray, item: np.ndarray,
               timestamp: np.ndarray, num_users: int, num_items: int,
               window: int = 10, history: int = 5):
    # Stable: ties in time keep the rows' order, as the split's do.
    order = np.lexsort((timestamp, user))
    user, item = user[order], item[order]
    width = num_items + 1
    pairs = [(item[:-gap][same], item[gap:][same], 0.9 ** (gap - 1))
             for gap in range(1, window + 1)
             for same in [user[:-gap] == user[gap:]]]
    source = np.concatenate([p[0] for p in pairs])
    target = np.concatenate([p[1] for p in pairs])
    weight = np.concatenate([np.full(len(p[0]), p[2]) for p in pairs])
    counts = sparse.csr_matrix((weight, (source, target)), (width, width))
    self.transitions = sparse.diags(
        1.0 / (np.asarray(counts.sum(axis=1)).ravel() + 1.0)) @ counts
    # Position from each user's latest item: 0 for the latest.
    rank = (np.bincount(user, minlength=num_users + 1)[user] - 1 -
            (np.arange(len(user)) - np.searchsorted(user, user)))
    latest = rank < history
    self.latest = sparse.csr_matrix(
        (0.8 ** rank[latest], (user[latest], item[latest])),
        (num_users + 1, width))

  def scores(self, users: np.ndarray) -> np.ndarray:
    return np.asarray((self.latest[users] @ self.transitions).todense(),
                      dtype=np.float32)


def tune_ease(fit: sparse.csr_matrix, validation: sparse.csr_matrix, k: int,
              grid: Sequence[float] = (50, 100, 200, 500, 1000, 2000)
              ) -> float:
  """Picks lambda by validation Recall@k (the test split is not used)."""
  return _best_of(grid, lambda l2: evaluate.evaluate_retrieval(
      EASE(fit, l2).scores, fit, validation, k)["overall"][f"recall@{k}"],
                  f"EASE lambda=%g validation recall@{k}=%.4f")


def _best_of(grid: Sequence[float], recall_of, message: str) -> float:
  """The first value of `grid` with the highest `recall_of(value)`, each
  logged with `message` % (value, recall)."""
  best, best_recall = grid[0], -1.0
  for value in grid:
    recall = recall_of(value)
    log.info(message, value, recall)
    if recall > best_recall:
      best, best_recall = value, recall
  return best


def new_user_holdout(train: sparse.csr_matrix, held_out: float = 0.1,
                     seed: int = 0) -> Optional[Tuple[sparse.csr_matrix,
                                                      sparse.csr_matrix]]:
  """A seeded `held_out` share of the users with training interactions,
  treated as new users: (`train` without their rows, their rows); None
  when there are too few users to hold some out and keep some."""
  users = np.flatnonzero(np.asarray(train.sum(axis=1)).ravel() > 0)
  held = np.random.default_rng(seed).random(len(users)) < held_out
  if not held.any() or held.all():
    return None
  keep = sparse.diags(np.isin(np.arange(train.shape[0]),
                              users[~held]).astype(np.float32))
  fit = (keep @ train).tocsr()
  return fit, (train - fit).tocsr()


def tune_feature_softmax(train: sparse.csr_matrix, user_features, k: int,
                         grid: Sequence[float] = (1e-3, 3e-3, 1e-2),
                         held_out: float = 0.1, seed: int = 0) -> float:
  """Picks `FeatureSoftmax`'s l2 by the Recall@k of `new_user_holdout`'s
  users (fitted without their rows, scored on all of them; the test split
  is not used)."""
  holdout = new_user_holdout(train, held_out, seed)
  if holdout is None:  # too few users to tell
    return grid[len(grid) // 2]
  fit, target = holdout
  none = sparse.csr_matrix(train.shape, dtype=train.dtype)  # new users
  return _best_of(grid, lambda l2: evaluate.evaluate_retrieval(
      FeatureSoftmax(fit, user_features, l2).scores, none, target,
      k)["overall"][f"recall@{k}"],
                  f"FeatureSoftmax l2=%g held-out recall@{k}=%.4f")


def tune_transitions(rows, num_users: int, num_items: int,
                     fit: sparse.csr_matrix, validation: sparse.csr_matrix,
                     k: int, windows: Sequence[int] = (5, 10, 20),
                     histories: Sequence[int] = (5, 20)) -> dict:
  """Picks `ItemTransitions`' window and history by validation Recall@k,
  fitted on `rows` (the fit part's interactions, with timestamps)."""
  best, best_recall = {}, -1.0
  for window in windows:
    for history in histories:
      model = ItemTransitions(rows.user, rows.item, rows.timestamp, num_users,
                              num_items, window, history)
      recall = evaluate.evaluate_retrieval(model.scores, fit, validation,
                                           k)["overall"][f"recall@{k}"]
      if recall > best_recall:
        best, best_recall = {"window": window, "history": history}, recall
  return best


def shrunk_means(index: np.ndarray, values: np.ndarray, size: int,
                 shrinkage: float, prior: float = 0.0) -> np.ndarray:
  """Per index 0..size: (sum of values + shrinkage * prior) / (count +
  shrinkage); `prior` where there is nothing to average."""
  sums = np.bincount(index, values, minlength=size + 1)
  totals = np.bincount(index, minlength=size + 1) + shrinkage
  means = np.full(size + 1, float(prior))
  np.divide(sums + shrinkage * prior, totals, out=means, where=totals > 0)
  return means


class ItemMeanRating:
  """Predicts (sum of item ratings + m * global mean) / (count + m)."""

  def __init__(self, item: np.ndarray, rating: np.ndarray, num_items: int,
               shrinkage: float = 5.0):
    self.global_mean = float(rating.mean())
    self.means = shrunk_means(item, rating, num_items, shrinkage,
                              self.global_mean)

  def predict(self, item: np.ndarray) -> np.ndarray:
    return self.means[item]
