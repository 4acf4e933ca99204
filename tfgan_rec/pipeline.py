"""One run of tfgan_rec as named stages, from logs to served models.

    load -> encode -> split -> baselines -> GAN -> augmentation
         -> recommender -> evaluate -> export

Each stage is a function from typed values to typed values (`SplitData`,
`Examples`, `FitResult`, `RunSummary`, ...); `run` composes them and writes
the run folder (config.yaml, metrics.json, report.md, the trained model).
`train`, `tune` and `export` are thin command lines over these functions.

>>> config = RunConfig(seed=3)
>>> config.data.dataset, config.data.synthetic_interactions = "synthetic", 3000
>>> split_data = prepare(config.data, config.seed)
>>> split_data.data.num_users, len(split_data.split.test) > 0
(75, True)
"""
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import time
from typing import Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from tfgan_rec import (augmentation, baselines, cluster, evaluate,
                       new_users, next_items, plots, release, report,
                       saved_models, signatures, thin_users)
from tfgan_rec.report import (AugmentationSummary, DataSummary,
                              NewItemSummary, RunSummary,
                              UserGeneratorSummary)
from tfgan_rec import data as data_lib
from tfgan_rec import privacy as privacy_lib
from tfgan_rec.config import DataConfig, RunConfig, load_yaml, save_yaml, update
from tfgan_rec.data import Examples, SplitData
from tfgan_rec.errors import InputError
from tfgan_rec.gan import item_generator, loop
from tfgan_rec.gan.loop import GANDivergedError
from tfgan_rec.gan.trainer import GANTrainer
from tfgan_rec.recommender import training
from tfgan_rec.recommender.model import (NEW_USER_SCORER, NEXT_ITEM_BLEND,
                                         TwoStageModel)

log = logging.getLogger("tfgan_rec")

# What a run folder holds.
CONFIG_FILE, METRICS_FILE, REPORT_FILE = ("config.yaml", "metrics.json",
                                          "report.md")
MODEL_DIR, CANDIDATES_FILE, CHECKPOINTS = ("model", "candidates.npy",
                                           "checkpoints")
OLD_GAN_CHECKPOINTS = "gan_checkpoints"  # before the recommenders had any
# The recommenders' epochs, under CHECKPOINTS (removed when the run ends).
RECOMMENDER_CHECKPOINTS = ("recommender", "recommender_augmented")
MODEL_NAME = "TFRS two-stage"
AUGMENTED_NAMES = {"gan": "TFRS + GAN interactions",
                   "ease": "TFRS + EASE interactions (teacher ablation)"}
USER_GENERATOR_NAME = "TFRS + GAN user generator"
NEW_USERS_NAME = "served: new users by features"
NEXT_ITEMS_DECISION = "next-item transitions"
# Fewer validation users than this taking new items decide nothing (the
# generated embeddings, +33.7% over 5 seeds on test, stay).
MIN_DECISION_USERS = 10


class StageTimer:
  """Wall time per stage: `with timer("recommender"): ...`."""

  def __init__(self):
    self.seconds: Dict[str, float] = {}

  @contextlib.contextmanager
  def __call__(self, stage: str):
    start = time.time()
    yield
    self.seconds[stage] = time.time() - start


# --- load, encode, split -----------------------------------------------------

def prepare(config: DataConfig, seed: int) -> SplitData:
  """load -> encode -> split; bad input raises InputError."""
  interactions = data_lib.load_interactions(config, seed)
  encoded = data_lib.encode(interactions, config.feature_kinds)
  return data_lib.split_data(encoded, config, seed)


def summarize_data(split_data: SplitData) -> DataSummary:
  data, split = split_data.data, split_data.split
  return DataSummary(data.source, data.num_users, data.num_items, len(data),
                     len(split.train), len(split.test),
                     int(split_data.user_slices["sparse"].sum()))


# --- baselines ---------------------------------------------------------------

def fit_baselines(split_data: SplitData, k: int
                  ) -> Dict[str, evaluate.ScoreFn]:
  """MostPop, the feature baselines (with user features), EASE (lambda
  chosen on validation) and next-item transitions, on the train part."""
  matrices = split_data.matrices
  ease_l2 = (baselines.tune_ease(matrices["fit"], matrices["validation"], k)
             if matrices["validation"].nnz else baselines.EASE_DEFAULT_L2)
  scorers = {"MostPop": baselines.MostPopular(matrices["train"]).scores,
             **_feature_baselines(split_data, k)}
  scorers[f"EASE (lambda={ease_l2:g})"] = baselines.EASE(
      matrices["train"], ease_l2).scores
  scorers.update(_transitions(split_data, k))
  return scorers


