"""Metrics and baselines against hand-computed cases."""
import numpy as np
import pytest

from tfgan_rec import baselines, evaluate
from tfgan_rec.data import interaction_matrix


def matrix(pairs, users=3, items=6):
  pairs = np.array(pairs)
  return interaction_matrix(pairs[:, 0], pairs[:, 1], users, items)


def test_top_k_excludes_training_and_padding():
  scores = np.array([[9.0, 1, 5, 4, 3, 2, 0]])
  train = matrix([[0, 2]], users=0)
  assert evaluate.top_k(scores, train, 3).tolist() == [[3, 4, 5]]


def test_recall_ndcg_hit_by_hand():
  recommended = np.array([[1, 2, 3], [4, 5, 6]])
  truth = matrix([[0, 2], [0, 5], [1, 1]], users=1)
  metrics = evaluate.user_metrics(recommended, truth)
  # User 0: one hit (item 2) at rank 2 of two relevant items.
  assert metrics["recall"][0] == pytest.approx(0.5)
  assert metrics["ndcg"][0] == pytest.approx((1 / np.log2(3)) /
                                             (1 + 1 / np.log2(3)))
  assert metrics["hit_rate"].tolist() == [1.0, 0.0]
  assert metrics["recall"][1] == 0.0 and metrics["ndcg"][1] == 0.0


def test_evaluate_retrieval_slices_and_coverage():
  train = matrix([[1, 1], [2, 1]])
  test = matrix([[1, 2], [2, 6]])
  scores = lambda users: np.tile(np.arange(7.0), (len(users), 1))  # 6 best
  sparse = np.array([False, True, False, False])
  report = evaluate.evaluate_retrieval(scores, train, test, k=2,
                                       slices={"sparse": sparse})
  # Both users get items 6, 5: user 2 hits (item 6), user 1 misses.
  assert report["overall"]["recall@2"] == pytest.approx(0.5)
  assert report["overall"]["users"] == 2
  assert report["sparse"]["recall@2"] == 0.0
  assert report["overall"]["coverage@2"] == pytest.approx(2 / 6)


def test_rmse():
  assert evaluate.rmse(np.array([1.0, 3.0]), np.array([2.0, 3.0])) == \
      pytest.approx(np.sqrt(0.5))


def test_ease_matches_closed_form():
  train = matrix([[1, 1], [1, 2], [2, 2], [2, 3], [3, 1], [3, 3]], items=3)
  model = baselines.EASE(train, l2=1.0)
  x = train.toarray()[:, 1:]
  p = np.linalg.inv(x.T @ x + np.eye(3))
  expected = np.eye(3) - p / np.diag(p)
  np.testing.assert_allclose(model.weights[1:, 1:], expected, atol=1e-5)
  assert np.all(np.diag(model.weights) == 0)


def test_feature_softmax_learns_how_groups_combine():
  # Item 1 is taken by young women (5) and old men (15), item 2 by old
  # women (20) and young men (20): an XOR of the two features. Per-feature
  # shares (GroupPop) rank item 2 first for a young woman, and so would
  # per-feature weights (their logits obey FY + MO = FO + MY, and the
  # larger old-men group wins); the crossed groups rank item 1 first.
  import pandas as pd
  from tfgan_rec.data import features
  gender = ["F"] * 25 + ["M"] * 35
  age = ["young"] * 5 + ["old"] * 20 + ["young"] * 20 + ["old"] * 15
  takes_one = [(g, a) in (("F", "young"), ("M", "old"))
               for g, a in zip(gender, age)]
  ids = [f"u{i}" for i in range(60)]
  table = features.feature_table(pd.DataFrame(
      {"gender": gender + ["F"], "age": age + ["young"]}, index=ids + ["new"]),
      ids + ["new"])
  pairs = [[u + 1, 1 if one else 2] for u, one in enumerate(takes_one)]
  train = matrix(pairs, users=61, items=2)
  # Groups: gender 2 + age 2 + the padding row's own group in each, and
  # the crosses.
  _, inputs = baselines.group_crosses(table)
  assert inputs.shape[0] == 62 and (inputs.sum(axis=1) == 3).all()
  new_user = np.array([61])
  soft = baselines.FeatureSoftmax(train, table, l2=1e-4).scores(new_user)
  group = baselines.GroupPopular(train, table).scores(new_user)
  assert soft[0, 1:].argmax() == 0 and group[0, 1:].argmax() == 1


def test_most_popular_and_item_mean():
  train = matrix([[1, 1], [2, 1], [2, 3]], items=3)
  assert baselines.MostPopular(train).scores(np.array([1]))[0].tolist() == \
      [0, 2, 0, 1]
  item_mean = baselines.ItemMeanRating(np.array([1, 1]), np.array([4.0, 2.0]),
                                       num_items=2, shrinkage=0)
  assert item_mean.predict(np.array([1])).tolist() == [3.0]
