"""Synthetic data for release: the release generator's training (private
with `--dp-epsilon`), what a run keeps of it, and the synthetic users,
items and interactions `python -m tfgan_rec.synthesize` writes.

A run with `privacy.epsilon > 0` keeps in <run-dir>/release/:
- `generator.*`: the release generator's weights (features + noise in,
  logits over the catalogue out; no history input);
- `release.json`: its sizes, its feature preprocessing, the released
  feature marginals and profile lengths and the privacy statement (what
  privacy.json says);
- `items.csv`: the item catalogue and its features, public by assumption
  (see docs/privacy.md).
Nothing else there derives from the real users, and the run's
discriminator and secret seed are not kept.
"""
import dataclasses
import json
import math
import os
import secrets
from typing import Dict, Optional

import numpy as np
import pandas as pd
import tensorflow as tf

from tfgan_rec import privacy
from tfgan_rec.config import GANConfig, RunConfig
from tfgan_rec.data import SplitData
from tfgan_rec.errors import InputError
from tfgan_rec.gan import private
from tfgan_rec.gan.trainer import GANData
from tfgan_rec.layers import FeaturePreprocessing

RELEASE_DIR, RELEASE_FILE, GENERATOR_PREFIX = ("release", "release.json",
                                               "generator")
ITEMS_FILE, USERS_FILE, RATINGS_FILE, PRIVACY_FILE = (
    "items.csv", "users.csv", "ratings.csv", "privacy.json")
# Synthetic users whose logits are generated and items drawn at once: the
# logits of a chunk, CHUNK x (items + 1) floats, are all that is held. The
# generator's noise is drawn per chunk, so CHUNK is part of what a seed
# reproduces.
CHUNK = 1024


@dataclasses.dataclass
class Release:
  """A release generator and what generating from it needs."""
  generator: tf.keras.Model
  marginals: privacy.Marginals
  lengths: privacy.Lengths
  privacy: dict
  items: pd.DataFrame


def train_release_generator(config: RunConfig, split_data: SplitData,
                            logdir: Optional[str] = None) -> Release:
  """Releases the feature marginals and trains the release generator on
  the train part, with DP when `config.privacy.private` (the budget split
  and sigma from `privacy.plan`; the run's secret randomness from the OS).
  """
  data, rows = split_data.data, split_data.examples("train")
  gan_data = GANData.from_rows(rows.user, rows.item, data.num_users,
                               data.num_items, data.user_features)
  users, settings = gan_data.train_users, config.gan
  plan, statement = None, privacy.not_private(settings.steps, len(users))
  if config.privacy.private:
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    plan = privacy.plan(config.privacy, len(users), settings.batch_size,
                        settings.steps, settings.d_steps, replicas)
    statement = plan.to_dict()
    rng = np.random.default_rng(secrets.randbits(128))
  else:
    rng = np.random.default_rng(config.seed)
  marginals, lengths, prior = release_summaries(gan_data, plan, rng)
  released = marginals.sample(len(users), rng)
  trainer = private.ReleaseGANTrainer(settings, gan_data, released, plan,
                                      config.seed, logdir=logdir,
                                      lengths=lengths, prior=prior)
  trainer.train()
  statement["last_step"] = trainer.last_metrics
  return Release(trainer.generator, marginals, lengths, statement,
                 item_table(data))


def release_summaries(gan_data: GANData, plan: Optional[privacy.PrivacyPlan],
                      rng: np.random.Generator) -> tuple:
  """What the release reads of the real users besides the discriminator,
  each DP with its share of `plan` (exact without a plan): the feature
  marginals, the profile lengths and the generator's initial logits from
  the item popularity.

  Returns:
    (privacy.Marginals, privacy.Lengths, prior logits [num_items + 1]).
  """
  users, num_items = gan_data.train_users, gan_data.num_items
  lengths = np.diff(gan_data.seen_splits)[users]
  if plan is None:
    epsilon, delta, length_epsilon, noise = math.inf, 1.0, math.inf, 0.0
  else:
    epsilon = plan.feature_epsilon - plan.length_epsilon
    delta, length_epsilon = plan.feature_delta, plan.length_epsilon
    noise = plan.popularity_noise
  marginals = privacy.noisy_marginals(gan_data.user_features, users, epsilon,
                                      delta, rng)
  released_lengths = privacy.noisy_lengths(lengths, num_items,
                                           length_epsilon, rng)
  popularity = privacy.noisy_popularity(
      gan_data.seen_items, gan_data.seen_splits, users, num_items, noise, rng)
  return (marginals, released_lengths,
          privacy.prior_logits(popularity, noise))


