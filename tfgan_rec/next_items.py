"""Next-item transitions in retrieval: the order the query tower does not read.

The query tower pools a user's history without order, but on a temporal
split what a user takes next follows what they took last. The next-item
`Transitions` baseline (`baselines.ItemTransitions`: how often item j
follows item i within a window of a user's history, summed over the user's
latest items with decaying weights) reads that order. Blended into the
tower's retrieval scores it gave, on MovieLens 100K over 5 seeds (weight
chosen on validation, README "Next-item transitions"), Recall@20 +8.0%
overall (+0.0181 ± 0.0021) and +9.5% on sparse users over the tower alone,
and every seed chose 0.1 or 0.2.

The blend ranks as (1 - w) z(tower) + w z(transitions), each z-scored over
a row's catalogue; it is computed in the tower's scale, s + c t with
c = w std(s) / ((1 - w) std(t)), so a row without transition scores (no
history, an unknown user, popularity) keeps its scores exactly. Each
item's `NEIGHBOURS` strongest successors are kept (the full rows gave the
same Recall@20 within ±0.003 on two seeds), so the layer holds [items + 1,
NEIGHBOURS] tables and serves with gathers and one scatter, standard ops.

`attach` chooses the transitions' window and history and the weight on the
validation split with the early-stopped model, and attaches the blend to it
and to the final model (transitions of the rows each learnt); the exported
`retrieval` and `recommend` (and `recommend_for_features`, whose liked
items are read latest first) serve through it.
"""
import dataclasses
from typing import Dict, Optional, Tuple

import numpy as np
import tensorflow as tf
from scipy import sparse

from tfgan_rec import baselines, evaluate
from tfgan_rec.config import RunConfig
from tfgan_rec.data import Examples, SplitData
from tfgan_rec.recommender import training
from tfgan_rec.recommender.model import NEXT_ITEM_BLEND, TwoStageModel

NEIGHBOURS = 100
WEIGHT_GRID = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
WINDOWS, HISTORIES = (5, 10, 20), (5, 20)
# ItemTransitions holds window x rows (source, target, weight) triples.
MAX_PAIRS = 50_000_000


def neighbour_table(transitions: sparse.csr_matrix, neighbours: int
                    ) -> Tuple[np.ndarray, np.ndarray]:
  """([rows, neighbours] item indices, their values): each row's
  `neighbours` largest entries of `transitions`, 0-padded.

  >>> t = sparse.csr_matrix(np.array([[0., 0, 0], [0, 0.2, 0.5], [0, 0, 0]]))
  >>> neighbour_table(t, 1)
  (array([[0],
         [2],
         [0]], dtype=int32), array([[0. ],
         [0.5],
         [0. ]], dtype=float32))
  """
  rows = transitions.shape[0]
  indices = np.zeros((rows, neighbours), np.int32)
  values = np.zeros((rows, neighbours), np.float32)
  for row in range(rows):
    start, end = transitions.indptr[row], transitions.indptr[row + 1]
    columns, entries = transitions.indices[start:end], transitions.data[
        start:end]
    best = np.argsort(-entries, kind="stable")[:neighbours]
    indices[row, :len(best)], values[row, :len(best)] = (columns[best],
                                                         entries[best])
  return indices, values


def neighbours_for(num_items: int) -> int:
  """How many successors the tables keep per item (the catalogue's width
  when it is smaller than NEIGHBOURS)."""
  return min(NEIGHBOURS, num_items + 1)


class NextItemBlend(tf.keras.layers.Layer):
  """Retrieval scores blended with next-item transition scores.

  A user's transition scores are the rows of their latest `history` items
  in the neighbour tables, the latest weighing 1, the one before
  `baselines.ItemTransitions`' 0.8, and so on (as that baseline scores).

  Args:
    indices, values: `neighbour_table` of the transitions.
    history: how many of the latest items score (at most `max(HISTORIES)`).
    weight: the blend weight w in [0, 1).
  """

  def __init__(self, indices: np.ndarray, values: np.ndarray, history: int,
               weight: float, name: str = NEXT_ITEM_BLEND):
    super().__init__(name=name)
    self.width = len(indices)
    self.indices = tf.Variable(indices, trainable=False, name="indices")
    self.values = tf.Variable(values, trainable=False, name="values")
    rank = np.arange(max(HISTORIES))
    self.positions = tf.Variable(
        np.where(rank < history, 0.8 ** rank, 0.0).astype(np.float32),
        trainable=False, name="positions")
    self.weight = tf.Variable(float(weight), trainable=False, name="weight")

  def transition_scores(self, history: tf.Tensor) -> tf.Tensor:
    """[B, items + 1] scores from `history` [B, L]: its known items (> 0)
    latest first; pads and unknown IDs (0) may stand anywhere and do not
    take a rank."""
    padding_last = tf.argsort(tf.cast(history <= 0, tf.int32), axis=1,
                              stable=True)
    latest = tf.gather(history, padding_last, batch_dims=1)[
        :, :self.positions.shape[0]]
    position = self.positions[:tf.shape(latest)[1]]
    weights = tf.where(latest > 0, position[None, :], 0.0)
    items = tf.gather(self.indices, latest)  # [B, L, N]
    values = tf.gather(self.values, latest) * weights[..., None]
    rows = tf.broadcast_to(tf.range(tf.shape(latest)[0])[:, None, None],
                           tf.shape(items))
    pairs = tf.reshape(tf.stack([rows, items], -1), [-1, 2])
    return tf.tensor_scatter_nd_add(
        tf.zeros([tf.shape(latest)[0], self.width]), pairs,
        tf.reshape(values, [-1]))

  def call(self, scores: tf.Tensor, history: tf.Tensor) -> tf.Tensor:
    """`scores` [B, items + 1] plus c * transition scores of `history`,
    c = w std(scores) / ((1 - w) std(transitions)) per row (0 without
    transition scores)."""
    transitions = self.transition_scores(history)
    spread = lambda s: tf.math.reduce_std(s[:, 1:], axis=1, keepdims=True)
    scale = tf.math.divide_no_nan(self.weight * spread(scores),
                                  (1.0 - self.weight) * spread(transitions))
    return scores + scale * transitions


