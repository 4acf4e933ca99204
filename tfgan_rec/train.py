"""Train the two-stage TFRS recommender, compare it with baselines, export it.

    python -m tfgan_rec.train                       # MovieLens 100K
    python -m tfgan_rec.train --ratings logs.csv --users users.csv --items items.csv
    python -m tfgan_rec.train --config best.yaml --seed 7

Each run writes config.yaml, metrics.json and report.md to its run directory
(`--run-dir`, default runs/<time>-seed<seed>), keeps the trained model in
<run-dir>/model/ and exports the retrieval, ranking and two-stage recommend
SavedModels as the next version under `--export-dir`.
"""
import argparse
import json
import logging
import os
import sys
import time
from typing import List, Optional

import tfgan_rec  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import numpy as np
import yaml

from tfgan_rec import baselines, config as config_lib, evaluate, report
from tfgan_rec.errors import InputError

log = logging.getLogger("tfgan_rec")

# flag -> (section, field); the flag's type comes from the dataclass default.
FLAGS = {
    "dataset": ("data", "dataset"), "ratings": ("data", "ratings"),
    "users": ("data", "users"), "items": ("data", "items"),
    "data_dir": ("data", "data_dir"), "cache_dir": ("data", "cache_dir"),
    "synthetic_interactions": ("data", "synthetic_interactions"),
    "test_fraction": ("data", "test_fraction"),
    "validation_fraction": ("data", "validation_fraction"),
    "sparse_users": ("data", "sparse_users"),
    "sparse_keep": ("data", "sparse_keep"),
    "cold_items": ("data", "cold_items"),
    "embedding_dim": ("model", "embedding_dim"),
    "temperature": ("model", "temperature"),
    "ranking_weight": ("model", "ranking_weight"),
    "epochs": ("train", "epochs"), "batch_size": ("train", "batch_size"),
    "learning_rate": ("train", "learning_rate"),
    "patience": ("train", "patience"), "k": ("eval", "k"),
    "export_dir": ("export", "export_dir"), "top_k": ("export", "top_k"),
    "keep_versions": ("export", "keep_versions"),
    "gan_steps": ("gan", "steps"), "gan_loss": ("gan", "loss"),
    "gan_batch_size": ("gan", "batch_size"),
    "augment_threshold": ("augmentation", "threshold"),
    "augment_items": ("augmentation", "items_per_user"),
    "augment_weight": ("augmentation", "weight"),
}
TOP_LEVEL = ("seed", "run_dir", "logdir", "augment")
HELP = {
    "dataset": "movielens, csv (implied by --ratings) or synthetic",
    "ratings": "CSV of user_id,item_id[,rating][,timestamp]",
    "users": "CSV of user_id plus user feature columns",
    "items": "CSV of item_id plus item feature columns (title, genres, ...)",
    "data_dir": "local GroupLens ml-100k folder or TFDS data dir",
    "cache_dir": "where downloaded MovieLens is cached (~/.cache/tfgan_rec)",
    "synthetic_interactions": "size of the --dataset synthetic data",
    "test_fraction": "latest fraction of each user's interactions for test",
    "validation_fraction": "latest fraction of training for validation",
    "sparse_users": "fraction of users whose training history is truncated",
    "sparse_keep": "interactions kept for those users",
    "cold_items": "fraction of items whose training interactions are "
                  "removed, to measure new-item retrieval",
    "embedding_dim": "tower output dimension",
    "temperature": "retrieval softmax temperature",
    "ranking_weight": "weight of the ranking loss (retrieval's is 1)",
    "epochs": "maximum epochs (early stopping on validation Recall@K)",
    "batch_size": "training batch size",
    "learning_rate": "Adam learning rate",
    "patience": "epochs without validation gain before stopping",
    "k": "cut-off K of the evaluation metrics",
    "export_dir": "where versioned SavedModels are written",
    "top_k": "items returned by the exported retrieval model",
    "keep_versions": "exported versions kept per model",
    "gan_steps": "GAN training steps",
    "gan_loss": "minimax or wasserstein (with gradient penalty)",
    "gan_batch_size": "users per GAN step (divisible by the replicas)",
    "augment_threshold": "users with fewer training interactions get "
                         "generated ones",
    "augment_items": "generated interactions per such user",
    "augment_weight": "sample weight of generated interactions",
}


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m tfgan_rec.train", description=__doc__.split("\n")[0],
      argument_default=argparse.SUPPRESS)
  parser.add_argument("--config", help="YAML config; flags override it")
  defaults = config_lib.RunConfig()
  for flag, (section, field) in FLAGS.items():
    current = getattr(getattr(defaults, section), field)
    kind = type(current) if current is not None else str
    parser.add_argument(f"--{flag.replace('_', '-')}", dest=flag, type=kind,
                        help=f"{HELP[flag]} (default: {current})")
  parser.add_argument("--seed", type=int, help="random seed (default: 42)")
  parser.add_argument("--run-dir", dest="run_dir",
                      help="run output folder (default: runs/<time>-seed<N>)")
  parser.add_argument("--logdir", help="TensorBoard log folder")
  parser.add_argument("--augment", choices=["none", "gan"],
                      help="gan: add GAN-generated interactions for sparse and "
                           "new users and report both models (default: none)")
  parser.add_argument("--resume", action="store_true",
                      help="continue the GAN from the checkpoints in --run-dir")
  parser.add_argument("--no-refit", dest="refit", action="store_false",
                      help="skip retraining on train+validation")
  parser.add_argument("--no-export", dest="export", action="store_false",
                      help="skip the SavedModel export")
  parser.add_argument("-v", "--verbose", action="store_true",
                      help="debug messages and TensorFlow's own warnings")
  return parser


