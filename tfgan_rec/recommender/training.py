"""Builds, trains (with early stopping on validation Recall@K) and scores the
two-stage model."""
import contextlib
import dataclasses
import logging
import os
import sys
from typing import Callable, Dict, List, Optional

import numpy as np
import tensorflow as tf
from scipy import sparse

from tfgan_rec import evaluate
from tfgan_rec.config import RunConfig
from tfgan_rec.data import EncodedData, Examples, SplitData
from tfgan_rec.recommender import graph
from tfgan_rec.recommender.checkpoints import EpochCheckpoints, skip_epochs
from tfgan_rec.recommender.model import TwoStageModel, earlier_counts
from tfgan_rec.recommender.model import history_table
from tfgan_rec.recommender.optimizers import LazyAdam

log = logging.getLogger(__name__)


@dataclasses.dataclass
class FitResult:
  """A trained model, the epoch count early stopping chose, and one record
  per epoch (loss, validation Recall@K; `refit: True` for the refit's)."""
  model: TwoStageModel
  best_epoch: int
  history: List[Dict[str, float]]
  # The early-stopped model trained on the fit part, before the refit (the
  # one whose validation figures chose the epochs); `model` without refit.
  fit_model: Optional[TwoStageModel] = None
  # What was decided for the models after training, and why (the report's
  # decisions), e.g. {"next-item transitions": "weight 0.1 (...)"}.
  decisions: Dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Validation:
  """What early stopping ranks against: the users' real interactions that
  are excluded as seen, and the held-out ones that count as hits. Generated
  interactions are never excluded, as at test time and in serving."""
  seen: sparse.csr_matrix
  held_out: sparse.csr_matrix


def history_mask(config: RunConfig, rows: Examples) -> np.ndarray:
  """Which of `rows` enter the pooled history that describes their user.
  Generated interactions (weight < 1) are training targets; whether they
  also describe the user is configurable."""
  if config.model.generated_in_history:
    return np.ones(len(rows.user), bool)
  return rows.is_real()


@dataclasses.dataclass
class EarlierItems:
  """Each training row's pooled history when it must precede the row in
  time (`model.causal_history`): the user's latest `length` history items
  before the row (ties in the rows' order, as the split's), latest first.

  Serving describes a user by the items before what it recommends; a
  history that also holds the user's later items teaches the query tower a
  different task than the one it is scored on.

  Attributes:
    items: the history rows' items user by user, oldest first, after a 0.
    end: per row, the index in `items` of its latest earlier item.
    count: per row, how many earlier items it has.
    length: the most items a history holds.
  """
  items: np.ndarray
  end: np.ndarray
  count: np.ndarray
  length: int

  @classmethod
  def of_rows(cls, rows: Examples, in_history: np.ndarray,
              length: int) -> "EarlierItems":
    order = np.lexsort((rows.timestamp, rows.user))
    kept = order[in_history[order]]
    first = np.searchsorted(rows.user[kept], rows.user, side="left")
    count = earlier_counts(rows.user, rows.timestamp, in_history)
    items = np.concatenate([[0], rows.item[kept]]).astype(np.int32)
    return cls(items, (first + count).astype(np.int32),
               count.astype(np.int32), length)

  def batch(self, end: tf.Tensor, count: tf.Tensor) -> tf.Tensor:
    """[B, length] histories of the rows with these `end`s and `count`s."""
    steps = tf.range(self.length, dtype=end.dtype)
    index = tf.maximum(end[:, None] - steps, 0)
    valid = steps < count[:, None]
    return tf.where(valid, tf.gather(tf.constant(self.items), index), 0)


def build_model(config: RunConfig, data: EncodedData,
                rows: Examples) -> TwoStageModel:
  """The compiled model for training on `rows`, whose pooled histories,
  item popularity, mean rating and (graph tower) adjacency they give."""
  in_history = history_mask(config, rows)
  history = history_table(rows.user[in_history], rows.item[in_history],
                          rows.timestamp[in_history], data.num_users,
                          config.model.history_length)
  counts = np.bincount(rows.item, weights=rows.weight,
                       minlength=data.num_items + 1)
  rating_mean = np.average(rows.rating, weights=rows.weight)
  # The graph holds exactly the rows trained on (the fit part while early
  # stopping, the train part in the refit), never validation or test ones.
  adjacency = None
  if config.model.uses_graph:
    adjacency = graph.normalized_adjacency(
        rows.user, rows.item, rows.weight, data.num_users, data.num_items,
        config.model.graph_normalization)
  model = TwoStageModel(config.model, data, history, counts, rating_mean,
                        adjacency, seed=config.seed)
  model.compile(optimizer=LazyAdam(config.train.learning_rate))
  return model


