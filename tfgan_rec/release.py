"""Synthetic data for release: the release generator's training (private
with `--dp-epsilon`), what a run keeps of it, and the synthetic users,
items and interactions `python -m tfgan_rec.synthesize` writes.

A run with `privacy.epsilon > 0` keeps in <run-dir>/release/:
- `generator.*`: the release generator's weights (features + noise in,
  scores over the catalogue out; no history input);
- `release.json`: its sizes, its feature preprocessing, the released
  feature marginals and the privacy statement (what privacy.json says);
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


@dataclasses.dataclass
class Release:
  """A release generator and what generating from it needs."""
  generator: tf.keras.Model
  marginals: privacy.Marginals
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
  plan, statement, rng = None, privacy.not_private(settings.steps,
                                                   len(users)), None
  if config.privacy.private:
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    plan = privacy.plan(config.privacy, len(users), settings.batch_size,
                        settings.steps, settings.d_steps, replicas)
    statement = plan.to_dict()
    rng = np.random.default_rng(secrets.randbits(128))
    marginals = privacy.noisy_marginals(
        data.user_features, users, plan.feature_epsilon, plan.feature_delta,
        rng)
  else:
    rng = np.random.default_rng(config.seed)
    marginals = privacy.noisy_marginals(data.user_features, users, math.inf,
                                        1.0, rng)
  released = marginals.sample(len(users), rng)
  trainer = private.ReleaseGANTrainer(settings, gan_data, released, plan,
                                      config.seed, logdir=logdir)
  trainer.train()
  statement["last_step"] = trainer.last_metrics
  return Release(trainer.generator, marginals, statement, item_table(data))


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
      "privacy": release.privacy,
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
  return Release(generator, marginals, description["privacy"], items)


def synthesize(release: Release, users: int, seed: int
               ) -> Dict[str, pd.DataFrame]:
  """`users` synthetic users: features drawn from the released marginals,
  interactions drawn item by item with the generated probabilities (a
  user drawing none gets their most likely item); rating 1 (implicit) and
  random timestamps. Post-processing of the release: no privacy cost.

  Returns:
    {"ratings", "users", "items"} frames in the CSV formats `train` reads.
  """
  rng = np.random.default_rng(seed)
  features, scores = _draw_users(release, users, rng, seed)
  drawn = rng.random(scores.shape) < scores
  empty = ~drawn.any(axis=1)
  drawn[empty, np.argmax(scores[empty], axis=1)] = True
  user, item = np.nonzero(drawn)
  user_ids = np.array([f"s{i + 1}" for i in range(users)], dtype=object)
  ratings = pd.DataFrame({
      "user_id": user_ids[user],
      "item_id": release.items["item_id"].to_numpy()[item - 1],
      "rating": 1.0,
      "timestamp": rng.integers(0, 10**9, size=len(user))})
  user_frame = pd.DataFrame({"user_id": user_ids, **features})
  return {"ratings": ratings, "users": user_frame, "items": release.items}


def generated_probabilities(release: Release, users: int, seed: int
                            ) -> np.ndarray:
  """The item probabilities [users, num_items + 1] (column 0, the padding
  item, is 0) of `users` synthetic users drawn as `synthesize` draws them
  (the same users for the same seed), before their interactions are
  drawn: what a membership-inference attack on the release reads
  (`privacy_audit.likelihood_ratio`)."""
  return _draw_users(release, users, np.random.default_rng(seed), seed)[1]


def _draw_users(release: Release, users: int, rng: np.random.Generator,
                seed: int) -> tuple:
  """Features from the released marginals (drawn with `rng`) and the
  generator's item probabilities for them (noise from `seed`)."""
  table = release.marginals.sample(users, rng)
  features = {name: column[1:] for name, column in table.columns.items()}
  scores = private.generate_scores(release.generator, features, users, seed)
  scores[:, 0] = 0.0
  return features, scores


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
    json.dump({k: v for k, v in statement.items() if k != "last_step"}, f,
              indent=2, default=float)
