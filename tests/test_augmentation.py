"""Augmentation rows, calibrated ratings, cold-item hold-out, and the
new-item content generator."""
import numpy as np
import pytest

from tfgan_rec import augmentation, evaluate
from tfgan_rec.config import AugmentationConfig, GANConfig, ItemGANConfig
from tfgan_rec.data import Examples, interaction_matrix, splits
from tfgan_rec.gan import item_generator
from tfgan_rec.gan import trainer as gan_trainer
from tfgan_rec.recommender import training


@pytest.fixture(scope="module")
def small_trainer(prepared):
  _, ready = prepared
  data, fit = ready.data, ready.split.fit
  gan_data = gan_trainer.GANData.from_rows(data.user[fit], data.item[fit],
                                           data.num_users, data.num_items,
                                           data.user_features)
  trainer = gan_trainer.GANTrainer(GANConfig(steps=30, batch_size=32,
                                             hidden=(32,)), gan_data, seed=1)
  trainer.train()
  return trainer


@pytest.mark.parametrize("users_per_chunk", [augmentation.USERS_PER_CHUNK, 3])
def test_generated_rows_target_sparse_users_only(prepared, small_trainer,
                                                 users_per_chunk,
                                                 monkeypatch):
  _, ready = prepared
  monkeypatch.setattr(augmentation, "USERS_PER_CHUNK", users_per_chunk)
  rows = ready.examples("fit")
  config = AugmentationConfig(threshold=6, items_per_user=4, weight=0.25)
  score = augmentation.gan_scorer(small_trainer, rows, ready.data, 2)
  generated = augmentation.generate_interactions(score, rows, ready.data,
                                                 config)
  counts = np.bincount(rows.user, minlength=ready.data.num_users + 1)
  targets = np.flatnonzero(counts[1:] < 6) + 1
  assert set(generated.user) == set(targets)
  assert np.all(np.bincount(generated.user)[targets] == 4)
  assert np.all(generated.weight == 0.25)
  # Never an item the user already has, never the padding item.
  seen = set(zip(rows.user, rows.item))
  assert not seen & set(zip(generated.user, generated.item))
  assert generated.item.min() >= 1
  # Ratings are calibrated baseline estimates inside the observed range.
  assert rows.rating.min() <= generated.rating.min()
  assert generated.rating.max() <= rows.rating.max()
  assert abs(generated.rating.mean() - rows.rating.mean()) < 0.75
  combined = rows + generated
  assert len(combined.user) == len(rows.user) + len(generated.user)


def test_noise_agreement_is_the_overlap_of_two_noise_streams(
    prepared, small_trainer):
  _, ready = prepared
  rows, data = ready.examples("fit"), ready.data
  config = AugmentationConfig(threshold=6, items_per_user=4)
  agreement = augmentation.noise_agreement(small_trainer, rows, data, config)
  seen = interaction_matrix(rows.user, rows.item, data.num_users,
                            data.num_items)
  users = augmentation.thin_users(rows, data.num_users, 6)
  tops = [augmentation.top_unseen(augmentation.gan_scorer(
      small_trainer, rows, data, 1, stream), seen, users, 4)
          for stream in (1, 1, 2)]
  np.testing.assert_array_equal(tops[0], tops[1])  # a stream reproduces
  assert agreement == pytest.approx(np.mean(
      [len(set(a) & set(b)) / 4 for a, b in zip(tops[0], tops[2])]))
  # 30 steps in, the noise still changes some of the generated items.
  assert 0.0 <= agreement < 1.0


def test_top_unseen_holds_only_its_m_columns(small_trainer):
  users = np.arange(1, 11)
  data = small_trainer.data
  seen = interaction_matrix(
      np.repeat(np.arange(len(data.seen_splits) - 1),
                np.diff(data.seen_splits)), data.seen_items,
      len(data.seen_splits) - 2, data.num_items)
  score = lambda u: small_trainer.generate(u, samples=1)
  top = augmentation.top_unseen(score, seen, users, m=3)
  assert top.shape == (10, 3)
  # Not a view into the [users, catalogue] partition, which chunking frees.
  assert top.base is None or top.base.nbytes == top.nbytes