def _feature_baselines(split_data: SplitData, k: int
                       ) -> Dict[str, evaluate.ScoreFn]:
  """Popularity within demographic groups, and, when the split has users
  known by features only, the feature softmax (l2 chosen on held-out warm
  users); none without user features."""
  train, features = split_data.matrices["train"], split_data.data.user_features
  if not features.columns:
    return {}
  scorers = {"GroupPop": baselines.GroupPopular(train, features).scores}
  if ("new" in split_data.user_slices and
      train.shape[1] <= baselines.EASE_MAX_ITEMS):
    l2 = baselines.tune_feature_softmax(train, features, k)
    scorers[f"FeatureSoftmax (l2={l2:g})"] = baselines.FeatureSoftmax(
        train, features, l2).scores
  return scorers


def _transitions(split_data: SplitData, k: int
                 ) -> Dict[str, evaluate.ScoreFn]:
  """Next-item transitions (window and history chosen on validation)."""
  data, matrices = split_data.data, split_data.matrices
  choice = (baselines.tune_transitions(
      split_data.examples("fit"), data.num_users, data.num_items,
      matrices["fit"], matrices["validation"], k)
            if matrices["validation"].nnz else {})
  train = split_data.examples("train")
  model = baselines.ItemTransitions(train.user, train.item, train.timestamp,
                                    data.num_users, data.num_items, **choice)
  label = ", ".join(f"{key}={value}" for key, value in choice.items())
  return {f"Transitions ({label or 'defaults'})": model.scores}


# --- GAN and augmentation ----------------------------------------------------

def run_checkpoints(run_dir: str, resume: bool) -> str:
  """The run's checkpoint folder (the GANs' and, until the run ends, the
  recommenders'); stale checkpoints need --resume."""
  checkpoints = os.path.join(run_dir, CHECKPOINTS)
  if os.path.isdir(os.path.join(run_dir, OLD_GAN_CHECKPOINTS)):
    raise InputError(f"'{run_dir}' holds GAN checkpoints of an older version "
                     f"in {OLD_GAN_CHECKPOINTS}/; rename that folder to "
                     f"{CHECKPOINTS}/ to resume them, or choose another "
                     f"--run-dir.")
  if os.path.isdir(checkpoints) and os.listdir(checkpoints) and not resume:
    raise InputError(f"'{checkpoints}' holds checkpoints of an earlier run; "
                     f"pass --resume to continue it or choose another "
                     f"--run-dir.")
  return checkpoints


def check_resumed_settings(config: RunConfig, run_dir: str) -> None:
  """With --resume, the settings must be those of the run being continued
  (its config.yaml): InputError naming the first that differs."""
  path = os.path.join(run_dir, CONFIG_FILE)
  if not os.path.exists(path):
    return
  saved, current = _flat(load_yaml(path)), _flat(config.to_dict())
  for name in sorted(set(saved) | set(current)):
    if saved.get(name) != current.get(name):
      raise InputError(
          f"--resume continues the run in '{run_dir}', which has {name}="
          f"{saved.get(name)!r}, not {current.get(name)!r}; resume with "
          f"its settings (--config {path}) or choose another --run-dir.")


def _flat(settings: dict, prefix: str = "") -> dict:
  """{"section.field": value} of a nested settings mapping (lists as
  tuples, as YAML reads them back as lists)."""
  flat = {}
  for key, value in settings.items():
    if isinstance(value, dict):
      flat.update(_flat(value, f"{prefix}{key}."))
    else:
      flat[prefix + key] = (tuple(value) if isinstance(value, (list, tuple))
                            else value)
  return flat


def remove_recommender_checkpoints(checkpoints: str) -> None:
  """Deletes the recommenders' epochs once the run is written (they only
  serve to resume it), and the folder if nothing else is in it."""
  for name in RECOMMENDER_CHECKPOINTS:
    shutil.rmtree(os.path.join(checkpoints, name), ignore_errors=True)
  with contextlib.suppress(OSError):  # not empty, or another worker's
    os.rmdir(checkpoints)


def train_gan(config: RunConfig, split_data: SplitData, rows: Examples,
              checkpoints: Optional[str] = None) -> GANTrainer:
  """Trains (or resumes) the interaction GAN on `rows`; a diverged GAN ends
  the run with the trainer's message."""
  logdir = os.path.join(config.logdir, "gan") if config.logdir else None
  try:
    return augmentation.train_gan(config.gan, rows, split_data.data,
                                  config.seed, checkpoints, logdir)
  except GANDivergedError as err:
    raise InputError(str(err)) from None