def save_model(model: TwoStageModel, directory: str) -> str:
  """Writes every variable of `model` (weights and its tables) to
  `directory`; `restore_model` rebuilds the model from it."""
  return tf.train.Checkpoint(model=model).write(
      os.path.join(directory, "model"))


def saved_with(directory: str, attribute: str) -> bool:
  """Whether the model `save_model` wrote to `directory` had `attribute`
  (e.g. a layer attached after training)."""
  names = tf.train.list_variables(os.path.join(directory, "model"))
  return any(name.startswith(f"model/{attribute}/") for name, _ in names)


def build_weights(model: TwoStageModel) -> None:
  """Creates every weight of `model` (both towers and the rating head) by
  scoring one pair, as training would."""
  one = tf.ones([1], tf.int32)
  model.predict_rating(model.user_embeddings(one), model.item_embeddings(one))


def restore_model(config: RunConfig, data: EncodedData, rows: Examples,
                  directory: str,
                  rebuild: Optional[Callable[[TwoStageModel], None]] = None
                  ) -> TwoStageModel:
  """The model `save_model` wrote, rebuilt for `data` (the same data and
  config it was trained with; `rows` only size its tables). `rebuild`
  attaches what was attached to the saved model (untrained; the checkpoint
  fills it in)."""
  model = build_model(config, data, rows)
  if rebuild:
    rebuild(model)
  build_weights(model)
  status = tf.train.Checkpoint(model=model).read(
      os.path.join(directory, "model"))
  status.expect_partial().assert_existing_objects_matched()
  return model


