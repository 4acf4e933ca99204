"""How far features alone can take new users: in-sample oracles.

    python benchmarks/new_user_oracle.py --seeds 42 1 2 3 4

On the split of `python -m tfgan_rec.train --cold-users 0.1` (MovieLens
100K by default), for each seed: Recall@20 on the new users of
- `one list`: the 20 items most often in the new users' own test items,
  given to every one of them (the best single list, chosen knowing the
  answers: an upper bound for any method that cannot tell new users apart);
- FeatureSoftmax, GroupPop and MostPop as the run reports them (l2 chosen
  on held-out users with history, nothing from the test split).
No training; a few seconds per seed. Prints a table and writes JSON
(default benchmarks/results/new_user_oracle.json).
"""
import argparse
import dataclasses
import json
import os
import sys

import tfgan_rec  # noqa: F401  (Keras 2 before TensorFlow loads)
import numpy as np

from tfgan_rec import baselines, pipeline
from tfgan_rec.config import RunConfig

K = 20


def one_list_scores(test, new_users: np.ndarray):
  """Every user scores items by their count among the new users' test
  items."""
  counts = np.asarray(test[new_users].sum(axis=0), np.float32).ravel()
  return lambda users: np.broadcast_to(counts, (len(users), len(counts)))


def seed_row(dataset: str, seed: int) -> dict:
  config = RunConfig(seed=seed)
  config.data = dataclasses.replace(config.data, dataset=dataset,
                                    cold_users=0.1)
  split = pipeline.prepare(config.data, seed)
  train, table = split.matrices["train"], split.data.user_features
  new = np.flatnonzero(split.user_slices["new"])
  l2 = baselines.tune_feature_softmax(train, table, K)
  scorers = {"one list (in-sample oracle)":
                 one_list_scores(split.matrices["test"], new),
             "FeatureSoftmax": baselines.FeatureSoftmax(train, table,
                                                        l2).scores,
             "GroupPop": baselines.GroupPopular(train, table).scores,
             "MostPop": baselines.MostPopular(train).scores}
  return {name: pipeline.evaluate_retrieval(score, split, K)["new"][
      f"recall@{K}"] for name, score in scorers.items()}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", type=int, nargs="+",
                      default=[42, 1, 2, 3, 4])
  parser.add_argument("--dataset", default="movielens")
  parser.add_argument("--out", default=os.path.join(
      os.path.dirname(__file__), "results", "new_user_oracle.json"))
  args = parser.parse_args(argv)
  rows = {seed: seed_row(args.dataset, seed) for seed in args.seeds}
  print(f"{'method':30}  Recall@{K} on new users, mean ± std; per seed")
  for name in next(iter(rows.values())):
    values = np.array([row[name] for row in rows.values()])
    print(f"{name:30}  {values.mean():.4f} ± {values.std(ddof=1):.4f};  " +
          " ".join(f"{v:.4f}" for v in values))
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump({"dataset": args.dataset, "k": K, "seeds": rows}, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