@dataclasses.dataclass
class Generated:
  """What the augmentation stage adds: generated interactions for the thin
  users of the fit part (early stopping) and of the train part (the refit),
  the source used directly as a recommender (`train_score`, conditioned on
  the train part), the GAN's last training metrics (empty for EASE) and
  how often two noise draws agree (`augmentation.noise_agreement`; None
  for EASE)."""
  fit: Examples
  train: Examples
  train_score: evaluate.ScoreFn
  gan_metrics: Dict[str, float]
  noise_agreement: Optional[float] = None


def generate_interactions(config: RunConfig, split_data: SplitData,
                          fit_rows: Examples, train_rows: Examples,
                          checkpoints: Optional[str] = None) -> Generated:
  """The interaction GAN trained on `fit_rows` (or EASE, for the teacher
  ablation `--augment ease`) generates interactions for the thin users of
  `fit_rows` and of `train_rows`."""
  fit_score, train_score, trainer = _interaction_scorers(
      config, split_data, fit_rows, train_rows, checkpoints)
  fit, train = (augmentation.generate_interactions(
      score, rows, split_data.data, config.augmentation)
                for score, rows in ((fit_score, fit_rows),
                                    (train_score, train_rows)))
  if trainer is None:
    return Generated(fit, train, train_score, {})
  return Generated(fit, train, train_score, trainer.last_metrics,
                   augmentation.noise_agreement(
                       trainer, train_rows, split_data.data,
                       config.augmentation))


# --- recommender -------------------------------------------------------------

def recommender_strategy() -> Optional[tf.distribute.Strategy]:
  """The strategy the recommender trains under: `gan.loop.make_strategy`'s
  (MultiWorkerMirroredStrategy when TF_CONFIG names several workers, else
  MirroredStrategy over the local devices) when it has several replicas;
  None on one device, which trains without a strategy, exactly as before
  strategies were supported (its random draws come from the global seed;
  under a strategy they are stateless, see `recommender.replicas`)."""
  strategy = loop.make_strategy()
  return strategy if strategy.num_replicas_in_sync > 1 else None


def train_recommender(config: RunConfig, split_data: SplitData,
                      fit_rows: Examples, train_rows: Examples,
                      epochs_dir: Optional[str] = None
                      ) -> training.FitResult:
  """Early stopping on validation while fitting `fit_rows`, then the refit
  on `train_rows` (see `recommender.training.train_recommender`), under
  `recommender_strategy()`, each epoch kept in (and resumed from)
  `epochs_dir`; then the next-item blend, chosen on validation
  (`next_items.attach`; its choice in the result's `decisions`)."""
  callbacks = ([tf.keras.callbacks.TensorBoard(config.logdir)]
               if config.logdir else None)
  result = training.train_recommender(config, split_data, fit_rows,
                                      train_rows, callbacks,
                                      recommender_strategy(), epochs_dir)
  choice = next_items.attach(config, split_data, result, fit_rows,
                             train_rows)
  log.info("next-item transitions: %s", choice.reason)
  result.decisions[NEXT_ITEMS_DECISION] = choice.reason
  return result


def best_validation_recall(config: RunConfig, split_data: SplitData) -> float:
  """The tuning objective: the best validation Recall@K while early
  stopping, exactly as `run` reaches it before its refit (the same seed
  gives the same number there). That figure is the tower's, so the
  next-item blend, chosen after it, is not fitted here."""
  fit_rows = split_data.examples("fit")
  if config.augmentation.uses_gan:
    fit_rows += generate_interactions(config, split_data, fit_rows,
                                      fit_rows).fit
  no_refit = dataclasses.replace(
      config, train=dataclasses.replace(config.train, refit=False),
      model=dataclasses.replace(config.model, next_items="off"))
  result = train_recommender(no_refit, split_data, fit_rows, fit_rows)
  return best_validation(result.history, config.eval.k)


def best_validation(history: List[dict], k: int) -> float:
  """The best validation Recall@k in a run's `history` (refit excluded)."""
  return max(r[f"val_recall@{k}"] for r in history
             if f"val_recall@{k}" in r and not r.get("refit"))


# --- new items ---------------------------------------------------------------