@dataclasses.dataclass
class NextItemChoice:
  """The blend weight (0: not used), the transitions' settings and every
  weight's validation Recall@K, and why, for the report."""
  weight: float
  reason: str
  tried: Dict[float, float] = dataclasses.field(default_factory=dict)


def attach(config: RunConfig, split_data: SplitData,
           result: training.FitResult, fit_rows: Examples,
           train_rows: Examples) -> NextItemChoice:
  """Chooses the blend on validation with `result.fit_model` and attaches
  it to that model and to `result.model` (unless the weight is 0).

  Args:
    config, split_data: the run's.
    result: the trained recommender (its early-stopped model and the
      refit, or one model without refit).
    fit_rows, train_rows: what each learnt; generated rows (weight < 1)
      are not transitions anyone made and are left out.
  Returns:
    The choice and its figures.
  """
  unavailable = _why_unavailable(config, split_data, fit_rows)
  if unavailable:
    return NextItemChoice(0.0, unavailable)
  fit_real = fit_rows.real()
  settings = _settings(config, split_data, fit_real)
  early = result.fit_model or result.model
  layer = _layer(split_data, fit_real, settings, 0.0)
  early.attach_next_item_blend(layer)
  tried = _validation_recalls(config, split_data, early, layer)
  weight = max(tried, key=tried.get)
  label = ", ".join(f"{key}={value}" for key, value in settings.items())
  if weight == 0.0:
    early.attach_next_item_blend(None)
    return NextItemChoice(0.0, f"not used: validation Recall@"
                          f"{config.eval.k} is highest without ({label})",
                          tried)
  layer.weight.assign(weight)
  if early is not result.model:
    result.model.attach_next_item_blend(
        _layer(split_data, train_rows.real(), settings, weight))
  return NextItemChoice(weight, f"weight {weight:g} ({label}), chosen on "
                        f"validation Recall@{config.eval.k}", tried)


def _why_unavailable(config: RunConfig, split_data: SplitData,
                     rows: Examples) -> Optional[str]:
  """Why the blend is left out of this run, or None."""
  if config.model.next_items == "off":
    return "off (--next-items off)"
  if config.export.index == "compact":
    return ("off: the compact index searches the tower's scores only "
            "(--index exact to blend them)")
  if config.model.generated_in_history:
    return ("off: generated items are in the history "
            "(model.generated_in_history), and they are nobody's last items")
  if not split_data.matrices["validation"].nnz:
    return "off: no validation interactions to choose the weight on"
  if len(rows) * min(WINDOWS) > MAX_PAIRS:
    return (f"off: {len(rows):,} interactions are too many for the "
            f"transition counts (at most {MAX_PAIRS // min(WINDOWS):,})")
  return None


def _settings(config: RunConfig, split_data: SplitData,
              rows: Examples) -> dict:
  """The transitions' window and history, chosen on validation; the
  history no longer than the model keeps (`model.history_length`)."""
  data = split_data.data
  windows = [w for w in WINDOWS if len(rows) * w <= MAX_PAIRS]
  kept = config.model.history_length
  histories = [h for h in HISTORIES if h <= kept] or [kept]
  return baselines.tune_transitions(
      rows, data.num_users, data.num_items, split_data.matrices["fit"],
      split_data.matrices["validation"], config.eval.k, windows, histories)


def _layer(split_data: SplitData, rows: Examples, settings: dict,
           weight: float) -> NextItemBlend:
  """The blend of the transitions of `rows` with these settings."""
  data = split_data.data
  transitions = baselines.ItemTransitions(
      rows.user, rows.item, rows.timestamp, data.num_users, data.num_items,
      **settings).transitions.tocsr()
  indices, values = neighbour_table(transitions,
                                    neighbours_for(data.num_items))
  return NextItemBlend(indices, values, settings["history"], weight)


def _validation_recalls(config: RunConfig, split_data: SplitData,
                        model: TwoStageModel, layer: NextItemBlend
                        ) -> Dict[float, float]:
  """{weight: validation Recall@K of `model` with `layer` at that weight}."""
  matrices, k = split_data.matrices, config.eval.k
  tried = {}
  for weight in WEIGHT_GRID:
    layer.weight.assign(weight)
    metrics = evaluate.evaluate_retrieval(
        lambda users: training.score_all_items(model, users),
        matrices["fit"], matrices["validation"], k)
    tried[weight] = metrics["overall"][f"recall@{k}"]
  return tried


def attach_untrained(model: TwoStageModel) -> None:
  """Attaches an empty blend of the right shape, for a checkpoint that
  holds a chosen one to fill in (`training.restore_model`)."""
  width, neighbours = model.num_items + 1, neighbours_for(model.num_items)
  model.attach_next_item_blend(NextItemBlend(
      np.zeros((width, neighbours), np.int32),
      np.zeros((width, neighbours), np.float32), max(HISTORIES), 0.0))
