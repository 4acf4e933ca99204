"""In-process serving latency of the exported SavedModels.

    python benchmarks/serving.py                 # 1.7K, 100K and 1M items
    python benchmarks/serving.py --items 1682 --repeats 50

For each catalogue size it builds an (untrained: latency does not depend on
the weights) two-stage model over synthetic users and interactions, with
synthetic candidate embeddings, exports the `retrieval` and `recommend`
SavedModels exactly as training does, loads them with `tf.saved_model.load`
and times `retrieval/serving_default` (exact brute force over the whole
catalogue, training items excluded) and `recommend/serving_default`
(retrieve 100, re-rank, return 20) at batch 1 and 64. The TFRS
`BruteForce` layer called directly on the same embeddings (no exclusion)
is the reference, and a bare numpy product with the index is the floor
(it only reads the index once; exact search cannot be faster). ScaNN is
timed where its TF ops load, with its recall@100 against exact search.

Prints a table and writes JSON (default benchmarks/results/serving.json).
"""
import argparse
import json
import os
import platform
import sys
import tempfile
import time

import tfgan_rec  # noqa: F401  (Keras 2 before TensorFlow loads)
import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfgan_rec import config as config_lib
from tfgan_rec import saved_models, signatures
from tfgan_rec.data import features as features_lib
from tfgan_rec.data import EncodedData, Examples
from tfgan_rec.recommender import training

K = 20
NUM_USERS = 2000
ITEMS_PER_USER = 30


def synthetic_catalogue(num_items: int, seed: int) -> EncodedData:
  """Users with ITEMS_PER_USER interactions each over a Zipf-popular
  catalogue; no side features."""
  rng = np.random.default_rng(seed)
  user = np.repeat(np.arange(1, NUM_USERS + 1), ITEMS_PER_USER)
  item = np.minimum(rng.zipf(1.2, len(user)), num_items).astype(np.int64)
  empty = features_lib.FeatureTable()
  return EncodedData(
      user_ids=np.array([f"u{i}" for i in range(NUM_USERS)], dtype=object),
      item_ids=np.array([f"i{i}" for i in range(num_items)], dtype=object),
      user=user, item=item, rating=rng.integers(1, 6, len(user)).astype(
          np.float32),
      timestamp=np.arange(len(user), dtype=np.float64),
      user_features=empty, item_features=empty, source="synthetic")


def percentiles(call, repeats: int) -> dict:
  for _ in range(3):  # warm up (first calls allocate and autotune)
    call()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    call()
    times.append((time.perf_counter() - start) * 1000)
  return {"p50_ms": float(np.percentile(times, 50)),
          "p99_ms": float(np.percentile(times, 99)), "calls": repeats}


def _exported(model, data, candidates, directory):
  """Saves retrieval and recommend as training does; returns them loaded."""
  catalogue = (model, data.user_ids, data.item_ids, data.user, data.item)
  retrieval = signatures.RetrievalModule(*catalogue, candidates=candidates,
                                      top_k=K)
  recommend = signatures.RecommendModule(*catalogue, candidates=candidates)
  paths = {
      "retrieval": saved_models.save_version(
          retrieval, {"serving_default": retrieval.recommend},
          os.path.join(directory, "retrieval"), 1),
      "recommend": saved_models.save_version(
          recommend, {"serving_default": recommend.recommend},
          os.path.join(directory, "recommend"), 1)}
  return {name: tf.saved_model.load(path) for name, path in paths.items()}


def _scann_or_reason(candidates, queries):
  """(ScaNN layer, recall@100 vs exact) or (None, why it is unavailable)."""
  try:
    layer = tfrs.layers.factorized_top_k.ScaNN(k=100)
    layer.index(tf.constant(candidates[1:]))
    approximate = layer(tf.constant(queries))[1].numpy()
  except Exception as err:  # pylint: disable=broad-except
    # tfrs raises ImportError without the scann package, and the package's
    # ops fail to load on TensorFlow versions it was not built for.
    return None, f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"
  exact = np.argsort(-(queries @ candidates[1:].T), axis=1)[:, :100]
  hits = [len(set(a) & set(e)) for a, e in zip(approximate, exact)]
  return layer, float(np.mean(hits) / 100)


