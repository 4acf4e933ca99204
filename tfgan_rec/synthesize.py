"""`python -m tfgan_rec.synthesize`: write synthetic users, items and
interactions from a run's release generator.

    python -m tfgan_rec.train --dp-epsilon 3 --dp-delta 1e-5 --run-dir runs/dp3
    python -m tfgan_rec.synthesize --run-dir runs/dp3 --users 1000 --out synth

Writes ratings.csv, users.csv and items.csv in the formats `train` reads
(`train --ratings synth/ratings.csv --users synth/users.csv --items
synth/items.csv`) and privacy.json, the (epsilon, delta) of the generator
that made them or "not private". Generating is post-processing of the
release: any number of users, any seed, no further privacy cost. See
docs/privacy.md.
"""
import argparse
import os
import sys
from typing import List, Optional

from tfgan_rec import cli
from tfgan_rec.errors import InputError


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m tfgan_rec.synthesize",
      description="Write synthetic users, items and interactions from a "
                  "run's release generator.")
  parser.add_argument("--run-dir", required=True,
                      help="a run trained with --dp-epsilon")
  parser.add_argument("--users", type=int, required=True,
                      help="synthetic users to generate")
  parser.add_argument("--out", required=True,
                      help="a new (or empty) folder for the CSV files")
  parser.add_argument("--seed", type=int, default=0,
                      help="fixes the synthetic users and their draws")
  cli.add_verbose_flag(parser)
  return parser


def synthesize(args) -> None:
  """Loads the run's release generator and writes the synthetic data."""
  cli.check_run_dir(args.run_dir)
  if args.users < 1:
    raise InputError(f"--users {args.users}: generate at least 1 user.")
  if os.path.isdir(args.out) and os.listdir(args.out):
    raise InputError(f"--out '{args.out}' is not empty; choose a new folder "
                     f"(nothing was overwritten).")
  cli.load_tensorflow(args.verbose)
  from tfgan_rec import release  # pylint: disable=g-import-not-at-top
  loaded = release.load_release(args.run_dir)
  frames = release.synthesize(loaded, args.users, args.seed)
  release.write_synthetic(frames, loaded.privacy, args.out)
  print(f"{len(frames['ratings'])} interactions of {args.users} synthetic "
        f"users written to {args.out}")


def main(argv: Optional[List[str]] = None) -> int:
  return cli.run_cli(build_parser(), synthesize, argv)


if __name__ == "__main__":
  sys.exit(main())
