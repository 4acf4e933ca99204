"""`python -m tfgan_rec.export`: export a finished training run for TF Serving.

    python -m tfgan_rec.export --run-dir runs/RUN --export-dir export

Rebuilds the run's model (its config, data and split, and the weights it
saved) and writes the retrieval, ranking and recommend SavedModels as the next
version (see `tfgan_rec.saved_models` for the layout and atomic writes).
"""
import argparse
import sys
from typing import List, Optional

from tfgan_rec import cli
from tfgan_rec.config import INDEXES
from tfgan_rec.errors import InputError


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m tfgan_rec.export",
      description="Export a finished training run for TF Serving.")
  parser.add_argument("--run-dir", required=True,
                      help="a run folder written by python -m tfgan_rec.train")
  parser.add_argument("--export-dir",
                      help="where versions are written (default: the run's)")
  parser.add_argument("--top-k", type=int,
                      help="items returned by the retrieval model")
  parser.add_argument("--keep-versions", type=int,
                      help="exported versions kept per model")
  parser.add_argument("--index", choices=INDEXES,
                      help="how retrieval and recommend search the "
                           "catalogue (default: the run's)")
  parser.add_argument("--shortlist-factor", type=int,
                      help="with --index compact, items re-scored exactly "
                           "per query, as a multiple of the items returned")
  cli.add_verbose_flag(parser)
  return parser


def export(args) -> None:
  """Exports the run in `args.run_dir` with its settings, as overridden."""
  cli.check_run_dir(args.run_dir)
  cli.load_tensorflow(args.verbose)
  from tfgan_rec import pipeline  # pylint: disable=g-import-not-at-top
  config = pipeline.load_run_config(args.run_dir)
  for field in ("export_dir", "top_k", "keep_versions", "index",
                "shortlist_factor"):
    if getattr(args, field) is not None:
      setattr(config.export, field, getattr(args, field))
  if min(config.export.top_k, config.export.keep_versions,
         config.export.shortlist_factor) < 1:
    raise InputError("--top-k, --keep-versions and --shortlist-factor must "
                     "be at least 1.")
  for name, path in pipeline.export_run(args.run_dir, config).items():
    print(f"{name}: {path}")


def main(argv: Optional[List[str]] = None) -> int:
  return cli.run_cli(build_parser(), export, argv)


if __name__ == "__main__":
  sys.exit(main())
