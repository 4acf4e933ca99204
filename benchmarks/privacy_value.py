"""What private synthetic data is worth on MovieLens 100K, what it leaks,
and what DP costs.

    python benchmarks/privacy_value.py --seeds 0 --epsilons 1 3 10 inf
    python benchmarks/privacy_value.py --dataset synthetic \\
        --synthetic-interactions 4000 --steps 20 --batch 16 \\
        --epsilons 3 inf --output /tmp/privacy_value.json   # smoke run

Per seed, a seeded `--holdout` share of the training users (20%; one user
per block of 5 of similar training-profile length, so that members and
non-members have the same profile lengths) is held out of the release
generator's training: they are the non-members of the membership-inference
attack; the rest are the members. For each epsilon
(inf = the same release generator without DP) the release generator is
trained on the members' training interactions, as many synthetic users as
members are drawn from it, and:

- utility: item-to-item recommenders are fitted on the synthetic
  interactions alone, EASE (lambda 500) and MostPop, and score every real
  test user (members and non-members) from their real training items
  (EASE's item-item weights transfer across users; the synthetic data never
  holds a real user). They are compared with the same models fitted on the
  members' real training interactions, the data the generator was given.
  Test Recall@20, training items excluded.
- membership inference (`tfgan_rec.privacy_audit`): every member and
  non-member is scored from their real training interactions by the
  largest Jaccard similarity to a synthetic user (DCR) and by the
  generator's likelihood ratio over `--attack-draws` users drawn from it;
  the AUC of members against non-members with a bootstrap 95% interval.
- distributions: item popularity (share of interactions by item rank) and
  profile length (interactions per user) of the synthetic data against the
  members' real training data, with total-variation distance, catalogue
  coverage and Gini of item popularity.

Writes JSON (default benchmarks/results/privacy_value.json) and a PNG
beside it (same name, .png): item popularity, profile length and attack
AUC per epsilon.
Seconds of each stage are recorded per epsilon (train includes building
and tracing the release GAN's step).
"""
import argparse
import dataclasses
import json
import math
import os
import platform
import time

import tfgan_rec  # noqa: F401  (Keras 2 before TensorFlow loads)
import numpy as np
import pandas as pd

from tfgan_rec import baselines, evaluate, pipeline, privacy_audit, release
from tfgan_rec.config import RunConfig
from tfgan_rec.data import PARTS, interaction_matrix

K, L2 = 20, 500.0
HERE = os.path.dirname(os.path.abspath(__file__))
# Points of the stored curves: 60 log-spaced item ranks are enough to draw
# a rank-share curve over 1,682 items; profile length as 51 quantiles.
RANK_POINTS, QUANTILES = 60, np.linspace(0.0, 1.0, 51)


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--seeds", type=int, nargs="+", default=[0])
  parser.add_argument("--epsilons", type=float, nargs="+",
                      default=[1, 3, 10, math.inf],
                      help="total epsilon of each release; inf: no DP")
  parser.add_argument("--steps", type=int, default=1000,
                      help="release GAN steps (as --gan-steps)")
  parser.add_argument("--batch", type=int, default=128,
                      help="expected users per step (as --gan-batch-size)")
  parser.add_argument("--dataset", default="movielens",
                      choices=("movielens", "synthetic"))
  parser.add_argument("--synthetic-interactions", type=int, default=20_000,
                      help="size of --dataset synthetic")
  parser.add_argument("--holdout", type=float, default=0.2,
                      help="share of training users held out of the "
                           "generator: the attack's non-members")
  parser.add_argument("--attack-draws", type=int, default=2000,
                      help="users drawn from the generator for the "
                           "likelihood attack's Monte Carlo estimate")
  parser.add_argument("--bootstrap", type=int, default=1000,
                      help="bootstrap resamples of each AUC")
  parser.add_argument("--output", default=os.path.join(
      HERE, "results", "privacy_value.json"))
  args = parser.parse_args(argv)
  if not 0.0 < args.holdout < 1.0:
    parser.error(f"--holdout {args.holdout}: must be in (0, 1).")
  if min(args.epsilons) <= 0:
    parser.error("--epsilons: each must be > 0 (inf: no DP).")
  return args


def members_only(split_data, nonmembers: np.ndarray):
  """`split_data` whose train part (all the release generator reads)
  holds no interaction of `nonmembers`."""
  split, data = split_data.split, split_data.data
  kept = lambda rows: rows[~np.isin(data.user[rows], nonmembers)]  # noqa: E731
  split = dataclasses.replace(split, train=kept(split.train),
                              fit=kept(split.fit),
                              validation=kept(split.validation))
  matrices = {part: interaction_matrix(
      data.user[rows], data.item[rows], data.num_users, data.num_items)
              for part, rows in ((p, getattr(split, p)) for p in PARTS)}
  return dataclasses.replace(split_data, split=split, matrices=matrices)


