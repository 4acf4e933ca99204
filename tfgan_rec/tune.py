"""`python -m tfgan_rec.tune`: search hyperparameters with KerasTuner.

    python -m tfgan_rec.tune --tuner bayesian --max-trials 20
    python -m tfgan_rec.train --config tuning/tfgan_rec/best_config.yaml
    python -m tfgan_rec.tune --space graph --tuner gan --max-trials 20

Takes every `train` flag for the data and the fixed settings; the search
itself is in `tfgan_rec.tuning`.
"""
import argparse
import sys
from typing import List, Optional

from tfgan_rec import cli
from tfgan_rec import config as config_lib
from tfgan_rec.errors import InputError


def build_parser() -> argparse.ArgumentParser:
  parser = cli.build_parser("python -m tfgan_rec.tune",
                            "Search hyperparameters with KerasTuner.")
  parser.add_argument("--tuner", choices=config_lib.TUNERS, default="random",
                      help="gan: the GAN-guided oracle (tfgan_rec."
                           "gan_oracle)")
  parser.add_argument("--max-trials", type=int, default=10,
                      dest="max_trials")
  parser.add_argument("--directory", default="tuning",
                      help="where KerasTuner keeps its trials")
  parser.add_argument("--project-name", default="tfgan_rec",
                      dest="project_name")
  parser.add_argument("--overwrite", action="store_true", default=False,
                      help="start over instead of resuming")
  parser.add_argument("--space", default=None,
                      help="comma-separated sub-spaces: recommender, gan, "
                           "augmentation, graph (default: recommender, plus "
                           "gan and augmentation with --augment gan)")
  parser.add_argument("--search-seed", type=int, default=None,
                      dest="search_seed",
                      help="seed of the tuner's own draws (default: --seed, "
                           "which also fixes the data and training)")
  parser.add_argument("--initial-trials", type=int, default=None,
                      dest="initial_trials",
                      help="random trials before the bayesian or gan tuner "
                           "models the results (default: bayesian 3 x the "
                           "hyperparameters searched, gan 5)")
  return parser


def choose_spaces(space: str, config: config_lib.RunConfig) -> List[str]:
  """The sub-spaces named in `space` (comma-separated), by default the
  recommender plus, with GAN augmentation, the GAN and the augmentation."""
  if space:
    spaces = [s.strip() for s in space.split(",") if s.strip()]
  else:
    spaces = ["recommender"] + (["gan", "augmentation"]
                                if config.augmentation.uses_gan else [])
  unknown = [s for s in spaces if s not in config_lib.SEARCH_SPACES]
  if unknown:
    raise InputError(f"--space '{unknown[0]}' is unknown; use "
                     f"{', '.join(config_lib.SEARCH_SPACES)}.")
  needs_gan = set(spaces) & {"gan", "augmentation"}
  if not config.augmentation.uses_gan and needs_gan:
    raise InputError("--space gan/augmentation needs --augment gan.")
  return spaces


def check_search_flags(args) -> None:
  """InputError for a search seed or warm-up KerasTuner cannot honour."""
  if args.search_seed is not None and args.search_seed < 1:
    # KerasTuner's oracles replace a seed of 0 (falsy) by a random one.
    raise InputError(f"--search-seed {args.search_seed}: KerasTuner draws a "
                     f"random seed for 0 and below; use 1 or more.")
  if args.initial_trials is not None and args.initial_trials < 1:
    raise InputError(f"--initial-trials {args.initial_trials}: use 1 or "
                     f"more.")
  if args.max_trials < 1:
    raise InputError(f"--max-trials {args.max_trials}: use 1 or more.")


def tune(args) -> dict:
  """Runs (or resumes) the search and prints the trials, best first."""
  base = cli.resolve_config(args)
  spaces = choose_spaces(args.space, base)
  check_search_flags(args)
  cli.load_tensorflow(args.verbose)
  from tfgan_rec import tuning  # pylint: disable=g-import-not-at-top
  options = tuning.SearchOptions(
      args.tuner, spaces, args.max_trials,
      args.directory, args.project_name, args.overwrite, args.search_seed,
      args.initial_trials)
  summary = tuning.search(base, options)
  print(summary["table"])
  print(f"\nbest {summary['objective']} {summary['best_score']:.4f} (trial "
        f"{summary['best_trial']}); config: {summary['best_config']}")
  return summary


def main(argv: Optional[List[str]] = None) -> int:
  return cli.run_cli(build_parser(), tune, argv)


if __name__ == "__main__":
  sys.exit(main())
