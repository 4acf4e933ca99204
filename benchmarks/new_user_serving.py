"""Latency of `recommend_for_features` for new users, by who retrieves.

    python -m tfgan_rec.train --run-dir runs/ml --export-dir runs/ml/export
    python benchmarks/new_user_serving.py --export-dir runs/ml/export

Loads the run's exported `recommend` model (its user features must form
groups, so that the feature softmax serves users without history, as the
run's report says) and times, at batch 1 and 64, interleaved so that a busy
machine slows them alike:
- rows without liked items: the feature softmax retrieves (a sparse
  multi-hot times W, then an exact top 100), the tower re-ranks;
- rows with 5 liked items: the query tower retrieves, as for every request
  before the softmax existed (its `tf.cond` skips the softmax);
- the two mixed in one batch (both paths run).
The requests' features are real users' rows of the run's data
(`--dataset`, default MovieLens 100K, read as training reads it).

Prints a table and writes JSON (default
benchmarks/results/new_user_serving.json).
"""
import argparse
import json
import os
import platform
import sys

import tfgan_rec  # noqa: F401  (Keras 2 before TensorFlow loads)
import numpy as np
import tensorflow as tf

from tfgan_rec import pipeline, saved_models
from tfgan_rec.config import RunConfig

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serving import interleaved  # noqa: E402

LIKED = 5


def requests(data, batch: int, liked: bool, seed: int = 0) -> dict:
  """One `recommend_for_features` request of `batch` real users' raw
  features, each with LIKED random catalogue items or none."""
  rng = np.random.default_rng(seed)
  users = rng.choice(np.arange(1, len(data.user_ids) + 1), batch)
  request = {name: tf.constant(column[users].astype(str))
             for name, column in data.user_features.columns.items()}
  items = data.item_ids[rng.choice(len(data.item_ids), (batch, LIKED))]
  request["liked_item_ids"] = tf.constant(
      items if liked else np.full((batch, 1), ""), tf.string)
  request["k"] = tf.fill([batch], 20)
  return request


def mixed(data, batch: int) -> dict:
  """Half the rows without liked items, half with."""
  none, some = requests(data, batch, False), requests(data, batch, True, 1)
  request = {name: tf.where(tf.range(batch) < batch // 2, none[name],
                            some[name]) for name in data.user_features.columns}
  padded = tf.concat([none["liked_item_ids"], tf.fill([batch, LIKED - 1],
                                                      "")], axis=1)
  request["liked_item_ids"] = tf.where(
      (tf.range(batch) < batch // 2)[:, None], padded,
      some["liked_item_ids"])
  request["k"] = none["k"]
  return request


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--export-dir", required=True)
  parser.add_argument("--dataset", default="movielens")
  parser.add_argument("--repeats", type=int, default=200)
  parser.add_argument("--out", default=os.path.join(
      os.path.dirname(__file__), "results", "new_user_serving.json"))
  args = parser.parse_args(argv)
  model_dir = os.path.join(args.export_dir, "recommend")
  version = saved_models.versions(model_dir)[-1]
  serve = tf.saved_model.load(os.path.join(model_dir, str(version))
                              ).signatures["recommend_for_features"]
  config = RunConfig()
  config.data.dataset = args.dataset
  data = pipeline.prepare(config.data, config.seed).data
  results = []
  for batch in (1, 64):
    calls = {"no liked items (feature softmax)":
                 requests(data, batch, liked=False),
             f"{LIKED} liked items (query tower)":
                 requests(data, batch, liked=True)}
    if batch > 1:
      calls["half and half"] = mixed(data, batch)
    timed = interleaved({name: (lambda r=r: serve(**r))
                         for name, r in calls.items()}, args.repeats)
    results += [{"batch": batch, "request": name, **figures}
                for name, figures in timed.items()]
  print(f"{'batch':>5}  {'request':34}  {'p50 ms':>7}  {'p99 ms':>7}")
  for row in results:
    print(f"{row['batch']:>5}  {row['request']:34}  {row['p50_ms']:7.2f}  "
          f"{row['p99_ms']:7.2f}")
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump({"export": os.path.abspath(model_dir), "version": version,
               "machine": platform.processor() or platform.machine(),
               "cpus": os.cpu_count(), "results": results}, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