def resolve_config(args: argparse.Namespace) -> config_lib.RunConfig:
  """Defaults < YAML (--config) < flags."""
  config = config_lib.RunConfig()
  if getattr(args, "config", None):
    config_lib.update(config, config_lib.load_yaml(args.config), args.config)
  given = vars(args)
  for flag, (section, field) in FLAGS.items():
    if flag in given:
      setattr(getattr(config, section), field, given[flag])
  for field in TOP_LEVEL:
    if field in given:
      setattr(config, field, given[field])
  if "refit" in given:
    config.train.refit = given["refit"]
  if config.data.ratings:
    config.data.dataset = "csv"
  return config.check()


def _run_dir(config: config_lib.RunConfig) -> str:
  path = config.run_dir or os.path.join(
      "runs", time.strftime("%Y%m%d-%H%M%S") + f"-seed{config.seed}")
  if os.path.exists(os.path.join(path, "metrics.json")):
    raise InputError(f"run directory '{path}' already holds a run; choose "
                     f"another --run-dir (nothing was overwritten).")
  os.makedirs(path, exist_ok=True)
  return path


def _baselines(prepared, k: int) -> dict:
  l2 = baselines.tune_ease(prepared.fit, prepared.validation, k)
  results = {}
  for name, model in (("MostPop", baselines.MostPopular(prepared.train)),
                      (f"EASE (lambda={l2:g})",
                       baselines.EASE(prepared.train, l2))):
    results[name] = evaluate.evaluate_retrieval(
        model.scores, prepared.train, prepared.test, k, prepared.slices)
  return results


def _write_config(config: config_lib.RunConfig, run_dir: str) -> None:
  with open(os.path.join(run_dir, "config.yaml"), "w", encoding="utf-8") as f:
    yaml.safe_dump(config.to_dict(), f, sort_keys=False)


def _fit_and_evaluate(config, prepared, fit_rows, train_rows, callbacks):
  """Trains one TFRS model; returns (result, retrieval metrics, test RMSE)."""
  from tfgan_rec.recommender import training  # pylint: disable=g-import-not-at-top
  data, split, k = prepared.data, prepared.split, config.eval.k
  result = training.train_recommender(config, data, fit_rows, train_rows,
                                      split.validation, callbacks)
  retrieval = evaluate.evaluate_retrieval(
      lambda users: training.score_all_items(result.model, users),
      prepared.train, prepared.test, k, prepared.slices)
  predicted = training.predict_ratings(result.model, data.user[split.test],
                                       data.item[split.test])
  return result, retrieval, evaluate.rmse(predicted, data.rating[split.test])


def _gan_checkpoints(run_dir: str, resume: bool) -> str:
  """The run's GAN checkpoint folder; stale checkpoints need --resume."""
  checkpoints = os.path.join(run_dir, "gan_checkpoints")
  if os.path.isdir(checkpoints) and os.listdir(checkpoints) and not resume:
    raise InputError(f"'{checkpoints}' holds GAN checkpoints of an earlier "
                     f"run; pass --resume to continue it or choose another "
                     f"--run-dir.")
  return checkpoints