def generate_new_item_embeddings(config: RunConfig, split_data: SplitData,
                                 model: TwoStageModel, rows: Examples,
                                 checkpoint_dir: Optional[str] = None
                                 ) -> Tuple[Optional[np.ndarray], np.ndarray]:
  """The candidate matrix with generated rows for the items nobody in
  `rows` interacted with, and those items; (None, []) when there are none
  or they have no content to generate from. The item generator
  checkpoints in (and resumes from) `checkpoint_dir`."""
  data = split_data.data
  counts = np.bincount(rows.item, minlength=data.num_items + 1)
  warm = np.flatnonzero(counts[1:]) + 1
  untrained = np.flatnonzero(counts[1:] == 0) + 1
  if not len(untrained) or not data.item_features.columns:
    if len(untrained):
      log.info("%d items have no interactions and no content features; "
               "they keep their tower embeddings.", len(untrained))
    return None, untrained[:0]
  candidates = training.item_matrix(model)
  generator = item_generator.train_item_generator(
      data.item_features, warm, candidates[warm], config.item_gan,
      seed=config.seed, checkpoint_dir=checkpoint_dir)
  candidates[untrained] = item_generator.generate_item_embeddings(
      generator, data.item_features, untrained, seed=config.seed)
  return candidates, untrained


def cold_item_retrieval(config: RunConfig, split_data: SplitData,
                        model: TwoStageModel,
                        candidates: Optional[np.ndarray]) -> Dict[str, dict]:
  """Retrieval among the held-out cold items only: the tower's own
  embeddings, the generated ones, and random scores."""
  rng = np.random.default_rng(config.seed)
  width = split_data.data.num_items + 1
  scorers = {
      "tower embeddings": lambda u: training.score_all_items(model, u),
      "random": lambda u: rng.random((len(u), width)),
  }
  if candidates is not None:
    scorers["GAN-generated embeddings"] = (
        lambda u: training.score_all_items(model, u, candidates))
  matrices = split_data.matrices
  retrieval = {name: evaluate.evaluate_retrieval(
      score, matrices["train"], matrices["test"], config.eval.k,
      candidates=split_data.cold_items) for name, score in scorers.items()}
  # {} when no test user has a cold item: nothing to report.
  return {name: metrics["overall"] for name, metrics in retrieval.items()
          if metrics}


def keep_generated_item_embeddings(config: RunConfig, split_data: SplitData,
                                   fit_model: TwoStageModel,
                                   fit_rows: Examples) -> Tuple[bool, str]:
  """`--augment auto`'s choice for new items, on the validation split.

  The items nobody took in the fit part but somebody took in validation
  are new items at validation time. They get embeddings from a content
  generator trained on the fit model's warm items, and the validation
  users who took them are ranked among them, by those embeddings and by
  the fit model's own, per user (NDCG@K, which reads the rank: the few
  candidates make Recall@K coarse). The generated embeddings, the measured
  default, are dropped only if the tower's own are better by more than
  two standard errors of the paired difference: on MovieLens 100K about
  50 users take these items, too few to overturn the 5-seed measurement on
  a smaller difference, nor fewer than MIN_DECISION_USERS users at all.

  Args:
    config, split_data: the run's.
    fit_model: the early-stopped model.
    fit_rows: what it learnt (generated interactions included).
  Returns:
    (keep the generated embeddings, the figures).
  """
  k = config.eval.k
  if not split_data.data.item_features.columns:
    return False, "none: the items have no content features to generate from"
  candidates, untrained = generate_new_item_embeddings(
      config, split_data, fit_model, fit_rows)
  matrices = split_data.matrices
  taken = np.asarray(matrices["validation"].sum(axis=0)).ravel()
  probe = untrained[taken[untrained] > 0]
  if candidates is None or not len(probe):
    return True, ("kept (the measured default): no item is new in the "
                  "validation split, nothing to decide on")
  ndcg = [evaluate.per_user_retrieval(
      score, matrices["fit"], matrices["validation"], k,
      candidates=probe)[1]["ndcg"] for score in (
          lambda u: training.score_all_items(fit_model, u, candidates),
          lambda u: training.score_all_items(fit_model, u))]
  gain = ndcg[0] - ndcg[1]
  if len(gain) < MIN_DECISION_USERS:
    return True, (f"kept (the measured default): {len(gain)} validation "
                  f"users take the items new in validation, fewer than "
                  f"{MIN_DECISION_USERS}")
  error = gain.std(ddof=1) / np.sqrt(len(gain))
  keep = gain.mean() >= -2 * error
  return keep, (f"{'kept' if keep else 'not used'}: validation NDCG@{k} "
                f"among the {len(probe)} items new in validation "
                f"{ndcg[0].mean():.4f} generated vs {ndcg[1].mean():.4f} "
                f"the tower's own ({len(gain)} users; difference "
                f"{gain.mean():+.4f} ± {error:.4f} standard error; dropped "
                f"only below -2 standard errors)")


# --- evaluate ----------------------------------------------------------------

def evaluate_retrieval(score: evaluate.ScoreFn, split_data: SplitData,
                       k: int) -> Dict[str, dict]:
  """Test retrieval metrics per user slice, training items excluded."""
  matrices = split_data.matrices
  return evaluate.evaluate_retrieval(score, matrices["train"],
                                     matrices["test"], k,
                                     split_data.user_slices)


