"""Does the interaction GAN's noise matter? Agreement between noise draws.

    python benchmarks/gan_noise.py --seeds 42 1 2 3 4

For each seed, on the split of `python -m tfgan_rec.train` (MovieLens 100K
by default), trains the interaction GAN as `--augment gan` does (on the fit
part, default settings) and, for the thin users it generates interactions
for (at most 500), compares each user's top 5 unseen generated items:
- between two independent single noise draws (`noise_agreement`, as every
  `--augment gan` report states it): 1 would mean the noise is ignored;
- between two different thin users under the same noise stream (a random
  pairing): how alike the generator's lists are anyway.
If the first is well above the second, the condition decides most of what
is generated and the noise varies the rest.

Prints a table and writes JSON (default benchmarks/results/gan_noise.json).
"""
import argparse
import json
import os
import sys
import time

import tfgan_rec  # noqa: F401  (Keras 2 before TensorFlow loads)
import numpy as np

from tfgan_rec import augmentation, pipeline
from tfgan_rec.config import RunConfig
from tfgan_rec.data import interaction_matrix


def overlap(first: np.ndarray, second: np.ndarray) -> float:
  """Mean share of each row's items that the other array's row holds."""
  return float(np.mean([len(set(a) & set(b)) / len(a)
                        for a, b in zip(first, second)]))


def seed_row(dataset: str, seed: int, max_users: int = 500) -> dict:
  config = RunConfig(seed=seed)
  config.data.dataset = dataset
  split = pipeline.prepare(config.data, seed)
  fit_rows, train_rows = split.examples("fit"), split.examples("train")
  start = time.time()
  trainer = pipeline.train_gan(config, split, fit_rows, None)
  seconds = time.time() - start
  data, settings = split.data, config.augmentation
  users = augmentation.thin_users(train_rows, data.num_users,
                                  settings.threshold)[:max_users]
  seen = interaction_matrix(train_rows.user, train_rows.item, data.num_users,
                            data.num_items)
  lists = augmentation.top_unseen(augmentation.gan_scorer(
      trainer, train_rows, data, 1, stream=1), seen, users,
      settings.items_per_user)
  pairing = np.random.default_rng(seed).permutation(len(users))
  return {"users": int(len(users)), "gan_seconds": seconds,
          "noise_agreement": augmentation.noise_agreement(
              trainer, train_rows, data, settings, max_users),
          "two_users_same_noise": overlap(lists, lists[pairing])}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", type=int, nargs="+",
                      default=[42, 1, 2, 3, 4])
  parser.add_argument("--dataset", default="movielens")
  parser.add_argument("--out", default=os.path.join(
      os.path.dirname(__file__), "results", "gan_noise.json"))
  args = parser.parse_args(argv)
  rows = {seed: seed_row(args.dataset, seed) for seed in args.seeds}
  print(f"{'seed':>5}  {'users':>5}  {'two noise draws':>15}  "
        f"{'two users':>9}  {'GAN s':>6}")
  for seed, row in rows.items():
    print(f"{seed:>5}  {row['users']:>5}  {row['noise_agreement']:15.3f}  "
          f"{row['two_users_same_noise']:9.3f}  {row['gan_seconds']:6.1f}")
  for name in ("noise_agreement", "two_users_same_noise"):
    values = np.array([row[name] for row in rows.values()])
    print(f"{name}: {values.mean():.3f} ± {values.std(ddof=1):.3f}")
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump({"dataset": args.dataset, "seeds": rows}, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