def make_dataset(rows: Examples, batch_size: int, seed: int,
                 shuffle: bool = True,
                 earlier: Optional[EarlierItems] = None) -> tf.data.Dataset:
  """Batches of `rows`; with `shuffle`, in a new seeded order each epoch.
  With `earlier`, each batch also holds the rows' `history` [B, length]
  (`EarlierItems`); without, the model describes a user by their stored
  history.

  Whole batches are gathered from in-memory columns by index: a per-row
  pipeline (from_tensor_slices + shuffle buffer) spent 8 ms per batch and
  held every row as a separate element, which made training on 1M rows
  40% slower.
  """
  columns = {"user": rows.user.astype(np.int32),
             "item": rows.item.astype(np.int32),
             "rating": rows.rating.astype(np.float32),
             "weight": rows.weight.astype(np.float32)}
  if earlier is not None:
    columns.update(history_end=earlier.end, history_count=earlier.count)
  columns = {name: tf.constant(values) for name, values in columns.items()}
  count = len(rows.user)
  batches = -(-count // batch_size)

  def batched(order):
    return tf.data.Dataset.range(batches).map(
        lambda b: order[b * batch_size:(b + 1) * batch_size])

  if shuffle:
    # One seed per pass over the data: a fresh, reproducible order per epoch.
    epoch_seeds = tf.data.Dataset.random(
        seed=seed, rerandomize_each_iteration=True).take(1)
    dataset = epoch_seeds.flat_map(lambda epoch_seed: batched(
        tf.random.experimental.stateless_shuffle(
            tf.range(count, dtype=tf.int64),
            tf.stack([epoch_seed, tf.constant(0, tf.int64)]))))
  else:
    dataset = batched(tf.range(count, dtype=tf.int64))
  dataset = dataset.apply(tf.data.experimental.assert_cardinality(batches))
  dataset = dataset.map(
      lambda order: {name: tf.gather(column, order)
                     for name, column in columns.items()})
  if earlier is not None:
    dataset = dataset.map(lambda batch: _with_history(batch, earlier))
  return dataset.prefetch(tf.data.AUTOTUNE)


def training_dataset(config: RunConfig, rows: Examples) -> tf.data.Dataset:
  """The shuffled batches a model built by `build_model(config, ..., rows)`
  trains on (with each row's earlier items under `model.causal_history`)."""
  earlier = (EarlierItems.of_rows(rows, history_mask(config, rows),
                                  config.model.history_length)
             if config.model.causal_history else None)
  return make_dataset(rows, config.train.batch_size, config.seed,
                      earlier=earlier)


def _with_history(batch: Dict[str, tf.Tensor],
                  earlier: EarlierItems) -> Dict[str, tf.Tensor]:
  batch = dict(batch)
  batch["history"] = earlier.batch(batch.pop("history_end"),
                                   batch.pop("history_count"))
  return batch


def user_matrix(model: TwoStageModel) -> np.ndarray:
  """Query embeddings of every user from their stored history,
  [num_users + 1, dim] (row 0: the unknown user)."""
  users = tf.range(0, model.history_items.shape[0], dtype=tf.int32)
  return model.user_embeddings(users).numpy()


def item_matrix(model: TwoStageModel) -> np.ndarray:
  """Candidate embeddings of every item, [num_items + 1, dim]."""
  items = tf.range(0, model.num_items + 1, dtype=tf.int32)
  return model.item_embeddings(items).numpy()


def score_all_items(model: TwoStageModel, users: np.ndarray,
                    candidates: Optional[np.ndarray] = None) -> np.ndarray:
  """[len(users), num_items + 1] retrieval scores (column 0 = padding),
  through the next-item blend and, for users without history, by the
  new-user scorer if they are attached;
  `candidates` replaces the tower's item embeddings (e.g. generated ones)."""
  if candidates is None:
    candidates = item_matrix(model)
  users = tf.constant(users, tf.int32)
  scores = tf.matmul(model.user_embeddings(users), candidates,
                     transpose_b=True)
  scores = model.blended_scores(scores, tf.gather(model.history_items, users))
  by_features = model.stored_new_user_rows(users)
  if by_features is not None:
    features, scored = by_features
    scores = tf.where(scored[:, None], model.new_user_scorer(features),
                      scores)
  return scores.numpy()


def predict_ratings(model: TwoStageModel, user: np.ndarray,
                    item: np.ndarray, batch_size: int = 8192) -> np.ndarray:
  out = []
  for start in range(0, len(user), batch_size):
    u = tf.constant(user[start:start + batch_size], tf.int32)
    i = tf.constant(item[start:start + batch_size], tf.int32)
    out.append(model.predict_rating(model.user_embeddings(u),
                                    model.item_embeddings(i)).numpy())
  return np.concatenate(out) if out else np.zeros(0, np.float32)


def _verbosity() -> int:
  return 1 if sys.stderr.isatty() else 2


def fit_with_early_stopping(config: RunConfig, data: EncodedData,
                            rows: Examples,
                            validation: Optional[Validation],
                            callbacks=None,
                            strategy: Optional[tf.distribute.Strategy] = None,
                            saved_epochs: Optional[EpochCheckpoints] = None
                            ) -> FitResult:
  """Trains up to `epochs`, keeping the weights of the epoch with the best
  validation Recall@K (stopping after `patience` epochs without gain).

  Without `validation`, trains exactly `epochs`. With `strategy`, the model
  and its optimizer live in its scope and every replica trains on its rows
  of each global batch (`TwoStageModel.fit`); every worker takes the same
  decisions, as it holds the same weights. With `saved_epochs`, every epoch
  is saved there and a fit they hold continues after its last saved epoch
  (`recommender.checkpoints`).
  """
  scope = strategy.scope if strategy else contextlib.nullcontext
  with scope():
    model = build_model(config, data, rows)
  dataset = training_dataset(config, rows)
  with scope():
    progress = _resumed(model, dataset, saved_epochs)
  key = f"val_recall@{config.eval.k}"
  while progress.epoch < config.train.epochs and not progress.stopped:
    progress.epoch += 1
    logs = model.fit(dataset, epochs=1, verbose=_verbosity(),
                     callbacks=callbacks).history
    progress.history.append({"epoch": progress.epoch,
                             "loss": float(logs["loss"][-1])})
    improved = validation is not None and _record_validation(
        model, validation, config, progress, key)
    if saved_epochs:
      saved_epochs.save(model, progress.state(), progress.best_weights,
                        improved)
  if progress.best_weights is not None:
    model.set_weights(progress.best_weights)
  else:
    progress.best_epoch = len(progress.history)
  return FitResult(model, progress.best_epoch, progress.history)


@dataclasses.dataclass
class _Progress:
  """Early stopping's state after `epoch` epochs (all but `best_weights`
  is what `EpochCheckpoints` keeps as JSON)."""
  epoch: int = 0
  best: float = -1.0
  best_epoch: int = 0
  history: List[dict] = dataclasses.field(default_factory=list)
  stopped: bool = False
  best_weights: Optional[List[np.ndarray]] = None

  def state(self) -> dict:
    return {field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if field.name != "best_weights"}


def _record_validation(model: TwoStageModel, validation: Validation,
                       config: RunConfig, progress: _Progress,
                       key: str) -> bool:
  """Records the epoch's validation Recall@K in `progress`; keeps the
  weights if it is the best so far (returns True), or stops after
  `patience` epochs without gain."""
  recall = validation_recall(model, validation, config.eval.k)
  progress.history[-1][key] = recall
  log.info("epoch %d: loss %.4f, validation recall@%d %.4f", progress.epoch,
           progress.history[-1]["loss"], config.eval.k, recall)
  if recall > progress.best:
    progress.best, progress.best_epoch = recall, progress.epoch
    progress.best_weights = model.get_weights()
    return True
  progress.stopped = (progress.epoch - progress.best_epoch >=
                      config.train.patience)
  return False


def _resumed(model: TwoStageModel, dataset: tf.data.Dataset,
             saved_epochs: Optional[EpochCheckpoints]) -> _Progress:
  """The progress `saved_epochs` hold, restored into `model` with the
  dataset's order moved past the epochs done; a fresh start without."""
  restored = saved_epochs.restore(model) if saved_epochs else None
  if restored is None:
    return _Progress()
  # Built now, so the restore applies (and the best weights can be set)
  # even when no epoch is left to train.
  build_weights(model)
  restored.status.assert_existing_objects_matched()
  skip_epochs(dataset, restored.state["epoch"])
  log.info("recommender: resumed after epoch %d from %s",
           restored.state["epoch"], saved_epochs.directory)
  return _Progress(**restored.state, best_weights=restored.best_weights)


def validation_recall(model: TwoStageModel, validation: Validation,
                      k: int) -> float:
  """Recall@k of `model` on the held-out validation interactions."""
  metrics = evaluate.evaluate_retrieval(
      lambda users: score_all_items(model, users), validation.seen,
      validation.held_out, k)
  return metrics["overall"][f"recall@{k}"]


def train_recommender(config: RunConfig, split_data: SplitData,
                      fit_rows: Examples, train_rows: Examples,
                      callbacks=None,
                      strategy: Optional[tf.distribute.Strategy] = None,
                      checkpoint_dir: Optional[str] = None) -> FitResult:
  """Early-stops on the validation part while training on `fit_rows`; with
  `refit`, then retrains on all of `train_rows` for the best epoch count.
  Without validation interactions, trains on `train_rows` for `epochs`.
  With `strategy`, both fits are distributed (see `fit_with_early_stopping`).
  With `checkpoint_dir`, each fit keeps its epochs in a subfolder of it and
  resumes from them.

  Validation excludes only real interactions (`split_data`'s fit part), so
  generated rows in `fit_rows` do not bias early stopping.
  """
  tf.keras.utils.set_random_seed(config.seed)
  phase = lambda name: (EpochCheckpoints(os.path.join(checkpoint_dir, name))
                        if checkpoint_dir else None)
  if not len(split_data.split.validation):
    return fit_with_early_stopping(config, split_data.data, train_rows, None,
                                   callbacks, strategy, phase("train"))
  validation = Validation(split_data.matrices["fit"],
                          split_data.matrices["validation"])
  result = fit_with_early_stopping(config, split_data.data, fit_rows,
                                   validation, callbacks, strategy,
                                   phase("fit"))
  if not config.train.refit:
    return dataclasses.replace(result, fit_model=result.model)
  log.info("Refitting on training + validation for %d epochs",
           result.best_epoch)
  tf.keras.utils.set_random_seed(config.seed)
  refit_config = dataclasses.replace(
      config, train=dataclasses.replace(config.train,
                                        epochs=result.best_epoch))
  refit = fit_with_early_stopping(refit_config, split_data.data, train_rows,
                                  None, callbacks, strategy, phase("refit"))
  refit_history = [dict(r, refit=True) for r in refit.history]
  return FitResult(refit.model, result.best_epoch,
                   result.history + refit_history, fit_model=result.model)
