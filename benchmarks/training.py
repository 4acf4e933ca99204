"""Training time, throughput and memory of each stage, by data size.

    python benchmarks/training.py          # 100K, 1M, 10M; 1 and 2 replicas
    python benchmarks/training.py --sizes 100000 --replicas 1
    python benchmarks/training.py --model '{"tower": "graph"}' \
        --output benchmarks/results/training_graph.json

For each number of interactions and each replica count it starts a fresh
process (the CPU is split into that many logical devices before TensorFlow
initialises, and peak memory is the process's own) that runs the stages of
`python -m tfgan_rec.train --augment gan` on seeded synthetic data:

- synthetic: generate the seeded synthetic interactions (a stand-in for
  reading a user's logs; it samples each user's items over the whole
  catalogue, so it grows with users x items);
- data: encode and split them, as for any source;
- gan: train the GAN for its configured steps (MirroredStrategy over the
  logical devices);
- augmentation: generate interactions for the sparse users;
- tfrs: train the two-stage model on real + generated rows for `--epochs`
  epochs, as `python -m tfgan_rec.train` trains it (with 2+ replicas under
  the MirroredStrategy, each replica taking its share of every global
  batch of 512 rows and of its 2,048 shared negatives; with 1, without a
  strategy);
- export: write the retrieval, ranking and recommend SavedModels;
- tutorial: the TFRS tutorial's two-tower model (string IDs through
  StringLookup, 32-dim embeddings, in-batch softmax, batch 8192, Adagrad)
  trained on the same rows, as the throughput reference.

`--model` sets `ModelConfig` fields of the two-stage model (e.g. the graph
tower), recorded with the runs.

Examples per second count training rows (GAN: users) processed per second
of the stage's last epoch (GAN: of all its steps). Peak memory is the
largest resident set size of the process sampled (every 50 ms, from
the parent process) during the stage. Prints a table, writes
JSON (default benchmarks/results/training.json) and a log-log PNG of time
and memory against interactions.
"""
import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

# Settings only: importing them loads no TensorFlow (the worker splits the
# CPU into logical devices before it does).
from tfgan_rec import config as config_lib
from tfgan_rec.errors import InputError

HERE = os.path.dirname(os.path.abspath(__file__))
TUTORIAL_BATCH = 8192
STAGES = ("synthetic", "data", "gan", "augmentation", "tfrs", "export",
          "tutorial")


def rss_bytes(pid: int) -> int:
  """Resident set size of process `pid` (Linux)."""
  with open(f"/proc/{pid}/statm", encoding="ascii") as statm:
    return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Stages:
  """Times stages (wall-clock bounds let the parent process attribute its
  memory samples to them) and records their throughput."""

  def __init__(self):
    self.rows = []

  def run(self, name: str, fn, examples_of=None):
    """Runs `fn()`; `examples_of(result, seconds)` gives examples/second."""
    started, start = time.time(), time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    row = {"stage": name, "seconds": seconds, "started": started,
           "ended": time.time()}
    if examples_of:
      row["examples_per_second"] = examples_of(result, seconds)
    self.rows.append(row)
    print(f"  {name}: {seconds:.1f} s" +
          (f", {row['examples_per_second']:,.0f} ex/s" if examples_of
           else ""), flush=True)
    return result


def _timed_epochs(model, dataset, epochs: int) -> list:
  seconds = []
  for _ in range(epochs):
    start = time.perf_counter()
    model.fit(dataset, epochs=1, verbose=0)
    seconds.append(time.perf_counter() - start)
  return seconds


def tutorial_two_tower(user_ids, item_ids, dim: int = 32):
  """The TFRS basic-retrieval tutorial's model over string IDs."""
  # pylint: disable=g-import-not-at-top
  import tensorflow as tf
  import tensorflow_recommenders as tfrs

  def tower(vocabulary):
    return tf.keras.Sequential([
        tf.keras.layers.StringLookup(vocabulary=vocabulary, mask_token=None),
        tf.keras.layers.Embedding(len(vocabulary) + 1, dim)])

  class TwoTower(tfrs.Model):

    def __init__(self):
      super().__init__()
      self.user_model, self.item_model = tower(user_ids), tower(item_ids)
      self.task = tfrs.tasks.Retrieval()

    def compute_loss(self, features, training=False):
      # Metrics off in training, as the tutorial advises for speed.
      return self.task(self.user_model(features["user_id"]),
                       self.item_model(features["item_id"]),
                       compute_metrics=False)

  model = TwoTower()
  model.compile(optimizer=tf.keras.optimizers.Adagrad(0.1))
  return model