def test_baseline_ratings_follow_user_and_item_bias():
  rows = Examples(
      user=np.array([1, 1, 2, 2]), item=np.array([1, 2, 1, 2]),
      rating=np.array([5.0, 4.0, 2.0, 1.0], np.float32),
      timestamp=np.zeros(4), weight=np.ones(4, np.float32))
  rate = augmentation.baseline_ratings(rows, num_users=2, num_items=2, shrinkage=0)
  assert rate(np.array([1]), np.array([1]))[0] > rate(np.array([2]), np.array([1]))[0]
  assert rate(np.array([1]), np.array([1]))[0] > rate(np.array([1]), np.array([2]))[0]


def test_cold_items_leave_training_but_stay_in_test(prepared):
  _, ready = prepared
  data = ready.data
  split, cold = splits.hold_out_items(data.item, ready.split, 0.1, seed=3)
  assert len(cold) == round(0.1 * len(np.unique(data.item[ready.split.train])))
  for part in (split.train, split.fit, split.validation):
    assert not np.isin(data.item[part], cold).any()
  assert np.isin(data.item[split.test], cold).any()
  np.testing.assert_array_equal(split.test, ready.split.test)


def test_content_generator_places_new_items_near_similar_warm_items(trained):
  config, ready, result = trained
  data = ready.data
  embeddings = training.item_matrix(result.model)
  items = np.arange(1, data.num_items + 1)
  rng = np.random.default_rng(0)
  held = rng.choice(items, len(items) // 10, replace=False)
  warm = np.setdiff1d(items, held)
  generator = item_generator.train_item_generator(
      data.item_features, warm, embeddings[warm],
      ItemGANConfig(steps=400), seed=0)
  generated = item_generator.generate_item_embeddings(
      generator, data.item_features, held)
  assert np.allclose(np.linalg.norm(generated, axis=1), 1.0, atol=1e-4)
  # Held-out items' generated embeddings point toward their true embeddings
  # far more than a random other item's do.
  true = embeddings[held] / np.linalg.norm(embeddings[held], axis=1,
                                           keepdims=True)
  own = np.sum(generated * true, axis=1).mean()
  shuffled = np.sum(generated * true[rng.permutation(len(held))], axis=1).mean()
  assert own > shuffled + 0.1


def test_evaluate_among_candidates_only():
  train = interaction_matrix(np.array([1]), np.array([1]), 1, 4)
  test = interaction_matrix(np.array([1, 1]), np.array([2, 4]), 1, 4)
  scores = lambda users: np.array([[0, 9, 8, 7, 1.0]])
  report = evaluate.evaluate_retrieval(scores, train, test, k=1,
                                       candidates=np.array([3, 4]))
  # Among items 3 and 4, item 3 ranks first; the only cold test item is 4.
  assert report["overall"]["recall@1"] == 0.0
  report = evaluate.evaluate_retrieval(scores, train, test, k=2,
                                       candidates=np.array([3, 4]))
  assert report["overall"]["recall@2"] == 1.0


def test_ease_teacher_feeds_the_same_path(prepared):
  _, ready = prepared
  rows = ready.examples("fit")
  config = AugmentationConfig(threshold=6, items_per_user=3, weight=0.2)
  score = augmentation.ease_scorer(rows, ready.data, l2=100.0)
  generated = augmentation.generate_interactions(score, rows, ready.data,
                                                 config)
  counts = np.bincount(rows.user, minlength=ready.data.num_users + 1)
  assert set(generated.user) == set(np.flatnonzero(counts[1:] < 6) + 1)
  assert not set(zip(rows.user, rows.item)) & set(
      zip(generated.user, generated.item))
  # EASE's own best unseen items, in its order of preference.
  user = generated.user[0]
  scores = score(np.array([user]))[0]
  scores[0] = -np.inf
  scores[rows.item[rows.user == user]] = -np.inf
  assert set(generated.item[generated.user == user]) == set(
      np.argsort(-scores)[:3])