def synthetic_matrix(frames, data):
  """The synthetic interactions as a [users + 1, items + 1] matrix over the
  real catalogue's indices (row and column 0 unused)."""
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


def distribution(matrix, reference=None) -> dict:
  """Item popularity and profile length of the non-empty rows of `matrix`
  (the curves the PNG draws, and summaries); with `reference` (another
  such dict's item shares) also the total-variation distance to it."""
  counts = np.asarray(matrix.sum(axis=0)).ravel()[1:]
  lengths = np.asarray(matrix.sum(axis=1)).ravel()
  lengths = lengths[lengths > 0]
  shares = counts / counts.sum()
  ranked = np.sort(shares)[::-1]
  ranks = np.unique(np.geomspace(1, len(ranked), RANK_POINTS).astype(int))
  cumulative = np.cumsum(np.sort(counts)) / counts.sum()
  gini = 1 - 2 * cumulative.mean() + 1 / len(counts)
  result = {"users": int(len(lengths)), "interactions": int(counts.sum()),
            "mean_profile": float(lengths.mean()),
            "median_profile": float(np.median(lengths)),
            "items_covered": float((counts > 0).mean()),
            "popularity_gini": float(gini),
            "rank": ranks.tolist(),
            "rank_share": ranked[ranks - 1].tolist(),
            "profile_quantiles": np.quantile(lengths, QUANTILES).tolist(),
            "shares": shares}
  if reference is not None:
    result["tv_distance_to_real"] = float(
        0.5 * np.abs(shares - reference["shares"]).sum())
  return result


def attack(trained, split_data, members, nonmembers, synthetic, args, seed):
  """The membership-inference AUCs of one release, {attack: dict}."""
  probabilities = release.generated_probabilities(
      trained, args.attack_draws, seed + 1)
  results = privacy_audit.audit(
      split_data.matrices["train"], members, nonmembers, synthetic,
      probabilities, np.random.default_rng(seed), args.bootstrap)
  return {name: result.to_dict() for name, result in results.items()}


def run_epsilon(split_data, groups, real, epsilon, seed, args) -> dict:
  """Trains one release, draws its synthetic data, measures it."""
  members, nonmembers, member_data = groups
  config = RunConfig(seed=seed)
  config.gan.steps, config.gan.batch_size = args.steps, args.batch
  config.privacy.epsilon = epsilon
  clock = {}
  start = time.perf_counter()
  trained = release.train_release_generator(config, member_data)
  clock["train"] = time.perf_counter() - start
  frames = release.synthesize(trained, len(members), seed)
  synthetic = synthetic_matrix(frames, split_data.data)
  clock["synthesize"] = time.perf_counter() - start - clock["train"]
  row = {"seed": seed, "epsilon": epsilon,
         "spent": trained.privacy.get("epsilon"),
         "delta": trained.privacy.get("delta"),
         "sigma": trained.privacy.get("noise_multiplier"),
         "synthetic_interactions": int(synthetic.nnz)}
  row["auc_bound"] = (privacy_audit.auc_bound(row["spent"], row["delta"])
                      if trained.privacy.get("private") else 1.0)
  for name, scorer in item_scorers(synthetic, split_data).items():
    row[f"{name} on synthetic"] = recall(scorer, split_data)
  clock["evaluate"] = time.perf_counter() - start - sum(clock.values())
  row["attack"] = attack(trained, split_data, members, nonmembers,
                         synthetic, args, seed)
  clock["attack"] = time.perf_counter() - start - sum(clock.values())
  row["distribution"] = distribution(synthetic, real)
  row["seconds"] = clock
  return row


def run_seed(seed, args) -> tuple:
  """The real-data reference and one run per epsilon, for one seed."""
  config = RunConfig(seed=seed)
  config.data.dataset = args.dataset
  config.data.synthetic_interactions = args.synthetic_interactions
  split_data = pipeline.prepare(config.data, seed)
  trained_users = np.unique(split_data.examples("train").user)
  lengths = np.asarray(split_data.matrices["train"].sum(axis=1)).ravel()
  nonmembers = privacy_audit.choose_nonmembers(
      trained_users, args.holdout, seed, strata=lengths[trained_users])
  members = np.setdiff1d(trained_users, nonmembers)
  member_data = members_only(split_data, nonmembers)
  member_matrix = member_data.matrices["train"]
  real = distribution(member_matrix)
  reference = {"seed": seed, "members": int(len(members)),
               "nonmembers": int(len(nonmembers)), "distribution": real}
  for name, scorer in item_scorers(member_matrix, split_data).items():
    reference[f"{name} on real"] = recall(scorer, split_data)
  print(json.dumps({k: v for k, v in reference.items()
                    if k != "distribution"}), flush=True)
  runs = []
  for epsilon in args.epsilons:
    runs.append(run_epsilon(split_data, (members, nonmembers, member_data),
                            real, epsilon, seed, args))
    print(json.dumps(summary(runs[-1])), flush=True)
  return reference, runs