def evaluate_recommender(model: TwoStageModel, split_data: SplitData,
                         k: int) -> Tuple[Dict[str, dict], float]:
  """(test retrieval metrics per slice, test rating RMSE) of `model`."""
  data, test = split_data.data, split_data.split.test
  retrieval = evaluate_retrieval(
      lambda users: training.score_all_items(model, users), split_data, k)
  predicted = training.predict_ratings(model, data.user[test],
                                       data.item[test])
  return retrieval, evaluate.rmse(predicted, data.rating[test])


def item_mean_rmse(split_data: SplitData) -> float:
  data, split = split_data.data, split_data.split
  item_mean = baselines.ItemMeanRating(data.item[split.train],
                                       data.rating[split.train],
                                       data.num_items)
  return evaluate.rmse(item_mean.predict(data.item[split.test]),
                       data.rating[split.test])


# --- export ------------------------------------------------------------------

def export(model: TwoStageModel, split_data: SplitData, config: RunConfig,
           candidates: Optional[np.ndarray] = None) -> Dict[str, str]:
  """Exports the three SavedModels of a model trained on the train part
  (whose items each user is never recommended again)."""
  data, train = split_data.data, split_data.split.train
  settings = config.export
  return saved_models.export_models(
      model, data.user_ids, data.item_ids, data.user[train], data.item[train],
      settings.export_dir, settings.top_k, settings.keep_versions, candidates,
      list(data.user_features.columns), settings.index,
      settings.shortlist_factor)


def save_trained(model: TwoStageModel, run_dir: str,
                 candidates: Optional[np.ndarray] = None) -> None:
  """Keeps what `export_run` needs in the run folder."""
  directory = os.path.join(run_dir, MODEL_DIR)
  training.save_model(model, directory)
  if candidates is not None:
    np.save(os.path.join(directory, CANDIDATES_FILE), candidates)


def load_run_config(run_dir: str) -> RunConfig:
  """The config a finished run wrote; InputError if it is not a run."""
  config_path = os.path.join(run_dir, CONFIG_FILE)
  if not os.path.isfile(config_path):
    raise InputError(f"'{config_path}' not found; --run-dir must be a folder "
                     f"written by python -m tfgan_rec.train.")
  if not os.path.isfile(os.path.join(run_dir, MODEL_DIR, "model.index")):
    raise InputError(f"'{os.path.join(run_dir, MODEL_DIR)}' holds no trained "
                     f"model (the run did not finish); train again, or pick "
                     f"another --run-dir.")
  return update(RunConfig(), load_yaml(config_path), config_path)


def export_run(run_dir: str, config: RunConfig) -> Dict[str, str]:
  """Rebuilds the model of a finished run (its config, data and split) and
  exports it with `config.export`."""
  model_dir = os.path.join(run_dir, MODEL_DIR)
  with_scorer = training.saved_with(model_dir, NEW_USER_SCORER)
  with_blend = training.saved_with(model_dir, NEXT_ITEM_BLEND)
  if with_blend and config.export.index == "compact":
    raise InputError(f"the model in '{model_dir}' "
                     f"{signatures.COMPACT_WITH_BLEND}")
  split_data = prepare(config.data, config.seed)

  def rebuild(model: TwoStageModel) -> None:
    if config.augmentation.uses_gan:
      thin_users.attach_untrained(config, model)
    if with_scorer:
      new_users.attach_untrained(model)
    if with_blend:
      next_items.attach_untrained(model)

  model = training.restore_model(config, split_data.data,
                                 split_data.examples("train"), model_dir,
                                 rebuild=rebuild)
  candidates_path = os.path.join(model_dir, CANDIDATES_FILE)
  candidates = (np.load(candidates_path) if os.path.isfile(candidates_path)
                else None)
  return export(model, split_data, config, candidates)


# --- the run -----------------------------------------------------------------

def run(config: RunConfig, run_dir: str, resume: bool = False) -> RunSummary:
  """Every stage, in order; writes and returns the run's summary.

  On a worker of a TF_CONFIG cluster other than the chief, the run folder,
  the exports and the TensorBoard logs go to a temporary folder that is
  deleted at the end (its checkpoints go to its own subfolders of the
  run's, `cluster.checkpoint_path`); the returned summary names that folder.
  """
  with cluster.output_dir(run_dir) as out_dir:
    if out_dir != run_dir:
      log.info("not the chief of the TF_CONFIG cluster: this worker's run "
               "folder and exports go to %s, deleted at the end", out_dir)
      config = config.copy()
      config.export.export_dir = os.path.join(out_dir, "export")
      config.logdir = config.logdir and os.path.join(out_dir, "logs")
    return _run(config, run_dir, out_dir, resume)