def run_config(size: int, seed: int, gan_steps: int,
               model_settings: dict):
  """The run's settings: seeded synthetic data of `size` interactions,
  `gan_steps` GAN steps (0: the package's) and `model_settings`
  (ModelConfig fields), checked."""
  config = config_lib.RunConfig(seed=seed)
  config.data.dataset, config.data.synthetic_interactions = "synthetic", size
  config.gan.steps = gan_steps or config.gan.steps
  config_lib.update(config.model, model_settings, "--model", section="model")
  return config.check()


def train_two_stage(config, data, rows, epochs: int):
  """The two-stage model trained on `rows` as `python -m tfgan_rec.train`
  trains it (under the GAN's strategy with 2+ replicas, without one on one
  device), and its seconds per epoch (in the worker)."""
  # pylint: disable=g-import-not-at-top
  import tensorflow as tf
  from tfgan_rec import pipeline
  from tfgan_rec.recommender import training
  strategy = pipeline.recommender_strategy()
  tf.keras.utils.set_random_seed(config.seed)
  with strategy.scope() if strategy else contextlib.nullcontext():
    model = training.build_model(config, data, rows)
  dataset = training.training_dataset(config, rows)
  return model, _timed_epochs(model, dataset, epochs)


def train_tutorial(split_data, replicas: int, seed: int, batches: int,
                   epochs: int) -> list:
  """Seconds per epoch of the tutorial model on the training rows, at most
  `batches` batches an epoch, over `replicas` devices (in the worker)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # Its embedding gradients are IndexedSlices of a different length on
  # each replica, which the default collective all-reduce rejects.
  keras_strategy = (tf.distribute.MirroredStrategy(
      cross_device_ops=tf.distribute.ReductionToOneDevice()) if replicas > 1
                    else tf.distribute.get_strategy())
  data, train = split_data.data, split_data.split.train
  users = data.user_ids[data.user[train] - 1].astype(str)
  items = data.item_ids[data.item[train] - 1].astype(str)
  tf.keras.utils.set_random_seed(seed)
  with keras_strategy.scope():
    model = tutorial_two_tower(np.unique(users), np.unique(items))
  dataset = tf.data.Dataset.from_tensor_slices(
      {"user_id": users, "item_id": items}).shuffle(
          100_000, seed=seed).batch(TUTORIAL_BATCH).take(batches).cache()
  return _timed_epochs(model, dataset, epochs)


def worker(config, replicas: int, epochs: int,
           tutorial_batches: int) -> dict:
  """Runs every stage of `config` (`run_config`'s) once in this process;
  returns the measurements."""
  # pylint: disable=g-import-not-at-top
  import tfgan_rec  # noqa: F401  (Keras 2 before TensorFlow loads)
  from tfgan_rec import augmentation, data as data_lib
  from tfgan_rec import pipeline
  from tfgan_rec.gan import loop as gan_loop

  gan_loop.use_logical_cpus(replicas)
  strategy = gan_loop.make_strategy()
  seed = config.seed
  stages = Stages()

  interactions = stages.run("synthetic", lambda: data_lib.load_interactions(
      config.data, config.seed))
  split_data = stages.run("data", lambda: data_lib.split_data(
      data_lib.encode(interactions, config.data.feature_kinds), config.data,
      config.seed))
  data, split = split_data.data, split_data.split
  train_rows = split_data.examples("train")
  trainer = stages.run(
      "gan", lambda: augmentation.train_gan(config.gan, train_rows, data,
                                            seed),
      lambda _, s: config.gan.steps * config.gan.batch_size / s)
  generated = stages.run(
      "augmentation", lambda: augmentation.generate_interactions(
          augmentation.gan_scorer(trainer, train_rows, data,
                                  config.augmentation.samples),
          train_rows, data, config.augmentation),
      lambda g, s: len(np.unique(g.user)) / s)
  rows = train_rows + generated

  model, tfrs_epochs = stages.run(
      "tfrs", lambda: train_two_stage(config, data, rows, epochs),
      lambda r, _: len(rows.user) / r[1][-1])
  with tempfile.TemporaryDirectory() as directory:
    config.export.export_dir = directory
    stages.run("export", lambda: pipeline.export(model, split_data, config))

  tutorial_rows = min(len(split.train), tutorial_batches * TUTORIAL_BATCH)
  tutorial_epochs = stages.run(
      "tutorial", lambda: train_tutorial(split_data, replicas, seed,
                                         tutorial_batches, epochs),
      lambda r, _: tutorial_rows / r[-1])
  return {"interactions": len(data), "users": data.num_users,
          "items": data.num_items, "train_rows": len(split.train),
          "generated_rows": len(generated.user), "replicas": replicas,
          "gan_steps": config.gan.steps,
          "devices": strategy.num_replicas_in_sync, "epochs": epochs,
          "tfrs_epoch_seconds": tfrs_epochs,
          "tutorial_epoch_seconds": tutorial_epochs,
          "tutorial_rows_per_epoch": tutorial_rows,
          "tfrs_batch_size": config.train.batch_size,
          "stages": stages.rows}


def run_in_subprocess(size: int, replicas: int, args) -> dict:
  """Runs the stages in a fresh process, sampling its memory from here (a
  sampling thread inside it would compete with its training loop for the
  GIL, which slowed the GAN 2.4x)."""
  with tempfile.NamedTemporaryFile(suffix=".json") as out:
    command = [sys.executable, os.path.abspath(__file__), "--worker",
               "--sizes", str(size), "--replicas", str(replicas),
               "--epochs", str(args.epochs), "--seed", str(args.seed),
               "--tutorial-batches", str(args.tutorial_batches),
               "--gan-steps", str(args.gan_steps), "--model", args.model,
               "--output", out.name]
    print(f"{size:,} interactions, {replicas} replica(s):", flush=True)
    process = subprocess.Popen(command)  # pylint: disable=consider-using-with
    samples = []
    while process.poll() is None:
      try:
        samples.append((time.time(), rss_bytes(process.pid)))
      except (FileNotFoundError, ProcessLookupError):
        break
      time.sleep(0.05)
    if process.wait():
      raise SystemExit(f"the {size:,}-interaction run failed (exit code "
                       f"{process.returncode}); see its output above.")
    with open(out.name, encoding="utf-8") as handle:
      run = json.load(handle)
  for row in run["stages"]:
    during = [rss for at, rss in samples
              if row["started"] <= at <= row["ended"]]
    row["peak_rss_gib"] = max(during or [0]) / 2**30
  return run


def growth_exponents(runs: list) -> dict:
  """Per replica count and stage: b in time ~ interactions^b between the
  two largest sizes (1 = linear). TFRS counts one epoch (runs may differ in
  epochs); the tutorial, capped at --tutorial-batches, is left out."""
  exponents = {}
  for replicas in sorted({r["replicas"] for r in runs}):
    mine = sorted((r for r in runs if r["replicas"] == replicas),
                  key=lambda r: r["interactions"])
    if len(mine) < 2:
      continue
    small, large = mine[-2], mine[-1]
    ratio = large["interactions"] / small["interactions"]
    seconds = lambda run: {**{s["stage"]: s["seconds"] for s in run["stages"]},
                           "tfrs": run["tfrs_epoch_seconds"][-1]}
    exponents[replicas] = {
        stage: float(np.log(seconds(large)[stage] / seconds(small)[stage]) /
                     np.log(ratio)) for stage in STAGES if stage != "tutorial"}
  return exponents


def print_table(runs: list) -> None:
  print("| interactions | users | items | replicas | stage | seconds | "
        "examples/s | peak RSS GiB |\n|---:|---:|---:|---:|---|---:|---:|---:|")
  for run in runs:
    for row in run["stages"]:
      rate = row.get("examples_per_second")
      print(f"| {run['interactions']:,} | {run['users']:,} | "
            f"{run['items']:,} | {run['replicas']} | {row['stage']} | "
            f"{row['seconds']:.1f} | {f'{rate:,.0f}' if rate else ''} | "
            f"{row['peak_rss_gib']:.2f} |")


def plot(runs: list, path: str) -> None:
  """Log-log time and peak memory per stage against interactions."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top
  figure, (time_axis, memory_axis) = pyplot.subplots(1, 2, figsize=(11, 4.5))
  for replicas in sorted({r["replicas"] for r in runs}):
    mine = sorted((r for r in runs if r["replicas"] == replicas),
                  key=lambda r: r["interactions"])
    sizes = [r["interactions"] for r in mine]
    style = "-" if replicas == 1 else "--"
    for colour, stage in enumerate(STAGES):
      rows = [next(s for s in r["stages"] if s["stage"] == stage)
              for r in mine]
      # One colour per stage; the line style tells the replica count.
      line = dict(color=f"C{colour}", marker="o",
                  label=f"{stage} ({replicas} replica"
                  f"{'s' if replicas > 1 else ''})")
      time_axis.plot(sizes, [s["seconds"] for s in rows], style, **line)
      memory_axis.plot(sizes, [s["peak_rss_gib"] for s in rows], style,
                       **line)
  for axis, title in ((time_axis, "wall time (s)"),
                      (memory_axis, "peak resident memory (GiB)")):
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("interactions")
    axis.set_title(title)
    axis.grid(True, which="both", alpha=0.3)
  time_axis.legend(fontsize=7, ncol=2)
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  print(f"wrote {path}")


def stored_runs(args, model_settings: dict) -> dict:
  """{(size, replicas): run} of `args.output`, if it exists; refused if they
  were run with other --model settings."""
  if not os.path.exists(args.output):
    return {}
  with open(args.output, encoding="utf-8") as handle:
    runs = {(r["size"], r["replicas"]): r for r in json.load(handle)["runs"]}
  other = {json.dumps(r.get("model", {}), sort_keys=True)
           for r in runs.values()}
  if other - {json.dumps(model_settings, sort_keys=True)}:
    raise SystemExit(f"{args.output} holds runs with --model "
                     f"{', '.join(sorted(other))}; pass another --output.")
  return runs


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--sizes", type=int, nargs="+",
                      default=[100_000, 1_000_000, 10_000_000],
                      help="interactions of each synthetic dataset")
  parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2],
                      help="MirroredStrategy replicas (logical CPU devices)")
  parser.add_argument("--epochs", type=int, default=2,
                      help="TFRS and tutorial epochs (throughput is the "
                           "last epoch's)")
  parser.add_argument("--tutorial-batches", type=int, default=100,
                      help="batches of 8192 rows per epoch of the tutorial "
                           "model (its throughput needs no more)")
  parser.add_argument("--gan-steps", type=int, default=0,
                      help="GAN steps (default: the package's, 1000)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--model", default="{}",
                      help="JSON of ModelConfig fields of the two-stage "
                      "model, e.g. '{\"tower\": \"graph\"}'")
  parser.add_argument("--output", default=os.path.join(
      HERE, "results", "training.json"))
  parser.add_argument("--append", action="store_true",
                      help="keep the runs already in --output (a run of the "
                           "same size and replicas is replaced)")
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  model_settings = json.loads(args.model)
  try:  # bad --model settings fail in one line, before any run starts
    config = run_config(args.sizes[0], args.seed, args.gan_steps,
                        model_settings)
  except InputError as error:
    parser.error(str(error))
  if args.worker:
    result = worker(config, args.replicas[0], args.epochs,
                    args.tutorial_batches)
    with open(args.output, "w", encoding="utf-8") as handle:
      json.dump(result, handle)
    return 0
  runs = stored_runs(args, model_settings) if args.append else {}
  for size in args.sizes:
    for replicas in args.replicas:
      runs[size, replicas] = dict(run_in_subprocess(size, replicas, args),
                                  size=size, model=model_settings)
  runs = [runs[key] for key in sorted(runs)]
  print_table(runs)
  exponents = growth_exponents(runs)
  for replicas, by_stage in exponents.items():
    print(f"time growth exponent between the two largest sizes, {replicas} "
          f"replica(s): " + ", ".join(f"{k} {v:.2f}"
                                      for k, v in by_stage.items()))
  os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
  with open(args.output, "w", encoding="utf-8") as handle:
    json.dump({"machine": {"cpus": os.cpu_count(),
                           "python": platform.python_version()},
               "runs": runs, "growth_exponents": exponents}, handle, indent=2)
  print(f"wrote {args.output}")
  plot(runs, os.path.splitext(args.output)[0] + ".png")
  return 0


if __name__ == "__main__":
  sys.exit(main())
