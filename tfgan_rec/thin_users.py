"""Thin and new users served by the user generator (`gan.user_generator`).

The generator is trained against a trained recommender (its query tower is
the teacher, its candidate tower the item space), and the blend of its
embedding with the tower's own is chosen per history-length bucket:

- users with interactions (1-5, 6-19, 20 or more): on the validation split,
  with the early-stopped model (the one the validation figures belong to);
- users with none (known by features only): on features-only episodes of
  dense users the generator never learned from, scored on their first
  items, against the tower's own features-only query (user id 0, empty
  history).

The chosen weights are then used with a generator retrained against the
refit model, as the refit reuses the epochs early stopping chose.
"""
import dataclasses
import os
from typing import Dict, Optional

import numpy as np
import tensorflow as tf

from tfgan_rec import evaluate
from tfgan_rec.config import RunConfig
from tfgan_rec.data import Examples, SplitData
from tfgan_rec.gan import user_generator as user_gan
from tfgan_rec.recommender import training
from tfgan_rec.recommender.model import TwoStageModel, served_user_id

BLEND_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)
BUCKETS = ("no history", "1-5", "6-19", "20+")


@dataclasses.dataclass
class BlendChoice:
  """The blend weight of each bucket and the validation Recall@K of every
  weight tried, {bucket: {weight: recall}}."""
  weights: np.ndarray
  tried: Dict[str, Dict[float, float]]


def train_user_generator(config: RunConfig, split_data: SplitData,
                         model: TwoStageModel, rows: Examples,
                         hold_out: bool = True,
                         checkpoint_dir: Optional[str] = None
                         ) -> user_gan.UserGANTrainer:
  """The user generator, trained on the dense users of the real
  interactions in `rows` (generated ones, weight < 1, left out) against
  `model`'s towers (resumed from `checkpoint_dir` if it holds a
  checkpoint); `hold_out` keeps `validation_users` of them apart to choose
  the new users' blend."""
  data = split_data.data
  real = rows.is_real()
  histories = user_gan.UserHistories.from_interactions(
      rows.user[real], rows.item[real], rows.timestamp[real], data.num_users)
  settings = (config.user_gan if hold_out else dataclasses.replace(
      config.user_gan, validation_users=0.0))
  features = {name: table.numpy()
              for name, table in model.user_features.items()}
  trainer = user_gan.UserGANTrainer(
      settings, training.user_matrix(model),
      training.item_matrix(model), histories, features,
      model.user_preprocessing, seed=config.seed,
      checkpoint_dir=checkpoint_dir)
  trainer.restore()
  trainer.train()
  return trainer


def thin_user_query(config: RunConfig, generator: user_gan.UserGenerator,
                    weights) -> user_gan.ThinUserQuery:
  """The serving blend of `generator` with the tower, `weights` per history
  bucket (`BUCKETS`), with the run's fixed noise draws."""
  return user_gan.ThinUserQuery(generator, weights, config.user_gan.max_thin,
                                config.user_gan.samples, seed=config.seed)


def attach_untrained(config: RunConfig, model: TwoStageModel) -> None:
  """Attaches a user generator and blend of the right shapes, untrained:
  what a saved model's checkpoint is read into."""
  items = np.zeros((model.num_items + 1, config.model.embedding_dim),
                   np.float32)
  generator = user_gan.UserGenerator(items, model.user_preprocessing,
                                     config.user_gan)
  model.attach_thin_user_query(thin_user_query(config, generator,
                                               np.zeros(4)))


def choose_blend(config: RunConfig, split_data: SplitData,
                 model: TwoStageModel,
                 trainer: user_gan.UserGANTrainer) -> BlendChoice:
  """Blend weights per bucket for `model` (early-stopped on the fit part)
  and a generator trained against it."""
  layer = thin_user_query(config, trainer.generator, np.zeros(4))
  model.attach_thin_user_query(layer)
  try:
    tried = {BUCKETS[0]: _new_user_recalls(config, model, layer, trainer)}
    tried.update(_validation_recalls(config, split_data, model, layer))
  finally:
    model.attach_thin_user_query(None)
  weights = np.zeros(len(BUCKETS), np.float32)
  for bucket, recalls in tried.items():
    weights[BUCKETS.index(bucket)] = max(recalls, key=recalls.get)
  return BlendChoice(weights, tried)