def _gan_augmentation(config, prepared, fit_rows, train_rows, checkpoints):
  """Trains the GAN on the fit rows and generates interactions for the
  fit and train sets; returns (generated_fit, generated_train, gan_metrics)."""
  # pylint: disable=g-import-not-at-top
  from tfgan_rec import augment
  from tfgan_rec.gan.trainer import GANDivergedError
  logdir = os.path.join(config.logdir, "gan") if config.logdir else None
  try:
    trainer = augment.fit_gan(config.gan, fit_rows, prepared.data,
                              config.seed, checkpoints, logdir)
  except GANDivergedError as err:
    raise InputError(str(err)) from None
  generate = lambda rows: augment.augment(trainer, rows, prepared.data,
                                          config.augmentation)
  return generate(fit_rows), generate(train_rows), trainer.last_metrics


def _new_item_embeddings(config, prepared, model, train_rows):
  """Candidate matrix whose rows for never-interacted items are generated
  from content; returns (matrix, those items), or (None, []) when there are
  no such items or no content to generate from."""
  # pylint: disable=g-import-not-at-top
  from tfgan_rec.gan import item_generator
  from tfgan_rec.recommender import training
  data = prepared.data
  counts = np.bincount(train_rows.item, minlength=data.num_items + 1)
  warm = np.flatnonzero(counts[1:]) + 1
  untrained = np.flatnonzero(counts[1:] == 0) + 1
  if not len(untrained) or not data.item_features.columns:
    if len(untrained):
      log.info("%d items have no interactions and no content features; "
               "they keep their tower embeddings.", len(untrained))
    return None, untrained[:0]
  candidates = training.item_matrix(model)
  generator = item_generator.train_item_generator(
      data.item_features, warm, candidates[warm], seed=config.seed)
  candidates[untrained] = item_generator.generate_item_embeddings(
      generator, data.item_features, untrained, seed=config.seed)
  return candidates, untrained


def _cold_item_metrics(config, prepared, model, candidates):
  """Retrieval among the held-out cold items only: the tower's own
  embeddings, the generated ones, and random scores."""
  from tfgan_rec.recommender import training  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(config.seed)
  width = prepared.data.num_items + 1
  scorers = {
      "tower embeddings": lambda u: training.score_all_items(model, u),
      "random": lambda u: rng.random((len(u), width)),
  }
  if candidates is not None:
    scorers["GAN-generated embeddings"] = (
        lambda u: training.score_all_items(model, u, candidates))
  return {name: evaluate.evaluate_retrieval(
      fn, prepared.train, prepared.test, config.eval.k,
      candidates=prepared.cold_items)["overall"]
          for name, fn in scorers.items()}


