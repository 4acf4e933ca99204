"""In-process serving latency of the exported SavedModels.

    python benchmarks/serving.py                 # 100K and 1M items
    python benchmarks/serving.py --items 1682 --repeats 50

For each catalogue size it builds an (untrained: latency does not depend on
the weights) two-stage model over synthetic users and interactions, with
synthetic candidate embeddings (standard normal: no structure for an
approximate search to exploit), exports the `retrieval` and `recommend`
SavedModels exactly as training does, once with each index (`exact` and
`compact`), loads them with `tf.saved_model.load` and times
`retrieval/serving_default` (top 20, training items excluded) and
`recommend/serving_default` (retrieve 100, re-rank, return 20) at batch 1
and 64, every call of one batch size interleaved so that a busy machine
slows them alike. The TFRS `BruteForce` layer called directly on the same
embeddings (no exclusion) is the reference, and a bare numpy product with
the index is the exact search's floor (it only reads the index once). Each
compact row carries `recall_at_k_vs_exact`: the overlap of its output items
with the exact model's for the same requests. ScaNN is timed where its TF
ops load, with its recall@100 against exact search. 10M items do not fit in
24 GiB with the four models loaded (benchmarks/README.md).

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


def _size(path: str) -> int:
  return sum(os.path.getsize(os.path.join(folder, name))
             for folder, _, names in os.walk(path) for name in names)


def _exported(model, data, candidates, directory, index):
  """Saves retrieval and recommend with `index` as training does; returns
  them loaded, and a row with the seconds and bytes of the export."""
  catalogue = (model, data.user_ids, data.item_ids, data.user, data.item)
  start = time.perf_counter()
  retrieval = signatures.RetrievalModule(*catalogue, candidates=candidates,
                                         top_k=K, index=index)
  recommend = signatures.RecommendModule(*catalogue, candidates=candidates,
                                         index=index)
  paths = {
      "retrieval": saved_models.save_version(
          retrieval, {"serving_default": retrieval.recommend},
          os.path.join(directory, index, "retrieval"), 1),
      "recommend": saved_models.save_version(
          recommend, {"serving_default": recommend.recommend},
          os.path.join(directory, index, "recommend"), 1)}
  row = {"items": len(data.item_ids), "call": f"export (save), {index}",
         "seconds": time.perf_counter() - start,
         "bytes": {name: _size(path) for name, path in paths.items()}}
  return {name: tf.saved_model.load(path) for name, path in paths.items()}, row


def recall_vs_exact(got: np.ndarray, exact: np.ndarray) -> float:
  """Mean overlap of each row's items with the exact search's."""
  return float(np.mean([len(set(a) & set(b)) / len(set(b))
                        for a, b in zip(got, exact)]))


def interleaved(calls: dict, repeats: int) -> dict:
  """{name: percentiles}, the calls taking turns (3 warm-up calls each)."""
  for call in calls.values():
    for _ in range(3):  # first calls allocate and autotune
      call()
  times = {name: [] for name in calls}
  for _ in range(repeats):
    for name, call in calls.items():
      start = time.perf_counter()
      call()
      times[name].append((time.perf_counter() - start) * 1000)
  return {name: {"p50_ms": float(np.percentile(values, 50)),
                 "p99_ms": float(np.percentile(values, 99)),
                 "calls": repeats} for name, values in times.items()}


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


def _calls(loaded, brute_force, candidates, users, queries, ks):
  """{call name: zero-argument call} for one batch of requests."""
  calls = {}
  for index, models in loaded.items():
    retrieve = models["retrieval"].signatures["serving_default"]
    recommend = models["recommend"].signatures["serving_default"]
    calls[f"retrieval/serving_default ({index})"] = (
        lambda retrieve=retrieve: retrieve(user_id=users))
    calls[f"recommend/serving_default (two-stage, {index})"] = (
        lambda recommend=recommend: recommend(user_id=users, k=ks))
  calls["tfrs BruteForce layer (reference)"] = lambda: brute_force(queries)
  # Reading the index once is the floor for any exact search.
  calls["numpy index @ query (memory-read floor)"] = (
      lambda: candidates @ queries.numpy().T)
  return calls


def _recalls(loaded, users, ks) -> dict:
  """{call name: recall_at_k_vs_exact} of the compact models' calls."""
  out = {}
  for model, call in (("retrieval", lambda m: m(user_id=users)),
                      ("recommend", lambda m: m(user_id=users, k=ks))):
    items = {index: call(models[model].signatures["serving_default"])[
        "item_ids"].numpy() for index, models in loaded.items()}
    name = ("retrieval/serving_default (compact)" if model == "retrieval"
            else "recommend/serving_default (two-stage, compact)")
    out[name] = recall_vs_exact(items["compact"], items["exact"])
  return out


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
    loaded = {}
    for index in signatures.INDEXES:
      loaded[index], row = _exported(model, data, candidates, directory,
                                     index)
      results.append(row)
    brute_force = tfrs.layers.factorized_top_k.BruteForce(k=K)
    brute_force.index(tf.constant(candidates[1:]))
    for batch in (1, 64):
      users = tf.constant(data.user_ids[rng.integers(0, NUM_USERS, batch)]
                          .astype(str))
      ks = tf.fill([batch], K)
      queries = model.user_embeddings(
          tf.constant(rng.integers(1, NUM_USERS + 1, batch), tf.int32))
      calls = _calls(loaded, brute_force, candidates, users, queries, ks)
      recalls = _recalls(loaded, users, ks)
      timed = interleaved(calls, repeats if batch == 1 else
                          max(5, repeats // 4))
      for name, timing in timed.items():
        extra = ({"recall_at_k_vs_exact": recalls[name]}
                 if name in recalls else {})
        results.append({"items": num_items, "batch": batch, "call": name,
                        "embedding_dim": dim, **timing, **extra})
      results.append(_scann_row(candidates, queries, num_items, batch))
  return results


def _scann_row(candidates, queries, num_items, batch) -> dict:
  scann, recall = _scann_or_reason(candidates, queries.numpy())
  return {"items": num_items, "batch": batch, "call": "ScaNN",
          "recall@100_vs_exact" if scann else "unavailable": recall}


def print_table(results: list) -> None:
  print("| items | dim | batch | call | p50 ms | p99 ms | recall@K vs "
        "exact |\n|---:|---:|---:|---|---:|---:|---:|")
  for row in results:
    if "p50_ms" in row:
      recall = row.get("recall_at_k_vs_exact")
      print(f"| {row['items']:,} | {row['embedding_dim']} | {row['batch']} | "
            f"{row['call']} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | "
            f"{'' if recall is None else f'{recall:.4f}'} |")
  for row in results:
    if row["call"] == "ScaNN" and row["batch"] == 1:
      print(f"ScaNN at {row['items']:,} items: "
            f"{row.get('recall@100_vs_exact', row.get('unavailable'))}")
    if row["call"].startswith("export (save)"):
      print(f"{row['call']} of {row['items']:,} items: "
            f"{row['seconds']:.1f} s, {row['bytes']}")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--items", type=int, nargs="+",
                      default=[100_000, 1_000_000])
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