def _validation_recalls(config: RunConfig, split_data: SplitData,
                        model: TwoStageModel, layer: user_gan.ThinUserQuery
                        ) -> Dict[str, Dict[float, float]]:
  """{bucket: {weight: validation Recall@K of the bucket's users}} for the
  buckets of users with fit interactions."""
  matrices, k = split_data.matrices, config.eval.k
  # Counted as the serving layer counts them: the model's stored history.
  lengths = (model.history_items.numpy() > 0).sum(axis=1)
  buckets = user_gan.blend_bucket(lengths)
  tried = {}
  for index in (1, 2, 3):
    mask = buckets == index
    if not matrices["validation"][mask].nnz:
      continue
    tried[BUCKETS[index]] = {}
    for weight in BLEND_GRID:
      layer.blend_weights.assign(np.where(np.arange(4) == index, weight, 0))
      metrics = evaluate.evaluate_retrieval(
          lambda users: training.score_all_items(model, users),
          matrices["fit"], matrices["validation"], k, {"bucket": mask})
      tried[BUCKETS[index]][weight] = metrics["bucket"][f"recall@{k}"]
  return tried


def _new_user_recalls(config: RunConfig, model: TwoStageModel,
                      layer: user_gan.ThinUserQuery,
                      trainer: user_gan.UserGANTrainer) -> Dict[float, float]:
  """{weight: Recall@K} on features-only episodes of dense users the
  generator never learned from, scored on their first items."""
  users, following = user_gan.new_user_episodes(trainer)
  if not len(users):
    return {0.0: 0.0}
  features = model.user_feature_rows(users)
  empty = tf.zeros([len(users), config.user_gan.max_thin], tf.int32)
  tower = model.query_tower(tf.zeros([len(users)], tf.int32), features,
                            empty, preprocessed=True).numpy()
  generated = layer.generated(empty, features).numpy()
  items = training.item_matrix(model)
  recalls = {}
  for weight in BLEND_GRID:
    blended = weight * generated + (1.0 - weight) * tower
    blended /= np.linalg.norm(blended, axis=1, keepdims=True)
    recalls[weight] = user_gan.recall_of_following(
        blended, items, following, config.eval.k)
  return recalls


def generator_scores(model: TwoStageModel,
                     layer: user_gan.ThinUserQuery) -> evaluate.ScoreFn:
  """Scores from the generated query alone (the generator used directly as
  a recommender), conditioned on each user's latest items and features."""
  items = training.item_matrix(model)

  def score(users: np.ndarray) -> np.ndarray:
    ids = tf.constant(users, tf.int32)
    history = tf.gather(model.history_items, ids)
    features = model.user_feature_rows(ids)
    thin = history[:, :layer.max_thin]
    return layer.generated(thin, features).numpy() @ items.T

  return score


def recent_tower_scores(model: TwoStageModel, latest: int) -> evaluate.ScoreFn:
  """The tower's own query from each user's `latest` items only (id and
  features as usual): the non-GAN twin of the generator's input, to tell
  what recency alone is worth."""
  items = training.item_matrix(model)

  def score(users: np.ndarray) -> np.ndarray:
    ids = tf.constant(users, tf.int32)
    history = tf.gather(model.history_items, ids)[:, :latest]
    return model.user_embeddings(served_user_id(ids, history),
                                 history).numpy() @ items.T

  return score


def serve_thin_users(config: RunConfig, split_data: SplitData,
                     result: training.FitResult, train_rows: Examples,
                     fit_rows: Examples,
                     checkpoints: Optional[str] = None) -> BlendChoice:
  """Chooses the blend with the early-stopped model and a generator trained
  against it, then attaches to the final model a generator trained against
  that model (the same one when there was no refit); returns the choice.
  The generators checkpoint in (and resume from) folders under
  `checkpoints`."""
  folder = lambda name: (os.path.join(checkpoints, name) if checkpoints
                         else None)
  early = result.fit_model or result.model
  early_rows = fit_rows if result.fit_model is not None else train_rows
  trainer = train_user_generator(config, split_data, early, early_rows,
                                 checkpoint_dir=folder("user_generator_fit"))
  choice = choose_blend(config, split_data, early, trainer)
  if early is not result.model:
    trainer = train_user_generator(config, split_data, result.model,
                                   train_rows, hold_out=False,
                                   checkpoint_dir=folder("user_generator"))
  result.model.attach_thin_user_query(
      thin_user_query(config, trainer.generator, choice.weights))
  return choice