def run(config: config_lib.RunConfig, export: bool = True,
        resume: bool = False) -> dict:
  """One full run; returns the summary that is also written to metrics.json."""
  # Imported here so `--help` and input errors answer without loading TF.
  # pylint: disable=g-import-not-at-top
  import tensorflow as tf
  from tfgan_rec import augment
  from tfgan_rec import data as data_lib
  from tfgan_rec import export as export_lib
  from tfgan_rec.recommender import training

  seconds, k = {}, config.eval.k
  start = time.time()
  prepared = data_lib.prepare(config.data, config.seed)
  data, split = prepared.data, prepared.split
  seconds["data"] = time.time() - start
  # Created only once the input is known to be good.
  run_dir = _run_dir(config)
  checkpoints = (_gan_checkpoints(run_dir, resume)
                 if config.augment == "gan" else None)
  _write_config(config, run_dir)
  log.info("data: %s (%d users, %d items, %d interactions)", data.source,
           data.num_users, data.num_items, len(data))

  start = time.time()
  retrieval = _baselines(prepared, k)
  seconds["baselines"] = time.time() - start

  callbacks = ([tf.keras.callbacks.TensorBoard(config.logdir)]
               if config.logdir else None)
  fit_rows = training.TrainingRows.real(data, split.fit)
  train_rows = training.TrainingRows.real(data, split.train)
  start = time.time()
  result, model_metrics, model_rmse = _fit_and_evaluate(
      config, prepared, fit_rows, train_rows, callbacks)
  seconds["recommender"] = time.time() - start
  retrieval = {"TFRS two-stage": model_metrics, **retrieval}
  item_mean = baselines.ItemMeanRating(data.item[split.train],
                                       data.rating[split.train],
                                       data.num_items)
  rmse = {"TFRS two-stage": model_rmse,
          "ItemMean": evaluate.rmse(item_mean.predict(data.item[split.test]),
                                    data.rating[split.test])}
  augmentation = None
  if config.augment == "gan":
    start = time.time()
    generated_fit, generated_train, gan_metrics = _gan_augmentation(
        config, prepared, fit_rows, train_rows, checkpoints)
    seconds["gan"] = time.time() - start
    start = time.time()
    result, aug_metrics, aug_rmse = _fit_and_evaluate(
        config, prepared, augment.concat(fit_rows, generated_fit),
        augment.concat(train_rows, generated_train), callbacks)
    seconds["recommender (augmented)"] = time.time() - start
    retrieval = {"TFRS + GAN augmentation": aug_metrics, **retrieval}
    rmse = {"TFRS + GAN augmentation": aug_rmse, **rmse}
    augmentation = {"generated": len(generated_train.user),
                    "users": len(np.unique(generated_train.user)),
                    "weight": config.augmentation.weight,
                    "gan_last_step": gan_metrics}

  candidates, new_items = None, {}
  if config.augment == "gan":
    start = time.time()
    candidates, untrained = _new_item_embeddings(
        config, prepared, result.model,
        augment.concat(train_rows, generated_train))
    new_items["generated_embeddings"] = len(untrained)
    seconds["new-item generator"] = time.time() - start
  if len(prepared.cold_items):
    new_items["cold_items"] = len(prepared.cold_items)
    new_items["retrieval"] = _cold_item_metrics(config, prepared,
                                                result.model, candidates)

  export_lib.save_run_model(result.model, run_dir, candidates)
  exports = {}
  if export:
    start = time.time()
    exports = export_lib.export_trained(result.model, prepared, config.export,
                                        candidates)
    seconds["export"] = time.time() - start

  summary = {
      "config": config.to_dict(),
      "data": {"source": data.source, "users": data.num_users,
               "items": data.num_items, "interactions": len(data),
               "train": len(split.train), "test": len(split.test),
               "sparse_users": int(prepared.slices["sparse"].sum())},
      "best_epoch": result.best_epoch, "history": result.history,
      "retrieval": retrieval, "rmse": rmse, "augmentation": augmentation,
      "new_items": new_items,
      "seconds": seconds, "exports": exports, "run_dir": run_dir}
  with open(os.path.join(run_dir, "metrics.json"), "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=2)
  markdown = report.markdown_report(summary)
  with open(os.path.join(run_dir, "report.md"), "w", encoding="utf-8") as f:
    f.write(markdown)
  print(markdown)
  return summary


def setup_logging(verbose: bool) -> None:
  """Our messages as `tfgan_rec: ...` on stderr; TensorFlow's own (absl)
  warnings only with --verbose."""
  handler = logging.StreamHandler(sys.stderr)
  handler.setFormatter(logging.Formatter("tfgan_rec: %(message)s"))
  log.handlers[:] = [handler]
  log.propagate = False
  log.setLevel(logging.DEBUG if verbose else logging.INFO)
  for library in ("absl", "tensorflow"):
    logging.getLogger(library).setLevel(logging.INFO if verbose else
                                        logging.ERROR)


def run_cli(parser: argparse.ArgumentParser, action,
            argv: Optional[List[str]]) -> int:
  """Parses `argv`, runs `action(args)`; bad input ends as one `error:`
  line on stderr and exit code 2, never a traceback."""
  args = parser.parse_args(argv)
  setup_logging(getattr(args, "verbose", False))
  try:
    action(args)
  except InputError as err:
    print(f"error: {err}", file=sys.stderr)
    return err.exit_code
  return 0


def main(argv: Optional[List[str]] = None) -> int:
  return run_cli(build_parser(), lambda args: run(
      resolve_config(args), export=getattr(args, "export", True),
      resume=getattr(args, "resume", False)), argv)


if __name__ == "__main__":
  sys.exit(main())
