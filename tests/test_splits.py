"""Splits: no leakage, temporal order, determinism under a seed."""
import numpy as np

from tfgan_rec.data import splits


def _data(seed=0, users=40):
  rng = np.random.default_rng(seed)
  counts = rng.integers(2, 30, users)
  user = np.repeat(np.arange(1, users + 1), counts)
  timestamp = rng.integers(0, 1000, len(user)).astype(float)
  return user, timestamp


def test_parts_partition_rows_without_leakage():
  user, timestamp = _data()
  split = splits.make_split(user, timestamp, 0.2, 0.25, 0.3, 5, seed=1)
  assert not set(split.train) & set(split.test)
  assert not set(split.fit) & set(split.validation)
  assert set(split.fit) | set(split.validation) == set(split.train)
  # Truncation only removes training rows; nothing moves into test.
  assert len(set(split.train) | set(split.test)) <= len(user)


def test_held_out_rows_are_each_users_latest():
  user, timestamp = _data()
  split = splits.make_split(user, timestamp, 0.2, 0.25, seed=1)
  for u in np.unique(user):
    train_t = timestamp[split.train][user[split.train] == u]
    test_t = timestamp[split.test][user[split.test] == u]
    if len(test_t):
      assert train_t.max() <= test_t.min()
    fit_t = timestamp[split.fit][user[split.fit] == u]
    val_t = timestamp[split.validation][user[split.validation] == u]
    if len(val_t):
      assert fit_t.max() <= val_t.min()


def test_holdout_fraction_and_single_interaction_users():
  user = np.array([1] * 10 + [2])
  timestamp = np.arange(11.0)
  kept, held = splits.temporal_holdout(user, timestamp, np.arange(11), 0.2)
  assert list(held) == [8, 9]
  assert 10 in kept  # a one-row user is never held out entirely


def test_sparse_users_truncated_to_keep_latest():
  user, timestamp = _data()
  split = splits.make_split(user, timestamp, 0.2, 0.2, 0.3, 5, seed=3)
  assert len(split.sparse_users) == round(0.3 * 40)
  full_train, _ = splits.temporal_holdout(user, timestamp,
                                          np.arange(len(user)), 0.2)
  for u in split.sparse_users:
    rows = split.train[user[split.train] == u]
    assert len(rows) <= 5
    all_rows = full_train[user[full_train] == u]
    assert timestamp[rows].min() >= np.sort(timestamp[all_rows])[-len(rows)]


def test_deterministic_under_seed_and_seed_matters():
  user, timestamp = _data()
  first = splits.make_split(user, timestamp, 0.2, 0.2, 0.3, 5, seed=11)
  again = splits.make_split(user, timestamp, 0.2, 0.2, 0.3, 5, seed=11)
  other = splits.make_split(user, timestamp, 0.2, 0.2, 0.3, 5, seed=12)
  for part in ("train", "fit", "validation", "test", "sparse_users"):
    np.testing.assert_array_equal(getattr(first, part), getattr(again, part))
  assert set(first.sparse_users) != set(other.sparse_users)
  np.testing.assert_array_equal(first.test, other.test)


def test_new_users_leave_training_and_all_their_rows_are_test():
  user, timestamp = _data()
  split = splits.make_split(user, timestamp, 0.2, 0.25, 0.3, 5, seed=1)
  held, new = splits.hold_out_users(user, split, 0.1, seed=1)
  assert len(new) == round(0.1 * len(np.unique(user[split.train])))
  for part in (held.train, held.fit, held.validation):
    assert not np.isin(user[part], new).any()
  every_row = np.flatnonzero(np.isin(user, new))
  assert set(every_row) <= set(held.test)
  known_test = split.test[~np.isin(user[split.test], new)]
  assert set(known_test) <= set(held.test)


def test_returning_users_keep_their_oldest_interactions():
  user, timestamp = _data()
  rows = np.arange(len(user))
  latest, chosen = splits.truncate_histories(user, timestamp, rows, 0.5, 3,
                                             seed=2)
  oldest, same = splits.truncate_histories(user, timestamp, rows, 0.5, 3,
                                           seed=2, oldest=True)
  np.testing.assert_array_equal(chosen, same)
  for u in chosen[:5]:
    mine = timestamp[user == u]
    kept_late = timestamp[latest][user[latest] == u]
    kept_early = timestamp[oldest][user[oldest] == u]
    assert len(kept_late) == len(kept_early) == min(3, len(mine))
    np.testing.assert_array_equal(np.sort(kept_early), np.sort(mine)[:3])
    np.testing.assert_array_equal(np.sort(kept_late), np.sort(mine)[-3:])