def bench_catalogue(num_items: int, repeats: int, seed: int,
                    embedding_dim: int) -> list:
  config = config_lib.RunConfig(seed=seed)
  config.model.embedding_dim = embedding_dim
  data = synthetic_catalogue(num_items, seed)
  rows = Examples.of_rows(data, np.arange(len(data)))
  model = training.build_model(config, data, rows)
  rng = np.random.default_rng(seed)
  dim = config.model.embedding_dim
  candidates = rng.normal(size=(num_items + 1, dim)).astype(np.float32)
  results = []
  with tempfile.TemporaryDirectory() as directory:
    start = time.perf_counter()
    loaded = _exported(model, data, candidates, directory)
    export_seconds = time.perf_counter() - start
    retrieve = loaded["retrieval"].signatures["serving_default"]
    recommend = loaded["recommend"].signatures["serving_default"]
    brute_force = tfrs.layers.factorized_top_k.BruteForce(k=K)
    brute_force.index(tf.constant(candidates[1:]))
    for batch in (1, 64):
      users = tf.constant(data.user_ids[rng.integers(0, NUM_USERS, batch)]
                          .astype(str))
      ks = tf.fill([batch], K)
      queries = model.user_embeddings(
          tf.constant(rng.integers(1, NUM_USERS + 1, batch), tf.int32))
      # Each call binds this batch's inputs (called within the iteration).
      timings = {
          "retrieval/serving_default (brute force)":
              lambda users=users: retrieve(user_id=users),
          "recommend/serving_default (two-stage)":
              lambda users=users, ks=ks: recommend(user_id=users, k=ks),
          "tfrs BruteForce layer (reference)":
              lambda queries=queries: brute_force(queries),
          # Reading the index once is the floor for any exact search.
          "numpy index @ query (memory-read floor)":
              lambda queries=queries: candidates @ queries.numpy().T,
      }
      scann, recall = _scann_or_reason(candidates, queries.numpy())
      if scann is not None:
        timings["tfrs ScaNN layer"] = (
            lambda scann=scann, queries=queries: scann(queries))
      for name, call in timings.items():
        results.append({"items": num_items, "batch": batch, "call": name,
                        "embedding_dim": dim,
                        **percentiles(call, repeats if batch == 1 else
                                      max(5, repeats // 4))})
      results.append({"items": num_items, "batch": batch, "call": "ScaNN",
                      "recall@100_vs_exact" if scann else "unavailable":
                          recall})
    results.append({"items": num_items, "call": "export (save)",
                    "seconds": export_seconds})
  return results


def print_table(results: list) -> None:
  print("| items | dim | batch | call | p50 ms | p99 ms |\n"
        "|---:|---:|---:|---|---:|---:|")
  for row in results:
    if "p50_ms" in row:
      print(f"| {row['items']:,} | {row['embedding_dim']} | {row['batch']} | "
            f"{row['call']} | "
            f"{row['p50_ms']:.2f} | {row['p99_ms']:.2f} |")
  for row in results:
    if row["call"] == "ScaNN" and row["batch"] == 1:
      print(f"ScaNN at {row['items']:,} items: "
            f"{row.get('recall@100_vs_exact', row.get('unavailable'))}")
    if row["call"] == "export (save)":
      print(f"export of {row['items']:,} items: {row['seconds']:.1f} s")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--items", type=int, nargs="+",
                      default=[1682, 100_000, 1_000_000])
  parser.add_argument("--repeats", type=int, default=100)
  parser.add_argument("--embedding-dim", type=int,
                      default=config_lib.ModelConfig().embedding_dim)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--output", default=os.path.join(
      os.path.dirname(os.path.abspath(__file__)), "results", "serving.json"))
  args = parser.parse_args(argv)
  results = []
  for num_items in args.items:
    results.extend(bench_catalogue(num_items, args.repeats, args.seed,
                                   args.embedding_dim))
  print_table(results)
  os.makedirs(os.path.dirname(args.output), exist_ok=True)
  with open(args.output, "w", encoding="utf-8") as handle:
    json.dump({"machine": {"cpus": os.cpu_count(),
                           "python": platform.python_version(),
                           "tensorflow": tf.__version__},
               "k": K, "results": results}, handle, indent=2)
  print(f"wrote {args.output}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