def public_statement(statement: dict) -> dict:
  """The privacy statement without the training's last losses (read from
  real rows without noise: not covered by the guarantee)."""
  return {k: v for k, v in statement.items() if k != "last_step"}


def item_table(data) -> pd.DataFrame:
  """item_id plus the item feature columns, as `train --items` reads."""
  table = {"item_id": data.item_ids}
  table.update({name: column[1:] for name, column in
                data.item_features.columns.items()})
  return pd.DataFrame(table)


def save_release(release: Release, config: GANConfig, run_dir: str) -> str:
  """Writes the release folder of a run; returns its path."""
  folder = os.path.join(run_dir, RELEASE_DIR)
  os.makedirs(folder, exist_ok=True)
  generator = release.generator
  tf.train.Checkpoint(generator=generator).write(
      os.path.join(folder, GENERATOR_PREFIX))
  description = {
      "num_items": len(release.items),
      "gan": {"noise_dim": config.noise_dim, "hidden": list(config.hidden),
              "feature_dim": config.feature_dim},
      "preprocessing": generator.condition.features.preprocessing
                       .get_config(),
      "marginals": {"counts": release.marginals.counts,
                    "kinds": release.marginals.kinds},
      "lengths": dataclasses.asdict(release.lengths),
      # Not the last step's losses: they are computed from real rows
      # without noise (they stay in the run folder, which is never
      # released).
      "privacy": public_statement(release.privacy),
  }
  with open(os.path.join(folder, RELEASE_FILE), "w", encoding="utf-8") as f:
    json.dump(description, f, indent=2, default=float)
  release.items.to_csv(os.path.join(folder, ITEMS_FILE), index=False)
  return folder


def load_release(run_dir: str) -> Release:
  """The release generator a run saved; InputError if it has none."""
  folder = os.path.join(run_dir, RELEASE_DIR)
  path = os.path.join(folder, RELEASE_FILE)
  if not os.path.isfile(path):
    raise InputError(f"'{path}' not found; --run-dir must be a run trained "
                     f"with --dp-epsilon (a number, or inf for no privacy).")
  with open(path, encoding="utf-8") as handle:
    description = json.load(handle)
  if "lengths" not in description:
    raise InputError(f"'{path}' is a release of an older version (item "
                     f"scores without profile lengths); train it again.")
  preprocessing = FeaturePreprocessing.from_config(
      description["preprocessing"])
  config = GANConfig(noise_dim=description["gan"]["noise_dim"],
                     hidden=tuple(description["gan"]["hidden"]),
                     feature_dim=description["gan"]["feature_dim"])
  generator = private.build_generator(description["num_items"],
                                      preprocessing, config)
  tf.train.Checkpoint(generator=generator).read(
      os.path.join(folder, GENERATOR_PREFIX)).expect_partial()
  marginals = privacy.Marginals(**description["marginals"])
  items = pd.read_csv(os.path.join(folder, ITEMS_FILE), dtype=str,
                      keep_default_na=False)
  return Release(generator, marginals,
                 privacy.Lengths(**description["lengths"]),
                 description["privacy"], items)


def synthesize(release: Release, users: int, seed: int
               ) -> Dict[str, pd.DataFrame]:
  """`users` synthetic users: features drawn from the released marginals,
  a profile length from the released lengths, and that many items drawn
  without replacement from the generator's softmax (Gumbel top-k, as in
  training); rating 1 (implicit) and random timestamps. Post-processing of
  the release: no privacy cost.

  Returns:
    {"ratings", "users", "items"} frames in the CSV formats `train` reads.
  """
  rng = np.random.default_rng(seed)
  features, lengths, chunks = _draw_users(release, users, rng, seed)
  item = np.concatenate([
      _top_items(logits + rng.gumbel(size=logits.shape), chunk_lengths)
      for logits, chunk_lengths in chunks])
  user = np.repeat(np.arange(users), lengths)
  user_ids = np.array([f"s{i + 1}" for i in range(users)], dtype=object)
  ratings = pd.DataFrame({
      "user_id": user_ids[user],
      "item_id": release.items["item_id"].to_numpy()[item - 1],
      "rating": 1.0,
      "timestamp": rng.integers(0, 10**9, size=len(user))})
  user_frame = pd.DataFrame({"user_id": user_ids, **features})
  return {"ratings": ratings, "users": user_frame, "items": release.items}


