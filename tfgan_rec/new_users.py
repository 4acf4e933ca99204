"""Who retrieves for users without history: the query tower or the features.

A user with no interactions is known by their features alone. The query
tower then sees an input it never trained on (id 0, an empty history); a
softmax regression from the user's demographic groups to the items they
take (`baselines.FeatureSoftmax`) is fitted on exactly that question. On
MovieLens 100K's `--cold-users 0.1` it gave new users 17.4% more Recall@20
than the tower, 12.7% more than the tower with the user generator's blend
(5 seeds, README "New users").

`choose_scorer` attaches the softmax to the model unless `--new-users
tower` says otherwise or the data cannot support it (no user feature with
few enough values to form groups; over `baselines.EASE_MAX_ITEMS` items);
the run's report says which serves them and why. Attached, the softmax
retrieves for every user without history, in evaluation and in the exported
`serving_default`, `retrieval` and `recommend_for_features` (no liked
items); the ranking stage still re-ranks by the tower's predicted ratings.
Group members are served by the tower.

There is no validation-based choice: comparing the two on users with
history held out and treated as new favours the tower, which trained on
those users and can tell them apart by features such as a zip code. Tried
on MovieLens 100K, it chose the tower on seed 42 (0.1416 against 0.1312)
while on test the new users got 0.1459 from the softmax and 0.1272 from the
tower with the blend; 4 of 5 seeds chose the tower (README, New users).
"""
import dataclasses
import logging
from typing import Optional

import numpy as np

from tfgan_rec import baselines
from tfgan_rec.config import RunConfig
from tfgan_rec.data import SplitData
from tfgan_rec.feature_groups import (DEFAULT_MAX_GROUPS, FeatureGroups,
                                      GroupSoftmax)
from tfgan_rec.recommender.model import NEW_USER_SCORER, TwoStageModel

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ScorerChoice:
  """Which scorer serves users without history ("features" or "tower"),
  and why."""
  scorer: str
  reason: str


def choose_scorer(config: RunConfig, split_data: SplitData,
                  model: TwoStageModel) -> ScorerChoice:
  """Attaches the feature softmax (l2 chosen on held-out users with
  history, fitted on the training interactions) to `model` unless
  `config.model.new_users` is "tower" or the data cannot support it.

  Returns:
    Which scorer serves users without history, and why.
  """
  if config.model.new_users == "tower":
    return ScorerChoice("tower", "--new-users tower")
  train, table = split_data.matrices["train"], split_data.data.user_features
  unavailable = _why_unavailable(model, train.shape[1])
  if unavailable:
    log.info("users without history: the query tower (%s)", unavailable)
    return ScorerChoice("tower", unavailable)
  l2 = baselines.tune_feature_softmax(train, table, config.eval.k)
  scorer = baselines.FeatureSoftmax(train, table, l2)
  model.attach_new_user_scorer(scorer.layer(name=NEW_USER_SCORER))
  return ScorerChoice("features", f"l2={l2:g}")


def _why_unavailable(model: TwoStageModel, num_items: int) -> Optional[str]:
  """Why the feature softmax cannot serve this model's users, or None."""
  groups = FeatureGroups.of(model.user_preprocessing)
  if not groups.sizes:
    return (f"no user feature has few enough values to form groups (at most "
            f"{DEFAULT_MAX_GROUPS} ids, the unknown one included)")
  if num_items > baselines.EASE_MAX_ITEMS:
    return (f"the feature softmax is skipped above {baselines.EASE_MAX_ITEMS} "
            f"items (it holds dense [users, items] arrays)")
  if groups.num_inputs * num_items > baselines.FEATURE_SOFTMAX_CELLS:
    return (f"its weights would hold {groups.num_inputs} group inputs x "
            f"{num_items} items, over {baselines.FEATURE_SOFTMAX_CELLS:,}")
  return None


def attach_untrained(model: TwoStageModel) -> None:
  """Attaches a zero feature softmax of the right shape, for a checkpoint
  that holds a trained one to fill in (`training.restore_model`)."""
  groups = FeatureGroups.of(model.user_preprocessing)
  width = model.num_items + 1
  model.attach_new_user_scorer(GroupSoftmax(
      groups, np.zeros([groups.num_inputs, width]), np.zeros(width),
      name=NEW_USER_SCORER))