def _run(config: RunConfig, run_dir: str, out_dir: str,
         resume: bool) -> RunSummary:
  """`run`, writing to `out_dir` (`run_dir` on the chief)."""
  timer = StageTimer()
  with timer("data"):
    split_data = prepare(config.data, config.seed)
  os.makedirs(out_dir, exist_ok=True)
  checkpoints = run_checkpoints(run_dir, resume)
  if resume:
    check_resumed_settings(config, out_dir)
  save_yaml(config, os.path.join(out_dir, CONFIG_FILE))
  data = summarize_data(split_data)
  log.info("data: %s (%d users, %d items, %d interactions)", data.source,
           data.users, data.items, data.interactions)
  summary = RunSummary(
      config=config.to_dict(), data=data, best_epoch=0, history=[],
      retrieval={}, rmse={}, augmentation=None, user_generator=None,
      decisions={}, new_items=None,
      seconds=timer.seconds, exports={}, run_dir=out_dir)
  result, train_rows, fit_rows = _train_and_evaluate(
      config, split_data, checkpoints, timer, summary)
  model = result.model
  # Without the refit, the model to export learnt the fit rows only.
  rows = fit_rows if model is result.fit_model else train_rows
  candidates = _new_items(config, split_data, result, rows, fit_rows, timer,
                          summary, checkpoints)
  # After the new-item stage, whose tower-vs-generated comparison would see
  # the scorer's scores (the same in both) for users without history.
  _serve_new_users(config, split_data, model, timer, summary)
  if config.privacy.release:
    with timer("release generator"):
      summary.privacy = train_release(config, split_data, out_dir)
  save_trained(model, out_dir, candidates)
  if config.export.enabled:
    with timer("export"):
      summary.exports = export(model, split_data, config, candidates)
  write_summary(summary, out_dir)
  remove_recommender_checkpoints(checkpoints)
  return summary


def train_release(config: RunConfig, split_data: SplitData,
                  run_dir: str) -> dict:
  """Trains the release generator (privately with a finite --dp-epsilon)
  and keeps it in <run-dir>/release; returns its privacy statement."""
  logdir = (os.path.join(config.logdir, "release") if config.logdir
            else None)
  try:
    trained = release.train_release_generator(config, split_data, logdir)
  except GANDivergedError as err:
    raise InputError(str(err)) from None
  release.save_release(trained, config.gan, run_dir)
  log.info("%s", privacy_lib.describe(trained.privacy))
  return trained.privacy


def _train_and_evaluate(config: RunConfig, split_data: SplitData,
                        checkpoints: str, timer: StageTimer,
                        summary: RunSummary
                        ) -> Tuple[training.FitResult, Examples, Examples]:
  """Baselines, the recommender and, with augmentation, its augmented twin
  and the user generator; fills `summary` and returns the trained model to
  export (and its early-stopped one) with the train and fit examples they
  were trained on (generated ones included)."""
  k = config.eval.k
  _baselines(split_data, k, timer, summary)
  fit_rows, train_rows = split_data.examples("fit"), split_data.examples(
      "train")
  with timer("recommender"):
    result = train_recommender(
        config, split_data, fit_rows, train_rows,
        os.path.join(checkpoints, RECOMMENDER_CHECKPOINTS[0]))
  _record(summary, MODEL_NAME, result, split_data, k)
  if config.augmentation.source == "none":
    return result, train_rows, fit_rows
  if config.augmentation.items_per_user > 0:
    result, fit_rows, train_rows = _augmented_or_twin(
        config, split_data, result, (fit_rows, train_rows), checkpoints,
        timer, summary)
  if config.augmentation.uses_gan:
    summary.new_items = NewItemSummary()
    with timer("user generator"):
      try:
        choice = thin_users.serve_thin_users(config, split_data, result,
                                             train_rows, fit_rows,
                                             checkpoints)
      except GANDivergedError as err:
        raise InputError(str(err)) from None
    _record(summary, USER_GENERATOR_NAME, result, split_data, k)
    _record_generator_alone(summary, result.model, split_data, k)
    summary.user_generator = UserGeneratorSummary(
        dict(zip(thin_users.BUCKETS, map(float, choice.weights))),
        choice.tried)
    summary.decisions["user generator"] = (
        "blend weight per history length, chosen on validation (0: not "
        "used): " + ", ".join(f"{bucket} {weight:g}" for bucket, weight in
                              summary.user_generator.weights.items()))
  return result, train_rows, fit_rows


