"""KerasTuner search over the recommender, the GAN and the augmentation.

KerasTuner 1.4 builds Keras 3 models and rejects the tf_keras models TFRS
needs, so the tuner's `run_trial` builds, trains and evaluates itself and
returns the metrics (keras-tuner issue #1039). The objective is Recall@K on
the validation split carved from training data
(`pipeline.best_validation_recall`); the test split is never touched.
Searches resume by default. The best configuration is written as YAML that
`python -m tfgan_rec.train --config` accepts unchanged. Besides KerasTuner's
random, Bayesian and Hyperband tuners, `gan` searches with the GAN-guided
oracle of `tfgan_rec.gan_oracle`.
"""
import dataclasses
import json
import logging
import os
from typing import Dict, List, Optional, Sequence

import keras_tuner as kt

from tfgan_rec import config as config_lib
from tfgan_rec import gan_oracle
from tfgan_rec import pipeline
from tfgan_rec.errors import InputError
from tfgan_rec.data import SplitData

log = logging.getLogger("tfgan_rec")



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
  gan.loss = hp.Choice("gan_loss", ["modified", "wasserstein"])
  gan.history_dropout = hp.Float("gan_history_dropout", 0.2, 0.8)


def define_augmentation(hp, config: config_lib.RunConfig) -> None:
  aug = config.augmentation
  aug.threshold = hp.Choice("augment_threshold", [5, 10, 20, 40])
  aug.items_per_user = hp.Int("augment_items", 1, 20)
  aug.weight = hp.Float("augment_weight", 0.05, 0.95, sampling="log")


def define_graph(hp, config: config_lib.RunConfig) -> None:
  """The graph tower's architecture (docs/graph_tower.md); the towers use
  the graph embedding (`graph` unless the base run asked for id+graph)."""
  model = config.model
  if not model.uses_graph:
    model.tower = "graph"
  model.graph_layers = hp.Int("graph_layers", 0, 4)
  model.graph_combination = hp.Choice("graph_combination",
                                      list(config_lib.GRAPH_COMBINATIONS))
  model.graph_normalization = hp.Choice(
      "graph_normalization", list(config_lib.GRAPH_NORMALIZATIONS))
  # Edge dropout needs a propagation per step, so a base run that
  # propagates once per epoch searches without it.
  if model.graph_propagation == "step":
    model.graph_edge_dropout = hp.Float("graph_edge_dropout", 0.0, 0.5,
                                        step=0.1)
  # The same name and values as the recommender space's, so the two
  # spaces searched together share one embedding_dim.
  model.embedding_dim = hp.Choice("embedding_dim", [32, 64, 128])
  model.pooled_history = hp.Boolean("pooled_history", default=True)


DEFINE = {"recommender": define_recommender, "gan": define_gan,
          "augmentation": define_augmentation, "graph": define_graph}


def configure_trial(base: config_lib.RunConfig, hp,
                    spaces: Sequence[str]) -> config_lib.RunConfig:
  """A copy of `base` with the trial's hyperparameters filled in."""
  config = base.copy()
  for space in spaces:
    DEFINE[space](hp, config)
  if "tuner/epochs" in hp.values:  # Hyperband's budget is epochs.
    config.train.epochs = int(hp.values["tuner/epochs"])
  return config.check()


TUNERS = {"random": kt.RandomSearch, "bayesian": kt.BayesianOptimization,
          "hyperband": kt.Hyperband, "gan": gan_oracle.GANSearch}