def _top_items(keys: np.ndarray, lengths: np.ndarray) -> np.ndarray:
  """Row i's `lengths[i]` items of largest key, rows one after the other."""
  order = np.argsort(-keys, axis=1)
  return order[np.arange(keys.shape[1])[None, :] < lengths[:, None]]


def generated_probabilities(release: Release, users: int, seed: int
                            ) -> np.ndarray:
  """Each item's probability [users, num_items + 1] (column 0, the padding
  item, is 0) of being among the items of `users` synthetic users drawn as
  `synthesize` draws them (the same users and lengths for the same seed):
  what a membership-inference attack on the release reads
  (`privacy_audit.likelihood_ratio`).

  Drawing k items without replacement with weights w (Gumbel top-k) takes
  item j with probability about 1 - exp(-t w_j), t such that these add up
  to k (Rosen 1997, order sampling)."""
  _, _, chunks = _draw_users(release, users, np.random.default_rng(seed),
                             seed)
  return np.concatenate([_inclusion_probabilities(logits, chunk_lengths)
                         for logits, chunk_lengths in chunks])


def _inclusion_probabilities(logits: np.ndarray,
                             lengths: np.ndarray) -> np.ndarray:
  """1 - exp(-t w) per row, t found by bisection on log t so that the row
  adds up to its length. The weights are exp(logits - max) in [0, 1], the
  largest 1: at log t = -60 a row adds up to at most items x e^-60, below
  any length (>= 1); at log t = 60 every item with w above e^-57 is taken
  with probability ~1, so the row reaches its length whenever at least that
  many items have logits within 57 of its best. (Gumbel top-k always draws
  `length` items; a row with fewer such items keeps the bound's
  probabilities, which add up to less than its length. From the
  popularity prior no row comes near that.) 100 halvings of the 120-wide
  interval leave it far below float64 resolution."""
  weights = np.exp(logits.astype(np.float64) -
                   logits.max(axis=1, keepdims=True))
  low, high = np.full(len(logits), -60.0), np.full(len(logits), 60.0)
  for _ in range(100):
    middle = (low + high) / 2
    taken = -np.expm1(-np.exp(middle)[:, None] * weights).sum(axis=1)
    low, high = (np.where(taken < lengths, middle, low),
                 np.where(taken < lengths, high, middle))
  return -np.expm1(-np.exp(high)[:, None] * weights)


def _draw_users(release: Release, users: int, rng: np.random.Generator,
                seed: int) -> tuple:
  """(features, lengths, chunks): features from the released marginals and
  profile lengths from the released lengths, drawn with `rng`, and an
  iterator over CHUNK users at a time of (the generator's logits for them,
  noise from `seed`; their lengths)."""
  table = release.marginals.sample(users, rng)
  features = {name: column[1:] for name, column in table.columns.items()}
  lengths = release.lengths.sample(users, rng)
  logits = private.generated_logits(release.generator, features, users, seed,
                                    CHUNK)
  starts = range(0, users, CHUNK)
  return features, lengths, ((chunk, lengths[start:start + len(chunk)])
                             for start, chunk in zip(starts, logits))


def write_synthetic(frames: Dict[str, pd.DataFrame], statement: dict,
                    out: str) -> None:
  """Writes ratings.csv, users.csv, items.csv and privacy.json to `out`
  (which must not hold files already)."""
  if os.path.isdir(out) and os.listdir(out):
    raise InputError(f"--out '{out}' is not empty; choose a new folder "
                     f"(nothing was overwritten).")
  os.makedirs(out, exist_ok=True)
  for name, file in (("ratings", RATINGS_FILE), ("users", USERS_FILE),
                     ("items", ITEMS_FILE)):
    frames[name].to_csv(os.path.join(out, file), index=False)
  with open(os.path.join(out, PRIVACY_FILE), "w", encoding="utf-8") as f:
    json.dump(public_statement(statement), f,
              indent=2, default=float)