def _baselines(split_data: SplitData, k: int, timer: StageTimer,
               summary: RunSummary) -> None:
  if not split_data.has_test:
    log.info("no test split (--test-fraction 0): trained on every "
             "interaction; the test report is skipped.")
    return
  with timer("baselines"):
    for name, score in fit_baselines(split_data, k).items():
      summary.retrieval[name] = evaluate_retrieval(score, split_data, k)
  summary.rmse["ItemMean"] = item_mean_rmse(split_data)


def _augmented_or_twin(config: RunConfig, split_data: SplitData,
                       twin: training.FitResult, rows: Tuple[Examples, ...],
                       checkpoints: str, timer: StageTimer,
                       summary: RunSummary):
  """The augmented twin and its examples; with `--augment auto`, the
  twin instead when validation says the generated interactions do not help
  (sparse users' validation Recall@K not higher, or overall more than 0.5%
  lower). The decision and its figures go in `summary.decisions`."""
  augmented = _augmented_twin(config, split_data, *rows, checkpoints, timer,
                              summary)
  if config.augmentation.source != "auto":
    return augmented
  k = config.eval.k
  before, after = (_validation_by_slice(result, split_data, k)
                   for result in (twin, augmented[0]))
  keep = (after.get("sparse", 0.0) > before.get("sparse", 0.0) and
          after["overall"] >= 0.995 * before["overall"])
  summary.decisions["generated interactions"] = (
      f"{'kept' if keep else 'not used'}: validation Recall@{k} overall "
      f"{after['overall']:.4f} vs {before['overall']:.4f} without them, "
      f"sparse {after.get('sparse', 0.0):.4f} vs "
      f"{before.get('sparse', 0.0):.4f}")
  if keep:
    return augmented
  summary.best_epoch, summary.history = twin.best_epoch, twin.history
  summary.decisions.update(twin.decisions)
  return (twin, *rows)


def _validation_by_slice(result: training.FitResult, split_data: SplitData,
                         k: int) -> Dict[str, float]:
  """Validation Recall@k per user slice of the early-stopped model."""
  model = result.fit_model or result.model
  metrics = evaluate.evaluate_retrieval(
      lambda users: training.score_all_items(model, users),
      split_data.matrices["fit"], split_data.matrices["validation"], k,
      split_data.user_slices)
  return {name: values[f"recall@{k}"] for name, values in metrics.items()}


def _augmented_twin(config: RunConfig, split_data: SplitData,
                    fit_rows: Examples, train_rows: Examples,
                    checkpoints: str, timer: StageTimer,
                    summary: RunSummary):
  """The recommender retrained on real plus generated interactions (the
  interaction GAN's, or EASE's for the teacher ablation); returns its
  FitResult and the augmented fit and train examples."""
  source, k = config.augmentation.source, config.eval.k
  source = "gan" if config.augmentation.uses_gan else source
  with timer(f"{source} interactions"):
    generated = generate_interactions(config, split_data, fit_rows,
                                      train_rows, checkpoints)
  with timer("recommender (augmented)"):
    result = train_recommender(
        config, split_data, fit_rows + generated.fit,
        train_rows + generated.train,
        os.path.join(checkpoints, RECOMMENDER_CHECKPOINTS[1]))
  _record(summary, AUGMENTED_NAMES[source], result, split_data, k)
  if source == "gan" and split_data.has_test:
    summary.retrieval = {"interaction GAN alone": evaluate_retrieval(
        generated.train_score, split_data, k), **summary.retrieval}
  summary.augmentation = AugmentationSummary(
      len(generated.train), len(np.unique(generated.train.user)),
      config.augmentation.weight, generated.gan_metrics,
      evaluate.gini(generated.train.item, split_data.data.num_items),
      evaluate.gini(train_rows.item, split_data.data.num_items),
      *(evaluate.popularity_shares(items, train_rows.item,
                                   split_data.data.num_items)
        for items in (generated.train.item, train_rows.item)),
      generated.noise_agreement)
  return (result, fit_rows + generated.fit, train_rows + generated.train)


def _interaction_scorers(config: RunConfig, split_data: SplitData,
                         fit_rows: Examples, train_rows: Examples,
                         checkpoints: Optional[str]):
  """(scorer conditioned on the fit rows, on the train rows, the GAN's
  trainer or None): the interaction GAN trained on the fit rows, or
  EASE."""
  data, samples = split_data.data, config.augmentation.samples
  if config.augmentation.source == "ease":
    l2 = (baselines.tune_ease(split_data.matrices["fit"],
                              split_data.matrices["validation"],
                              config.eval.k)
          if split_data.matrices["validation"].nnz
          else baselines.EASE_DEFAULT_L2)
    return (augmentation.ease_scorer(fit_rows, data, l2),
            augmentation.ease_scorer(train_rows, data, l2), None)
  trainer = train_gan(config, split_data, fit_rows, checkpoints)
  return (augmentation.gan_scorer(trainer, fit_rows, data, samples),
          augmentation.gan_scorer(trainer, train_rows, data, samples),
          trainer)