def make_tuner(kind: str, base: config_lib.RunConfig, split_data: SplitData,
               spaces: Sequence[str], options: "SearchOptions"):
  """A KerasTuner tuner of `kind` whose trials train tfgan_rec models, in
  `options.directory`/`options.project_name`."""
  objective_name = f"val_recall@{base.eval.k}"

  class RecommenderTuner(TUNERS[kind]):
    """Builds and trains tf_keras models itself (see module docstring)."""

    def run_trial(self, trial, *args, **kwargs):
      config = configure_trial(base, trial.hyperparameters, spaces)
      value = pipeline.best_validation_recall(config, split_data)
      log.info("trial %s: %s %.4f", trial.trial_id, objective_name, value)
      return {objective_name: value}

  tuner = RecommenderTuner(**_tuner_arguments(kind, base, options,
                                              objective_name))
  # The oracles sample only declared hyperparameters (Hyperband stops on an
  # empty space), so declare the whole space before searching.
  space = kt.HyperParameters()
  space.budget_is_epochs = kind == "hyperband"
  configure_trial(base, space, spaces)
  tuner.oracle.update_space(space)
  return tuner


def _tuner_arguments(kind: str, base: config_lib.RunConfig,
                     options: "SearchOptions", objective_name: str) -> dict:
  """The keyword arguments of the `kind` tuner's constructor."""
  seed = base.seed if options.seed is None else options.seed
  arguments = dict(objective=kt.Objective(objective_name, "max"),
                   directory=options.directory,
                   project_name=options.project_name,
                   overwrite=options.overwrite, seed=seed)
  if kind == "hyperband":
    return {**arguments, "max_epochs": base.train.epochs, "factor": 3}
  arguments["max_trials"] = options.max_trials
  if options.initial_trials is not None and kind == "bayesian":
    arguments["num_initial_points"] = options.initial_trials
  if options.initial_trials is not None and kind == "gan":
    arguments["initial_trials"] = options.initial_trials
  return arguments


def finished_in_order(tuner) -> List[kt.engine.trial.Trial]:
  """The completed trials in the order they ended (what a budget of n
  trials would have seen first)."""
  oracle = tuner.oracle
  return [oracle.trials[i] for i in oracle.end_order
          if oracle.trials[i].score is not None]


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


@dataclasses.dataclass
class SearchOptions:
  """How to search: which tuner, which sub-spaces, where to keep trials;
  `seed` is the tuner's (None: the run's seed) and `initial_trials` the
  random trials before the Bayesian or GAN oracle models the results
  (None: their defaults, 3 x the hyperparameters searched for Bayesian,
  `gan_oracle.INITIAL_TRIALS` for gan)."""
  tuner: str = "random"
  spaces: List[str] = dataclasses.field(
      default_factory=lambda: ["recommender"])
  max_trials: int = 10
  directory: str = "tuning"
  project_name: str = "tfgan_rec"
  overwrite: bool = False
  seed: Optional[int] = None
  initial_trials: Optional[int] = None


def search(base: config_lib.RunConfig,
           options: SearchOptions) -> Dict[str, object]:
  """Runs (or resumes) the search; writes trials.md, trials.json and
  best_config.yaml to the project folder and returns the summary."""
  split_data = pipeline.prepare(base.data, base.seed)
  if not len(split_data.split.validation):
    raise InputError("tuning needs a validation split to score trials; set "
                     "--validation-fraction above 0.")
  tuner = make_tuner(options.tuner, base, split_data, options.spaces,
                     options)
  tuner.search()
  objective = f"val_recall@{base.eval.k}"
  best = configure_trial(base, tuner.get_best_hyperparameters(1)[0],
                         options.spaces)
  project = os.path.join(options.directory, options.project_name)
  config_lib.save_yaml(best, os.path.join(project, "best_config.yaml"))
  table = trials_table(tuner, objective)
  with open(os.path.join(project, "trials.md"), "w", encoding="utf-8") as f:
    f.write(table + "\n")
  best_trial = tuner.oracle.get_best_trials(1)[0]
  finished = finished_in_order(tuner)
  summary = {"objective": objective, "best_score": best_trial.score,
             "best_trial": best_trial.trial_id, "spaces": options.spaces,
             "tuner": options.tuner, "trials": len(finished),
             "scores_in_order": [t.score for t in finished],
             "best_config": os.path.join(project, "best_config.yaml")}
  with open(os.path.join(project, "trials.json"), "w", encoding="utf-8") as f:
    json.dump({**summary, "table": table}, f, indent=2)
  return {**summary, "table": table}
