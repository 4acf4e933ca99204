"""`python -m tfgan_rec.tune`: search hyperparameters with KerasTuner.

    python -m tfgan_rec.tune --tuner bayesian --max-trials 20
    python -m tfgan_rec.train --config tuning/tfgan_rec/best_config.yaml

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
  parser.add_argument("--tuner", choices=config_lib.TUNERS, default="random")
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
                           "augmentation (default: recommender, plus gan and "
                           "augmentation with --augment gan)")
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


def tune(args) -> dict:
  """Runs (or resumes) the search and prints the trials, best first."""
  base = cli.resolve_config(args)
  spaces = choose_spaces(args.space, base)
  cli.load_tensorflow(args.verbose)
  from tfgan_rec import tuning  # pylint: disable=g-import-not-at-top
  options = tuning.SearchOptions(
      args.tuner, spaces, args.max_trials,
      args.directory, args.project_name, args.overwrite)
  summary = tuning.search(base, options)
  print(summary["table"])
  print(f"\nbest {summary['objective']} {summary['best_score']:.4f} (trial "
        f"{summary['best_trial']}); config: {summary['best_config']}")
  return summary


def main(argv: Optional[List[str]] = None) -> int:
  return cli.run_cli(build_parser(), tune, argv)


if __name__ == "__main__":
  sys.exit(main())
