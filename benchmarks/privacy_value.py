"""What private synthetic data is worth on MovieLens 100K, and what DP costs.

For each epsilon (inf = the same release generator without DP) the release
generator is trained on the train part, as many synthetic users as real
training users are drawn from it, and item-to-item recommenders are fitted
on the synthetic interactions alone: EASE (lambda 500) and MostPop. They
score the real test users from their real training items (EASE's
item-item weights transfer across users; the synthetic data never holds a
real user) and are compared with the same models fitted on the real
training interactions. Test Recall@20, training items excluded.

    python benchmarks/privacy_value.py --seeds 0 --epsilons 1 3 10 inf

Prints a table and writes benchmarks/results/privacy_value.json. Timings
are also written: the release GAN's seconds per step with and without DP.
"""
import argparse
import json
import math
import os
import time

import tfgan_rec  # noqa: F401  (Keras 2 before TensorFlow loads)
import numpy as np
import pandas as pd

from tfgan_rec import baselines, evaluate, pipeline, release
from tfgan_rec.config import RunConfig
from tfgan_rec.data import interaction_matrix

K, L2 = 20, 500.0


def synthetic_matrix(frames, data):
  """The synthetic interactions as a [users, items] matrix over the real
  catalogue's indices."""
  index = pd.Index(data.item_ids).get_indexer(frames["ratings"]["item_id"])
  users = pd.Index(frames["users"]["user_id"]).get_indexer(
      frames["ratings"]["user_id"])
  return interaction_matrix(users + 1, index + 1, len(frames["users"]),
                            data.num_items)


def recall(scorer, split_data):
  matrices = split_data.matrices
  return evaluate.evaluate_retrieval(scorer, matrices["train"],
                                     matrices["test"], K)["overall"][
                                         f"recall@{K}"]


def item_scorers(matrix, split_data):
  """EASE and MostPop fitted on `matrix`, scoring real users from their
  real training rows."""
  ease = baselines.EASE(matrix, L2)
  real = split_data.matrices["train"]
  counts = np.asarray(matrix.sum(axis=0)).ravel()
  return {"EASE": lambda users: np.asarray(real[users] @ ease.weights),
          "MostPop": lambda users: np.broadcast_to(
              counts, (len(users), len(counts)))}


def run(seed, epsilon, steps, batch):
  config = RunConfig(seed=seed)
  config.gan.steps, config.gan.batch_size = steps, batch
  config.privacy.epsilon = epsilon
  split_data = pipeline.prepare(config.data, seed)
  start = time.time()
  trained = release.train_release_generator(config, split_data)
  seconds = time.time() - start
  users = len(np.unique(split_data.examples("train").user))
  frames = release.synthesize(trained, users, seed)
  matrix = synthetic_matrix(frames, split_data.data)
  row = {"seed": seed, "epsilon": epsilon, "seconds_per_step": seconds / steps,
         "spent": trained.privacy.get("epsilon"),
         "sigma": trained.privacy.get("noise_multiplier"),
         "synthetic_interactions": int(matrix.nnz)}
  for name, scorer in item_scorers(matrix, split_data).items():
    row[f"{name} on synthetic"] = recall(scorer, split_data)
  return row, split_data


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--seeds", type=int, nargs="+", default=[0])
  parser.add_argument("--epsilons", type=float, nargs="+",
                      default=[1, 3, 10, math.inf])
  parser.add_argument("--steps", type=int, default=1000)
  parser.add_argument("--batch", type=int, default=128)
  args = parser.parse_args()
  rows = []
  for seed in args.seeds:
    for epsilon in args.epsilons:
      row, split_data = run(seed, epsilon, args.steps, args.batch)
      print(json.dumps(row), flush=True)
      rows.append(row)
    for name, scorer in item_scorers(split_data.matrices["train"],
                                     split_data).items():
      rows.append({"seed": seed, "epsilon": "real data",
                   f"{name} on real": recall(scorer, split_data)})
      print(json.dumps(rows[-1]), flush=True)
  os.makedirs("benchmarks/results", exist_ok=True)
  with open("benchmarks/results/privacy_value.json", "w",
            encoding="utf-8") as handle:
    json.dump(rows, handle, indent=2, default=str)


if __name__ == "__main__":
  main()
