"""Who retrieves for users without history: the query tower or the features.

A user with no interactions is known by their features alone. The query
tower then sees an input it never trained on (id 0, an empty history); a
softmax regression from the user's demographic groups to the items they
take (`baselines.FeatureSoftmax`) is fitted on exactly that question. On
MovieLens 100K's `--cold-users 0.1` it gave new users 14.8% more Recall@20
than the tower (5 seeds, README "New users").

`choose_scorer` decides, as `--new-users` says: `auto` compares the two on
users with history held out and treated as new (the softmax fitted without
them; the tower trained with them, so the comparison leans to the tower),
and the softmax is attached to the model only if it wins. Attached, it
retrieves for every user without history, in evaluation and in the
exported `serving_default`, `retrieval` and `recommend_for_features` (no
liked items); the ranking stage still re-ranks by the tower's predicted
ratings.
"""
import dataclasses
import logging
from typing import Dict, Optional

import numpy as np
import tensorflow as tf

from tfgan_rec import baselines
from tfgan_rec.config import RunConfig
from tfgan_rec.data import SplitData
from tfgan_rec.errors import InputError
from tfgan_rec.feature_groups import FeatureGroups, GroupSoftmax
from tfgan_rec.recommender import training
from tfgan_rec.recommender.model import TwoStageModel

log = logging.getLogger(__name__)

SCORER_NAME = "new_user_scorer"  # the model's attribute, in checkpoints


@dataclasses.dataclass
class ScorerChoice:
  """Which scorer serves users without history ("features" or "tower"),
  why, and the held-out Recall@K of each compared, {scorer: recall}."""
  scorer: str
  reason: str
  recalls: Dict[str, float] = dataclasses.field(default_factory=dict)


def choose_scorer(config: RunConfig, split_data: SplitData,
                  model: TwoStageModel) -> ScorerChoice:
  """Decides as `config.model.new_users` says and, for "features",
  attaches the feature softmax (fitted on the training interactions) to
  `model`."""
  setting = config.model.new_users
  if setting == "tower":
    return ScorerChoice("tower", "--new-users tower")
  train, table = split_data.matrices["train"], split_data.data.user_features
  unavailable = _why_unavailable(model, train.shape[1])
  if unavailable:
    if setting == "features":
      raise InputError(f"--new-users features: {unavailable}; use "
                       f"--new-users auto or tower.")
    return ScorerChoice("tower", unavailable)
  l2, softmax_recall = baselines.tune_feature_softmax(train, table,
                                                      config.eval.k)
  choice = (ScorerChoice("features", "--new-users features")
            if setting == "features" else
            _compare(config, split_data, model, softmax_recall))
  if choice.scorer == "features":
    scorer = baselines.FeatureSoftmax(train, table, l2)
    model.attach_new_user_scorer(scorer.layer(name=SCORER_NAME))
  log.info("users without history: %s (%s)", choice.scorer, choice.reason)
  return choice


def _why_unavailable(model: TwoStageModel, num_items: int) -> Optional[str]:
  if not FeatureGroups.of(model.user_preprocessing).sizes:
    return ("no user feature has few enough values to form groups (at most "
            "25)")
  if num_items > baselines.EASE_MAX_ITEMS:
    return (f"the feature softmax is skipped above {baselines.EASE_MAX_ITEMS} "
            f"items (it holds dense [users, items] arrays)")
  return None


def _compare(config: RunConfig, split_data: SplitData, model: TwoStageModel,
             softmax_recall: Optional[float]) -> ScorerChoice:
  """"features" if the softmax's held-out Recall@K beats the tower's
  features-only query on the same users."""
  holdout = baselines.new_user_holdout(split_data.matrices["train"])
  if holdout is None or softmax_recall is None:
    return ScorerChoice("tower", "too few users with history to compare")
  tower_recall = baselines.new_user_recall(
      lambda users: tower_scores(model, users), holdout[1], config.eval.k)
  recalls = {"features": softmax_recall, "tower": tower_recall}
  scorer = "features" if softmax_recall > tower_recall else "tower"
  k = config.eval.k
  return ScorerChoice(scorer, f"held-out users with history treated as new: "
                      f"Recall@{k} {softmax_recall:.4f} by features, "
                      f"{tower_recall:.4f} by the tower", recalls)


def tower_scores(model: TwoStageModel, users: np.ndarray) -> np.ndarray:
  """[users, items + 1] scores of the tower's query for `users` as new
  users: their features, no history (the thin-user blend included)."""
  users = tf.constant(users, tf.int32)
  empty = tf.zeros([tf.size(users), 1], tf.int32)
  query = model.new_user_embeddings(model.user_feature_rows(users), empty)
  return tf.matmul(query, training.item_matrix(model),
                   transpose_b=True).numpy()


def attach_untrained(model: TwoStageModel) -> None:
  """Attaches a zero feature softmax of the right shape, for a checkpoint
  that holds a trained one to fill in (`training.restore_model`)."""
  groups = FeatureGroups.of(model.user_preprocessing)
  width = model.num_items + 1
  model.attach_new_user_scorer(GroupSoftmax(
      groups, np.zeros([groups.num_inputs, width]), np.zeros(width),
      name=SCORER_NAME))
