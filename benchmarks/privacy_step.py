"""What a private step of the release generator costs against a non-private
one, on MovieLens 100K.

    python benchmarks/privacy_step.py                 # 30 timed steps each
    python benchmarks/privacy_step.py --steps 60 --epsilon 3

Three release-generator trainers are built in one process on the train
part of MovieLens 100K, at `--batch` (the expected batch, default 128, as
`--gan-batch-size`) and the privacy plan of `--epsilon` (default 3, 1000
steps, as `python -m tfgan_rec.train --dp-epsilon 3`):

- private: DP-SGD with ghost clipping, on the plan's fixed slots (the
  capacity: 205 for batch 128, the Poisson sample's room);
- not private, same rows: the same model without DP on as many rows
  (batch = capacity), the pure cost of clipping and noise;
- not private: batch `--batch`, what `--dp-epsilon inf` trains.

After `--warmup` steps each (tracing included), they take turns one step
at a time for `--steps` rounds, so load from other jobs hits them alike;
each step is timed to its metrics on the host. Prints a table of the
median seconds per step and the ratios, and writes
benchmarks/results/privacy_step.json (with the machine's load average
before and after: the CPU is shared, so compare rows of one run only).
"""
import argparse
import json
import os
import platform
import time

import tfgan_rec  # noqa: F401  (Keras 2 before TensorFlow loads)
import numpy as np

from tfgan_rec import pipeline, privacy
from tfgan_rec.config import GANConfig, PrivacyConfig, RunConfig
from tfgan_rec.gan.private import ReleaseGANTrainer
from tfgan_rec.gan.trainer import GANData

RESULTS = "benchmarks/results/privacy_step.json"


def trainers(batch: int, epsilon: float, seed: int = 0):
  """{name: trainer}: private, not private on the same rows, not private
  at `batch`, on MovieLens 100K's train part."""
  config = RunConfig(seed=seed)
  split_data = pipeline.prepare(config.data, seed)
  data, rows = split_data.data, split_data.examples("train")
  gan_data = GANData.from_rows(rows.user, rows.item, data.num_users,
                               data.num_items, data.user_features)
  settings = GANConfig(batch_size=batch)
  plan = privacy.plan(PrivacyConfig(epsilon=epsilon), len(
      gan_data.train_users), batch, settings.steps, settings.d_steps, 1)
  rng = np.random.default_rng(seed)
  released = privacy.noisy_marginals(
      data.user_features, gan_data.train_users, plan.feature_epsilon,
      plan.feature_delta, rng).sample(len(gan_data.train_users), rng)
  same_rows = GANConfig(batch_size=plan.capacity)
  return plan, {
      "private": ReleaseGANTrainer(settings, gan_data, released, plan, seed,
                                   secret_seed=seed),
      "not private, same rows": ReleaseGANTrainer(same_rows, gan_data,
                                                  released, None, seed),
      "not private": ReleaseGANTrainer(settings, gan_data, released, None,
                                       seed),
  }


def one_step(trainer) -> float:
  """Seconds of one more training step (to its metrics on the host)."""
  start = time.perf_counter()
  trainer.train(int(trainer.step.numpy()) + 1)
  return time.perf_counter() - start


def measure(named, warmup: int, steps: int):
  """{name: [seconds of each timed step]}, the trainers taking turns."""
  for trainer in named.values():
    for _ in range(warmup):
      one_step(trainer)
  times = {name: [] for name in named}
  for _ in range(steps):
    for name, trainer in named.items():
      times[name].append(one_step(trainer))
  return times


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--epsilon", type=float, default=3.0)
  parser.add_argument("--warmup", type=int, default=5)
  parser.add_argument("--steps", type=int, default=30)
  args = parser.parse_args()
  plan, named = trainers(args.batch, args.epsilon)
  load_before = os.getloadavg()
  times = measure(named, args.warmup, args.steps)
  median = {name: float(np.median(t)) for name, t in times.items()}
  rows = [{"trainer": name, "rows per step": named[name].settings.batch_size,
           "median s/step": median[name],
           "p90 s/step": float(np.percentile(times[name], 90)),
           "private / this": median["private"] / median[name]}
          for name in named]
  print(f"{'trainer':<24} {'rows':>5} {'median s':>9} {'p90 s':>8} "
        f"{'private / this':>15}")
  for row in rows:
    print(f"{row['trainer']:<24} {row['rows per step']:>5} "
          f"{row['median s/step']:>9.4f} {row['p90 s/step']:>8.4f} "
          f"{row['private / this']:>15.2f}")
  os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
  with open(RESULTS, "w", encoding="utf-8") as handle:
    json.dump({"args": vars(args), "noise_multiplier": plan.noise_multiplier,
               "capacity": plan.capacity, "machine": platform.machine(),
               "cpus": os.cpu_count(),
               "load_average_before_after": [load_before, os.getloadavg()],
               "rows": rows, "seconds": times}, handle, indent=2)


if __name__ == "__main__":
  main()