def summary(row) -> dict:
  """A run's row without its curves, for printing."""
  return {**{k: v for k, v in row.items() if k != "distribution"},
          "tv_distance_to_real": row["distribution"]["tv_distance_to_real"]}


def epsilon_label(epsilon) -> str:
  return "inf (no DP)" if math.isinf(epsilon) else f"{epsilon:g}"


def plot(result: dict, path: str) -> None:
  """Item popularity and profile length (real vs synthetic per epsilon,
  first seed) and the attacks' AUC per epsilon (every seed, 95%
  intervals) in one PNG."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top
  figure, axes = pyplot.subplots(1, 3, figsize=(15, 4.5))
  seed = result["real"][0]["seed"]
  series = [("real (members)", result["real"][0]["distribution"], "k")] + [
      (f"synthetic, epsilon {epsilon_label(r['epsilon'])}",
       r["distribution"], f"C{i}")
      for i, r in enumerate(r for r in result["runs"] if r["seed"] == seed)]
  for label, curves, colour in series:
    axes[0].plot(curves["rank"], curves["rank_share"], color=colour,
                 label=label)
    axes[1].plot(curves["profile_quantiles"], QUANTILES, color=colour,
                 label=label)
  axes[0].set(xscale="log", yscale="log", xlabel="item rank",
              ylabel="share of interactions", title="item popularity")
  axes[1].set(xscale="log", xlabel="interactions per user",
              ylabel="fraction of users (cumulative)", title="profile length")
  plot_attacks(axes[2], result["runs"])
  for axis in axes[:2]:
    axis.legend(fontsize=7)
  # Below the panel: the points and the guarantee's bars span its height.
  axes[2].legend(fontsize=7, loc="upper center", ncol=2,
                 bbox_to_anchor=(0.5, -0.15))
  for axis in axes:
    axis.grid(True, which="both", alpha=0.3)
  figure.suptitle(f"seed {seed}; {result['settings']['dataset']}, "
                  f"{result['settings']['steps']} GAN steps", fontsize=9)
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  print(f"wrote {path}")


def plot_attacks(axis, runs) -> None:
  """AUC with its bootstrap interval per attack and epsilon (categorical x
  axis in the run order; seeds side by side), 0.5 and 0.5 +- 0.05 marked."""
  epsilons = list(dict.fromkeys(r["epsilon"] for r in runs))
  seeds = sorted({r["seed"] for r in runs})
  names = {"dcr": "DCR (closest synthetic user)",
           "likelihood": "generator likelihood ratio"}
  for a, name in enumerate(names):
    for s, seed in enumerate(seeds):
      mine = [r for r in runs if r["seed"] == seed and name in r["attack"]]
      x = [epsilons.index(r["epsilon"]) + 0.25 * (a - 0.5)
           + 0.05 * s for r in mine]
      auc = np.array([r["attack"][name]["auc"] for r in mine])
      low = np.array([r["attack"][name]["low"] for r in mine])
      high = np.array([r["attack"][name]["high"] for r in mine])
      axis.errorbar(x, auc, yerr=[auc - low, high - auc], fmt="os"[a],
                    color=f"C{a}", capsize=3,
                    label=names[name] if s == 0 else None)
  bounds = {r["epsilon"]: r["auc_bound"] for r in runs}
  axis.plot(range(len(epsilons)), [bounds[e] for e in epsilons], "k_",
            markersize=30, label="largest AUC the guarantee allows")
  axis.axhline(0.5, color="k", lw=1)
  axis.axhspan(0.45, 0.55, color="k", alpha=0.08, label="0.5 +- 0.05")
  axis.set_xticks(range(len(epsilons)),
                  [epsilon_label(e) for e in epsilons])
  axis.set(xlabel="epsilon", ylabel="AUC, members vs held-out users",
           title="membership inference")


def main(argv=None) -> int:
  args = parse_args(argv)
  start = time.perf_counter()
  references, runs = [], []
  for seed in args.seeds:
    reference, seed_runs = run_seed(seed, args)
    references.append(reference)
    runs.extend(seed_runs)
  for row in references + runs:
    row["distribution"].pop("shares")
  result = {"settings": {**vars(args), "k": K, "ease_l2": L2},
            "machine": platform.machine(), "cpus": os.cpu_count(),
            "seconds": time.perf_counter() - start,
            "real": references, "runs": runs}
  os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
  with open(args.output, "w", encoding="utf-8") as handle:
    json.dump(result, handle, indent=2, default=str)
  print(f"wrote {args.output} ({result['seconds']:.0f} s)")
  plot(result, os.path.splitext(args.output)[0] + ".png")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