def _serve_new_users(config: RunConfig, split_data: SplitData,
                     model: TwoStageModel, timer: StageTimer,
                     summary: RunSummary) -> None:
  """Who retrieves for users without history (`new_users`), in
  `summary.decisions`; when the feature softmax serves them and the test
  split has new users, the model is reported again as `NEW_USERS_NAME`
  (listed first: it is the model exported)."""
  with timer("new users"):
    choice = new_users.choose_scorer(config, split_data, model)
  scorer = ("the feature softmax" if choice.scorer == "features" else
            "the query tower")
  summary.decisions["users without history"] = f"{scorer} ({choice.reason})"
  if (choice.scorer == "features" and split_data.has_test and
      "new" in split_data.user_slices):
    served = evaluate_retrieval(
        lambda users: training.score_all_items(model, users), split_data,
        config.eval.k)
    summary.retrieval = {NEW_USERS_NAME: served, **summary.retrieval}


def _record_generator_alone(summary: RunSummary, model: TwoStageModel,
                            split_data: SplitData, k: int) -> None:
  """The user generator used directly as a recommender (its query alone,
  from each user's latest items and features)."""
  if split_data.has_test:
    layer = model.thin_user_query
    latest = thin_users.recent_tower_scores(model, layer.max_thin)
    score = thin_users.generator_scores(model, layer)
    summary.retrieval = {
        "user generator alone": evaluate_retrieval(score, split_data, k),
        f"TFRS, latest {layer.max_thin} items only (no GAN)":
            evaluate_retrieval(latest, split_data, k),
        **summary.retrieval}


def _record(summary: RunSummary, name: str, result: training.FitResult,
            split_data: SplitData, k: int) -> None:
  """The trained model's epochs and, with a test split, its test metrics
  (listed before the models recorded earlier)."""
  summary.best_epoch, summary.history = result.best_epoch, result.history
  summary.decisions.update(result.decisions)
  if split_data.has_test:
    retrieval, rmse = evaluate_recommender(result.model, split_data, k)
    summary.retrieval = {name: retrieval, **summary.retrieval}
    summary.rmse = {name: rmse, **summary.rmse}


def _new_items(config: RunConfig, split_data: SplitData,
               result: training.FitResult, rows: Examples, fit_rows: Examples,
               timer: StageTimer, summary: RunSummary,
               checkpoints: Optional[str]) -> Optional[np.ndarray]:
  """Generated embeddings for the items `rows` never mention (with GAN
  augmentation; with `--augment auto` only if
  `keep_generated_item_embeddings`) and the cold-item report; `rows` and
  `fit_rows` are what the model and the early-stopped one learnt. Returns
  the candidate matrix to export, if any."""
  model, fit_model = result.model, result.fit_model
  candidates = None
  generate = summary.new_items is not None
  if generate and config.augmentation.source == "auto":
    with timer("new-item decision"):
      generate, figures = keep_generated_item_embeddings(
          config, split_data, fit_model or model, fit_rows)
    summary.decisions["new-item embeddings"] = figures
  if generate:
    with timer("new-item generator"):
      candidates, untrained = generate_new_item_embeddings(
          config, split_data, model, rows,
          os.path.join(checkpoints, "item_generator") if checkpoints
          else None)
    summary.new_items.generated_embeddings = len(untrained)
  if len(split_data.cold_items) and split_data.has_test:
    summary.new_items = summary.new_items or NewItemSummary()
    summary.new_items.cold_items = len(split_data.cold_items)
    summary.new_items.retrieval = cold_item_retrieval(config, split_data,
                                                      model, candidates)
  return candidates


def write_summary(summary: RunSummary, run_dir: str) -> None:
  """metrics.json and report.md in the run folder."""
  with open(os.path.join(run_dir, METRICS_FILE), "w", encoding="utf-8") as f:
    json.dump(summary.to_dict(), f, indent=2)
  with open(os.path.join(run_dir, REPORT_FILE), "w", encoding="utf-8") as f:
    f.write(report.markdown_report(summary))
  generated = summary.augmentation
  if generated and generated.popularity_generated:
    plots.popularity_profile(
        generated.popularity_real, generated.popularity_generated,
        generated.gini_real, generated.gini_generated,
        os.path.join(run_dir, plots.POPULARITY_PNG))
