"""`python -m tfgan_rec.tune`: KerasTuner search over the recommender, the GAN
and the augmentation.

    python -m tfgan_rec.tune --tuner bayesian --max-trials 20
    python -m tfgan_rec.train --config tuning/tfgan_rec/best_config.yaml

KerasTuner 1.4 builds Keras 3 models and rejects the tf_keras models TFRS
needs, so the tuner's `run_trial` builds, trains and evaluates itself and
returns the metrics (keras-tuner issue #1039). The objective is Recall@K on
the validation split carved from training data; the test split is never
touched. Searches resume by default (`--overwrite` starts over). The best
configuration is written as YAML that `python -m tfgan_rec.train --config`
accepts unchanged.
"""
import argparse
import dataclasses
import json
import logging
import os
import sys
from typing import Dict, List, Optional, Sequence

import tfgan_rec  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import yaml

from tfgan_rec import config as config_lib
from tfgan_rec import train as train_cli
from tfgan_rec.errors import InputError

log = logging.getLogger("tfgan_rec")

SPACES = ("recommender", "gan", "augmentation")
TUNERS = ("random", "bayesian", "hyperband")


def define_recommender(hp, config: config_lib.RunConfig) -> None:
  model, train = config.model, config.train
  model.embedding_dim = hp.Choice("embedding_dim", [32, 64, 128])
  width = hp.Choice("tower_width", [64, 128, 256])
  depth = hp.Int("tower_depth", 1, 2)
  model.query_hidden = model.candidate_hidden = (width,) * depth
  model.temperature = hp.Float("temperature", 0.03, 0.3, sampling="log")
  model.ranking_weight = hp.Float("ranking_weight", 0.0, 0.5)
  model.retrieval_weight = 1.0  # the scale is set by the ranking weight
  model.history_dropout = hp.Float("history_dropout", 0.0, 0.5)
  train.learning_rate = hp.Float("learning_rate", 3e-4, 1e-2, sampling="log")
  if not _budget_is_epochs(hp):
    train.epochs = hp.Int("epochs", 5, 40, step=5)


def _budget_is_epochs(hp) -> bool:
  """Hyperband sets epochs itself (and marks its hyperparameters so)."""
  return "tuner/epochs" in hp.values or getattr(hp, "budget_is_epochs", False)


def define_gan(hp, config: config_lib.RunConfig) -> None:
  gan = config.gan
  gan.noise_dim = hp.Choice("gan_noise_dim", [8, 16, 32, 64])
  gan.hidden = (hp.Choice("gan_hidden", [128, 256, 512]),)
  gan.g_learning_rate = hp.Float("gan_g_learning_rate", 1e-4, 3e-3,
                                 sampling="log")
  gan.d_learning_rate = hp.Float("gan_d_learning_rate", 1e-4, 3e-3,
                                 sampling="log")
  gan.d_steps = hp.Int("gan_d_steps", 1, 3)
  gan.loss = hp.Choice("gan_loss", ["minimax", "wasserstein"])
  gan.history_dropout = hp.Float("gan_history_dropout", 0.2, 0.8)


def define_augmentation(hp, config: config_lib.RunConfig) -> None:
  aug = config.augmentation
  aug.threshold = hp.Choice("augment_threshold", [5, 10, 20, 40])
  aug.items_per_user = hp.Int("augment_items", 1, 20)
  aug.weight = hp.Float("augment_weight", 0.05, 1.0, sampling="log")


DEFINE = {"recommender": define_recommender, "gan": define_gan,
          "augmentation": define_augmentation}


def configure_trial(base: config_lib.RunConfig, hp,
                    spaces: Sequence[str]) -> config_lib.RunConfig:
  """A copy of `base` with the trial's hyperparameters filled in."""
  config = config_lib.update(config_lib.RunConfig(), base.to_dict(), "base")
  for space in spaces:
    DEFINE[space](hp, config)
  if "tuner/epochs" in hp.values:  # Hyperband's budget is epochs.
    config.train.epochs = int(hp.values["tuner/epochs"])
  return config


def validation_recall(config: config_lib.RunConfig, prepared) -> float:
  """The tuning objective: best validation Recall@K while early-stopping,
  exactly as `train` does it before its refit (the same seed gives the same
  number there)."""
  # pylint: disable=g-import-not-at-top
  from tfgan_rec import augment
  from tfgan_rec.recommender import training
  data, split = prepared.data, prepared.split
  fit_rows = training.TrainingRows.real(data, split.fit)
  if config.augment == "gan":
    trainer = augment.fit_gan(config.gan, fit_rows, data, config.seed)
    fit_rows = augment.concat(fit_rows, augment.augment(
        trainer, fit_rows, data, config.augmentation))
  no_refit = dataclasses.replace(
      config, train=dataclasses.replace(config.train, refit=False))
  result = training.train_recommender(no_refit, data, fit_rows, fit_rows,
                                      split.validation)
  return best_validation(result.history, config.eval.k)


def best_validation(history: List[dict], k: int) -> float:
  return max(r[f"val_recall@{k}"] for r in history
             if f"val_recall@{k}" in r and not r.get("refit"))


