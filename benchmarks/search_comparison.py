"""Random vs Bayesian vs GAN-guided search over the graph tower's architecture.

    python benchmarks/search_comparison.py              # 3 x 3 x 20 trials
    python benchmarks/search_comparison.py --epochs 10  # shorter trials
    python benchmarks/search_comparison.py --trials 2 --seeds 0 -- \\
        --dataset synthetic --synthetic-interactions 3000  # a smoke run

For each tuner (random, bayesian, gan) and search seed (0, 1, 2) it runs
`python -m tfgan_rec.tune --space graph` with `--trials` trials in a fresh
process (default data: MovieLens 100K; arguments after `--` go to the tune
command unchanged) and records the best validation Recall@K among the first
10 and the first 20 trials to finish (and the first `--trials`, from the
tune command's trials.json), the seconds the search took (its processes
that finished; an interrupted one's time is lost), and its best
configuration. Prints a table and writes JSON (default
benchmarks/results/search_comparison.json).

What is held equal: every search trains on the same split with the same
training seed (`--seed` of the tune command, default 42), so a configuration
scores the same whichever tuner proposes it and the tuners differ only in
what they propose; bayesian and gan both start with `--initial-trials`
random trials (default 5; KerasTuner's Bayesian default, 3 x the 6
hyperparameters, would leave 2 of 20 trials to the Gaussian process).

Search seed s runs the tuner with seed 1 + 1000 s: KerasTuner replaces a
seed of 0 by a random one, and draws hyperparameter number n of a search
with random.Random(seed + n), so seeds s and s + 1 would replay each other's
draws shifted by one hyperparameter.

Resuming: a tuner/seed pair already in the JSON with `--trials` trials (or
more) is skipped; an interrupted pair, or one asked for more trials,
resumes its KerasTuner project (kept under `--work-dir`). The JSON records
the settings it was made with (all but the number of trials) and is not
mixed with a run of other settings.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Sequence

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TUNERS = ("random", "bayesian", "gan")


def tuner_seed(search_seed: int) -> int:
  """The KerasTuner seed of search seed `search_seed` (module docstring)."""
  return 1 + 1000 * search_seed


def checkpoints(trials: int) -> List[int]:
  """Trial budgets the best score is reported after: 10, 20, `trials`."""
  return sorted({n for n in (10, 20) if n <= trials} | {trials})


def best_after(scores: Sequence[float], budgets: Sequence[int]
               ) -> Dict[str, float]:
  """{budget: the best of the first `budget` scores}."""
  return {str(n): max(scores[:n]) for n in budgets if len(scores) >= n}


def run_search(tuner: str, seed: int, args, tune_args: List[str],
               earlier_seconds: float = 0.0) -> dict:
  """One search (or the rest of one that took `earlier_seconds` so far) in
  a fresh process; its record for the JSON."""
  name = f"{tuner}-seed{seed}"
  command = [sys.executable, "-m", "tfgan_rec.tune", "--space", "graph",
             "--tuner", tuner, "--search-seed", str(tuner_seed(seed)),
             "--max-trials", str(args.trials), "--initial-trials",
             str(args.initial_trials), "--directory", args.work_dir,
             "--project-name", name]
  if args.epochs:
    command += ["--epochs", str(args.epochs)]
  command += tune_args
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(
      [ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
  os.makedirs(args.work_dir, exist_ok=True)
  log_path = os.path.join(args.work_dir, f"{name}.log")
  start = time.time()
  with open(log_path, "a", encoding="utf-8") as log:
    code = subprocess.call(command, cwd=ROOT, env=env, stdout=log,
                           stderr=subprocess.STDOUT)
  seconds = time.time() - start + earlier_seconds
  if code:
    sys.exit(f"{name} failed (exit {code}); see {log_path}")
  project = os.path.join(args.work_dir, name)
  with open(os.path.join(project, "trials.json"), encoding="utf-8") as f:
    summary = json.load(f)
  with open(summary["best_config"], encoding="utf-8") as f:
    model = yaml.safe_load(f)["model"]
  scores = summary["scores_in_order"]
  return {"tuner": tuner, "search_seed": seed,
          "tuner_seed": tuner_seed(seed), "trials": len(scores),
          "objective": summary["objective"], "scores_in_order": scores,
          "best_after": best_after(scores, checkpoints(args.trials)),
          "seconds": round(seconds, 1),
          "best_config": {key: model[key] for key in (
              "tower", "graph_layers", "graph_combination",
              "graph_normalization", "graph_edge_dropout", "embedding_dim",
              "pooled_history")}}


def mean_std(values: Sequence[float]) -> str:
  if len(values) < 2:
    return f"{values[0]:.4f}" if values else "-"
  return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def table(results: Dict[str, dict], trials: int) -> str:
  """Markdown: per tuner, the best validation score after each budget,
  mean ± sample std over seeds and per seed."""
  budgets = checkpoints(trials)
  lines = ["| tuner | " + " | ".join(f"best after {n}" for n in budgets) +
           " | per seed (after " + str(trials) + ") | s / trial |",
           "|---|" + "---:|" * len(budgets) + "---|---:|"]
  for tuner in TUNERS:
    records = sorted((r for r in results.values() if r["tuner"] == tuner),
                     key=lambda r: r["search_seed"])
    if not records:
      continue
    best = [best_after(r["scores_in_order"], budgets) for r in records]
    cells = [mean_std([b[str(n)] for b in best if str(n) in b])
             for n in budgets]
    per_seed = ", ".join(
        f"{r['search_seed']}: {max(r['scores_in_order'][:trials]):.4f}"
        for r in records)
    per_trial = statistics.mean(r["seconds"] / r["trials"] for r in records)
    lines.append(f"| {tuner} | " + " | ".join(cells) +
                 f" | {per_seed} | {per_trial:.0f} |")
  return "\n".join(lines)


def load(path: str, settings: dict) -> Dict[str, dict]:
  """The finished pairs of an earlier run with the same settings."""
  if not os.path.exists(path):
    return {}
  with open(path, encoding="utf-8") as f:
    saved = json.load(f)
  if saved.get("settings") != settings:
    sys.exit(f"{path} was written with other settings "
             f"({saved.get('settings')}); pass another --output and "
             f"--work-dir, or remove it.")
  return saved["results"]


def save(path: str, settings: dict, results: Dict[str, dict]) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    json.dump({"settings": settings, "results": results}, f, indent=2)
  os.replace(path + ".tmp", path)


def parse(argv: Sequence[str]):
  """(benchmark flags, the tune flags after `--`)."""
  argv = list(argv)
  tune_args = argv[argv.index("--") + 1:] if "--" in argv else []
  own = argv[:argv.index("--")] if "--" in argv else argv
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--trials", type=int, default=20,
                      help="trials per search (default 20)")
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  parser.add_argument("--tuners", nargs="+", choices=TUNERS,
                      default=list(TUNERS))
  parser.add_argument("--epochs", type=int, default=None,
                      help="maximum epochs per trial (default: train's, 40, "
                           "with early stopping)")
  parser.add_argument("--initial-trials", type=int, default=5,
                      dest="initial_trials",
                      help="random trials before bayesian and gan model the "
                           "results")
  parser.add_argument("--work-dir", default="tuning/search_comparison",
                      dest="work_dir", help="KerasTuner projects and logs")
  parser.add_argument("--output",
                      default=os.path.join(HERE, "results",
                                           "search_comparison.json"))
  args = parser.parse_args(own)
  if args.trials < 1 or args.initial_trials < 1:
    parser.error("--trials and --initial-trials must be 1 or more")
  return args, tune_args


def main(argv: Sequence[str]) -> int:
  args, tune_args = parse(argv)
  # Not the number of trials: a larger --trials extends the searches.
  settings = {"epochs": args.epochs, "initial_trials": args.initial_trials,
              "tune_args": tune_args}
  results = load(args.output, settings)
  for seed in args.seeds:
    for tuner in args.tuners:
      key = f"{tuner}-seed{seed}"
      if results.get(key, {}).get("trials", 0) >= args.trials:
        print(f"{key}: done, skipped", flush=True)
        continue
      print(f"{key}: searching ({args.trials} trials)", flush=True)
      results[key] = run_search(tuner, seed, args, tune_args,
                                results.get(key, {}).get("seconds", 0.0))
      save(args.output, settings, results)
      print(f"{key}: best {results[key]['best_after']} in "
            f"{results[key]['seconds']:.0f} s", flush=True)
  print(table(results, args.trials))
  print(f"\nwritten to {args.output}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
