"""`python -m tfgan_rec.train`: train the two-stage recommender, compare it
with baselines, export it for TF Serving.

    python -m tfgan_rec.train                       # MovieLens 100K
    python -m tfgan_rec.train --ratings logs.csv --users u.csv --items i.csv
    python -m tfgan_rec.train --config best.yaml --seed 7
    python -m tfgan_rec.train --test-fraction 0 --sparse-users 0  # all data

Each run writes config.yaml, metrics.json and report.md to its run folder
(`--run-dir`, default runs/<time>-seed<seed>), keeps the trained model in
<run-dir>/model/ and exports the retrieval, ranking and two-stage recommend
SavedModels as the next version under `--export-dir`. The stages are in
`tfgan_rec.pipeline`.
"""
import sys
from typing import List, Optional

from tfgan_rec import cli


def build_parser():
  return cli.build_parser(
      "python -m tfgan_rec.train",
      "Train the two-stage recommender, compare it with baselines, export it "
      "for TF Serving.")


def train(args) -> None:
  """Resolves the settings, then runs every stage of the pipeline."""
  config = cli.resolve_config(args)
  run_dir = cli.new_run_dir(config)
  cli.load_tensorflow(args.verbose)
  # Loaded here, after TensorFlow's start-up lines were captured, so
  # `--help` answers without loading TensorFlow.
  from tfgan_rec import pipeline, report  # pylint: disable=g-import-not-at-top
  summary = pipeline.run(config, run_dir, resume=args.resume)
  print(report.markdown_report(summary))


def main(argv: Optional[List[str]] = None) -> int:
  return cli.run_cli(build_parser(), train, argv)


if __name__ == "__main__":
  sys.exit(main())