def make_tuner(kind: str, base: config_lib.RunConfig, prepared,
               spaces: Sequence[str], directory: str, project_name: str,
               max_trials: int, overwrite: bool):
  """A KerasTuner tuner of `kind` whose trials train tfgan_rec models."""
  import keras_tuner as kt  # pylint: disable=g-import-not-at-top
  objective_name = f"val_recall@{base.eval.k}"

  class RecommenderTuner({"random": kt.RandomSearch,
                          "bayesian": kt.BayesianOptimization,
                          "hyperband": kt.Hyperband}[kind]):
    """Builds and trains tf_keras models itself (see module docstring)."""

    def run_trial(self, trial, *args, **kwargs):
      config = configure_trial(base, trial.hyperparameters, spaces)
      value = validation_recall(config, prepared)
      log.info("trial %s: %s %.4f", trial.trial_id, objective_name, value)
      return {objective_name: value}

  options = dict(objective=kt.Objective(objective_name, "max"),
                 directory=directory, project_name=project_name,
                 overwrite=overwrite, seed=base.seed)
  if kind == "hyperband":
    options.update(max_epochs=base.train.epochs, factor=3)
  else:
    options.update(max_trials=max_trials)
  tuner = RecommenderTuner(**options)
  # The oracles sample only declared hyperparameters (Hyperband stops on an
  # empty space), so declare the whole space before searching.
  space = kt.HyperParameters()
  space.budget_is_epochs = kind == "hyperband"
  configure_trial(base, space, spaces)
  tuner.oracle.update_space(space)
  return tuner


def trials_table(tuner, objective: str) -> str:
  """Markdown table of completed trials, best first."""
  trials = [t for t in tuner.oracle.trials.values()
            if t.score is not None]
  trials.sort(key=lambda t: -t.score)
  names = sorted({n for t in trials for n in t.hyperparameters.values
                  if not n.startswith("tuner/")})
  lines = [f"| trial | {objective} | " + " | ".join(names) + " |",
           "|---|---:|" + "---|" * len(names)]
  for t in trials:
    values = [_short(t.hyperparameters.values.get(n, "")) for n in names]
    lines.append(f"| {t.trial_id} | {t.score:.4f} | " + " | ".join(values) +
                 " |")
  return "\n".join(lines)


def _short(value) -> str:
  return f"{value:.4g}" if isinstance(value, float) else str(value)


def build_parser() -> argparse.ArgumentParser:
  parser = train_cli.build_parser()
  parser.prog = "python -m tfgan_rec.tune"
  parser.description = "Search hyperparameters with KerasTuner."
  parser.add_argument("--tuner", choices=TUNERS, default="random")
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


def _spaces(args, config) -> List[str]:
  if args.space:
    spaces = [s.strip() for s in args.space.split(",") if s.strip()]
  else:
    spaces = ["recommender"] + (["gan", "augmentation"]
                                if config.augment == "gan" else [])
  unknown = [s for s in spaces if s not in SPACES]
  if unknown:
    raise InputError(f"--space '{unknown[0]}' is unknown; use "
                     f"{', '.join(SPACES)}.")
  if config.augment != "gan" and set(spaces) & {"gan", "augmentation"}:
    raise InputError("--space gan/augmentation needs --augment gan.")
  return spaces


def tune(args) -> Dict[str, object]:
  """Runs (or resumes) the search; writes trials.md, trials.json and
  best_config.yaml to the project folder and returns the summary."""
  from tfgan_rec import data as data_lib  # pylint: disable=g-import-not-at-top
  base = train_cli.resolve_config(args)
  spaces = _spaces(args, base)
  prepared = data_lib.prepare(base.data, base.seed)
  tuner = make_tuner(args.tuner, base, prepared, spaces, args.directory,
                     args.project_name, args.max_trials, args.overwrite)
  tuner.search()
  objective = f"val_recall@{base.eval.k}"
  best_hp = tuner.get_best_hyperparameters(1)[0]
  best = configure_trial(base, best_hp, spaces)
  project = os.path.join(args.directory, args.project_name)
  with open(os.path.join(project, "best_config.yaml"), "w",
            encoding="utf-8") as f:
    yaml.safe_dump(best.to_dict(), f, sort_keys=False)
  table = trials_table(tuner, objective)
  with open(os.path.join(project, "trials.md"), "w", encoding="utf-8") as f:
    f.write(table + "\n")
  best_trial = tuner.oracle.get_best_trials(1)[0]
  summary = {"objective": objective, "best_score": best_trial.score,
             "best_trial": best_trial.trial_id, "spaces": spaces,
             "trials": len([t for t in tuner.oracle.trials.values()
                            if t.score is not None]),
             "best_config": os.path.join(project, "best_config.yaml")}
  with open(os.path.join(project, "trials.json"), "w", encoding="utf-8") as f:
    json.dump({**summary, "table": table}, f, indent=2)
  print(table)
  print(f"\nbest {objective} {best_trial.score:.4f} (trial "
        f"{best_trial.trial_id}); config: {summary['best_config']}")
  return summary


def main(argv: Optional[List[str]] = None) -> int:
  return train_cli.run_cli(build_parser(), tune, argv)


if __name__ == "__main__":
  sys.exit(main())
