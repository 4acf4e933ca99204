"""The two-stage TFRS model: a retrieval task and a ranking task."""
from typing import Dict, Optional, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfgan_rec.config import ModelConfig
from tfgan_rec.data.dataset import EncodedData
from tfgan_rec.data.features import FeatureTable
from tfgan_rec.layers import FeaturePreprocessing, mlp
from tfgan_rec.recommender import graph as graph_lib
from tfgan_rec.recommender import replicas as replicas_lib
from tfgan_rec.recommender import towers


# The attributes holding the new-user scorer and the next-item blend, and
# their checkpoint keys.
NEW_USER_SCORER = "new_user_scorer"
NEXT_ITEM_BLEND = "next_item_blend"


def history_table(user: np.ndarray, item: np.ndarray, timestamp: np.ndarray,
                  num_users: int, length: int) -> np.ndarray:
  """[num_users + 1, length] matrix of each user's latest items, 0-padded.
  Ties in time keep the rows' order (the later row is the later item), as
  the split's and `earlier_counts`'."""
  order = np.lexsort((-np.arange(len(user)), -timestamp, user))
  sorted_user = user[order]
  starts = np.searchsorted(sorted_user, sorted_user, side="left")
  rank = np.arange(len(order)) - starts
  keep = rank < length
  table = np.zeros((num_users + 1, length), dtype=np.int32)
  table[sorted_user[keep], rank[keep]] = item[order][keep]
  return table


def earlier_counts(user: np.ndarray, timestamp: np.ndarray,
                   in_history: np.ndarray) -> np.ndarray:
  """Per row, how many of its user's `in_history` rows come before it in
  time (ties in the rows' order, as the split's).

  >>> earlier_counts(np.array([1, 1, 2, 1]), np.array([5., 3., 1., 9.]),
  ...                np.array([True, True, True, False]))
  array([1, 0, 0, 2])
  """
  order = np.lexsort((timestamp, user))
  included = in_history[order].astype(np.int64)
  before = np.cumsum(included) - included
  sorted_user = user[order]
  first = np.searchsorted(sorted_user, sorted_user, side="left")
  counts = np.empty(len(user), np.int64)
  counts[order] = before - before[first]
  return counts


def served_user_id(user: tf.Tensor, history: tf.Tensor) -> tf.Tensor:
  """`user`, or 0 for users with an empty `history`: a user never trained
  on has an untrained id embedding, so they are served as a new user (id
  0), through features, as recommend_for_features does."""
  return tf.where(tf.reduce_any(history > 0, axis=1), user,
                  tf.zeros_like(user))


def _constant_table(values: np.ndarray, name: str) -> tf.Variable:
  # Non-trainable variables rather than constants keep large tables out of
  # the graph proto (2 GiB limit) and let them be swapped without retracing.
  return tf.Variable(values, trainable=False, name=name)


def _encoded_table(preprocessing: FeaturePreprocessing, table: FeatureTable,
                   entity: str) -> Dict[str, tf.Variable]:
  """Every row of `table` encoded by `preprocessing`, {name: [rows, ...]}."""
  raw = {name: tf.constant(np.asarray(column, object), tf.string)
         for name, column in table.columns.items()}
  return {name: _constant_table(values, f"{entity}_{name}")
          for name, values in preprocessing(raw).items()}


def _graph_embedding(config: ModelConfig, data: EncodedData,
                     adjacency: Optional[graph_lib.Adjacency]
                     ) -> Optional[graph_lib.GraphEmbedding]:
  """The towers' shared graph embedding, if `config.tower` uses one."""
  if not config.uses_graph:
    return None
  if adjacency is None:
    raise ValueError(f"tower '{config.tower}' needs the adjacency of the "
                     f"training rows (graph.normalized_adjacency).")
  return graph_lib.GraphEmbedding(
      adjacency, data.num_users, config.embedding_dim, config.graph_layers,
      config.graph_combination, config.graph_edge_dropout,
      config.graph_propagation, name="graph_embedding")


class _RefreshGraph(tf.keras.callbacks.Callback):
  """Propagates the graph before every epoch ("epoch" propagation)."""

  def __init__(self, graph: graph_lib.GraphEmbedding):
    super().__init__()
    self.graph = graph

  def on_epoch_begin(self, epoch, logs=None):
    self.graph.refresh()


class TwoStageModel(tfrs.Model):
  """Retrieval (in-batch plus sampled softmax) and rating ranking, one model.

  Batches are dicts with int `user`, `item`, float `rating` and `weight`
  (generated interactions arrive with weight < 1; both tasks honour it),
  and optionally int `history` [B, length]: the items that describe each
  row's user (default: the user's stored history; `training.EarlierItems`
  gives the items before the row in time).
  The retrieval loss corrects for popularity (log-Q) and removes accidental
  hits; `extra_negatives` uniformly sampled items are added to the in-batch
  negatives (mixed negative sampling) so rare items are pushed down too.

  With `config.tower` graph or id+graph, both towers use the LightGCN
  embeddings (`graph.GraphEmbedding`) of `adjacency`, which must be built
  from the rows the model trains on: a training step takes the graph's
  `step_rows` once (one propagation, or none with "epoch" propagation) and
  both towers gather from it; everything else reads the graph's cache,
  which `fit` refreshes when it returns (and, with "epoch" propagation,
  before every epoch).

  Trained under a `tf.distribute` strategy, each replica computes one
  device's loss for its rows of the global batch (`replicas`), with the
  random draws a function of (`seed`, step); without one, they come from
  TensorFlow's global seed.

  >>> from tfgan_rec.config import ModelConfig
  >>> from tfgan_rec.data import encode, synthetic
  >>> data = encode(synthetic.make_synthetic(
  ...     synthetic.SyntheticConfig(num_interactions=2000)))
  >>> history = history_table(data.user, data.item, data.timestamp,
  ...                         data.num_users, length=10)
  >>> counts = np.bincount(data.item, minlength=data.num_items + 1)
  >>> model = TwoStageModel(ModelConfig(), data, history, counts)
  >>> model.user_embeddings(tf.constant([1, 2])).shape
  TensorShape([2, 64])
  """

  def __init__(self, config: ModelConfig, data: EncodedData,
               history: np.ndarray, item_counts: np.ndarray,
               rating_mean: float = 0.0,
               adjacency: Optional[graph_lib.Adjacency] = None,
               seed: int = 0):
    super().__init__()
    self.config, self.seed = config, seed
    # Built in a strategy's scope: trained on several replicas.
    self.replicated = tf.distribute.has_strategy()
    if self.replicated:
      # Keras' default sums the replicas' metrics across workers, the
      # already synchronised RMSE included (reported doubled on 2 workers).
      self.distribute_reduction_method = "first"
    self.num_items = data.num_items
    self.user_preprocessing = FeaturePreprocessing.adapted(
        data.user_features, name="user_preprocessing")
    self.item_preprocessing = FeaturePreprocessing.adapted(
        data.item_features, name="item_preprocessing")
    # Each entity's features, encoded ONCE here by the towers' own
    # FeaturePreprocessing; raw request features (recommend_for_features)
    # go through the same layer per call. Measured on MovieLens-100K-sized
    # synthetic data (batch 512 + 2048 negatives, one CPU core, 3 runs):
    # encoding the gathered raw strings per batch made a training step
    # 33-42 ms instead of 28-31 ms (compute_loss 19-20 ms instead of
    # 16-17 ms); with these cached tables it is 31 ms (compute_loss 14 ms).
    self.user_features = _encoded_table(self.user_preprocessing,
                                        data.user_features, "user")
    self.item_features = _encoded_table(self.item_preprocessing,
                                        data.item_features, "item")
    self.history_items = _constant_table(history, "history_items")
    self.thin_user_query = None
    # Named by NEW_USER_SCORER in checkpoints (`training.saved_with`).
    self.new_user_scorer = None
    # Named by NEXT_ITEM_BLEND in checkpoints.
    self.next_item_blend = None
    # The rating head predicts the deviation from the mean training rating.
    self.rating_offset = tf.Variable(float(rating_mean), trainable=False,
                                     name="rating_offset")
    share = item_counts / max(item_counts.sum(), 1.0)
    self.item_share = _constant_table(share.astype(np.float32), "item_share")
    self.graph = _graph_embedding(config, data, adjacency)
    self.query_tower = towers.QueryTower(
        data.num_users, data.num_items, self.user_preprocessing,
        config.embedding_dim, config.feature_dim, config.query_hidden,
        use_id=config.uses_id, graph=self.graph,
        use_history=config.pooled_history)
    self.candidate_tower = towers.CandidateTower(
        data.num_items, self.item_preprocessing, config.embedding_dim,
        config.feature_dim, config.candidate_hidden, config.item_id_dropout,
        use_id=config.uses_id, graph=self.graph)
    self.rating_head = mlp(config.ranking_hidden, 1, "rating_head")
    self.retrieval_task = tfrs.tasks.Retrieval(
        temperature=config.temperature, remove_accidental_hits=True)
    # Summed here and averaged in compute_loss over the global batch, so
    # training under a tf.distribute strategy takes the same step.
    self.ranking_task = tfrs.tasks.Ranking(
        loss=tf.keras.losses.MeanSquaredError(
            reduction=tf.keras.losses.Reduction.SUM),
        metrics=[tf.keras.metrics.RootMeanSquaredError(name="rmse")])

  def user_embeddings(self, user: tf.Tensor, history=None,
                      graph_rows=None) -> tf.Tensor:
    """Query embeddings; `history` defaults to the user's stored history,
    and then users with short histories get the `thin_user_query` blend,
    if one is attached (training passes `history` and never does).
    `graph_rows` is this step's `GraphEmbedding.step_rows` (default: the
    cache)."""
    stored = history is None
    features = self.user_feature_rows(user)
    if stored:
      history = tf.gather(self.history_items, user)
      user = served_user_id(user, history)
    query = self.query_tower(user, features, history, preprocessed=True,
                             graph_rows=graph_rows)
    if stored and self.thin_user_query is not None:
      query = self.thin_user_query(history, features, query)
    return query

  def user_feature_rows(self, user: tf.Tensor) -> Dict[str, tf.Tensor]:
    """The users' encoded features, {name: [B, ...]}."""
    return {k: tf.gather(v, user) for k, v in self.user_features.items()}

  def new_user_embeddings(self, features: Dict[str, tf.Tensor],
                          liked: tf.Tensor) -> tf.Tensor:
    """Query embeddings of users known only by features (encoded by
    `user_preprocessing`) and the items [B, L] they liked (0 pads), with
    the `thin_user_query` blend if any."""
    user = tf.zeros(tf.shape(liked)[:1], tf.int32)
    query = self.query_tower(user, features, liked, preprocessed=True)
    if self.thin_user_query is not None:
      query = self.thin_user_query(liked, features, query)
    return query

  def new_user_rows(self, features: Dict[str, tf.Tensor],
                    history: tf.Tensor
                    ) -> Optional[Tuple[Dict[str, tf.Tensor], tf.Tensor]]:
    """With a new-user scorer attached, (the encoded `features`, a [B] mask
    of the rows with no `history` item: the ones it serves); None without
    one."""
    if self.new_user_scorer is None:
      return None
    return features, tf.reduce_all(history == 0, axis=1)

  def stored_new_user_rows(self, user: tf.Tensor
                           ) -> Optional[Tuple[Dict[str, tf.Tensor],
                                               tf.Tensor]]:
    """`new_user_rows` of known users (user > 0) from their stored
    features and history."""
    rows = self.new_user_rows(self.user_feature_rows(user),
                              tf.gather(self.history_items, user))
    if rows is None:
      return None
    return rows[0], rows[1] & (user > 0)

  def attach_new_user_scorer(self, layer: tf.keras.layers.Layer) -> None:
    """Serves users without history by `layer(encoded features) -> item
    scores [B, items + 1]` instead of the query tower's (retrieval only;
    ratings still come from the tower; see `thin_users`)."""
    self.new_user_scorer = layer

  def attach_next_item_blend(self, layer: tf.keras.layers.Layer) -> None:
    """Blends retrieval scores with `layer(scores, history) -> scores`
    (`tfgan_rec.next_items`); None detaches it."""
    self.next_item_blend = layer

  def blended_scores(self, scores: tf.Tensor, history: tf.Tensor
                     ) -> tf.Tensor:
    """Retrieval `scores` [B, items + 1] of users with `history` [B, L]
    (latest first), through the next-item blend if one is attached."""
    if self.next_item_blend is None:
      return scores
    return self.next_item_blend(scores, history)

  def attach_thin_user_query(self, layer: tf.keras.layers.Layer) -> None:
    """Serves users with short histories through `layer(history, encoded
    features, tower query) -> query` (see `gan.user_generator`)."""
    self.thin_user_query = layer

  def item_embeddings(self, item: tf.Tensor, training=None,
                      graph_rows=None, id_noise=None) -> tf.Tensor:
    """Candidate embeddings; `graph_rows` as in `user_embeddings`,
    `id_noise` as in `CandidateTower.call`."""
    features = {k: tf.gather(v, item) for k, v in self.item_features.items()}
    return self.candidate_tower(item, features, training=training,
                                preprocessed=True, graph_rows=graph_rows,
                                id_noise=id_noise)

  def fit(self, x=None, *args, **kwargs):
    """Keras' `fit`; then the graph embedding's cache is refreshed, so what
    evaluates, serves or exports the model sees the weights fit trained
    (with "epoch" graph propagation, also before every epoch).

    For a model built in a strategy's scope, a `tf.data.Dataset` `x` holds
    global batches, as on one device, and every replica receives each
    whole (`replicas.global_batches`; one epoch per call)."""
    if self.replicated and isinstance(x, tf.data.Dataset):
      x, kwargs = replicas_lib.global_batches(self.distribute_strategy, x,
                                              kwargs)
    if self.graph is not None and self.graph.propagation == "epoch":
      kwargs["callbacks"] = [*(kwargs.get("callbacks") or []),
                             _RefreshGraph(self.graph)]
    history = super().fit(x, *args, **kwargs)
    if self.graph is not None:
      self.graph.refresh()
    return history

  def predict_rating(self, query: tf.Tensor, candidate: tf.Tensor) -> tf.Tensor:
    joint = tf.concat([query, candidate, query * candidate], axis=-1)
    return tf.squeeze(self.rating_head(joint), -1) + self.rating_offset

  def _training_history(self, user, item, training, noise=None,
                        history=None):
    """The user's history (the batch's `history` if given, else the stored
    one) without the target item, randomly thinned in training so the model
    also learns from short histories. `noise`: the uniform draws of the
    thinning (default: drawn here)."""
    if history is None:
      history = tf.gather(self.history_items, user)
    history = tf.where(history == item[:, None], tf.zeros_like(history),
                       history)
    if training and self.config.history_dropout:
      if noise is None:
        noise = tf.random.uniform(tf.shape(history))
      keep = noise >= self.config.history_dropout
      history = tf.where(keep, history, tf.zeros_like(history))
    return history

  def _as_new_users(self, user: tf.Tensor, history: tf.Tensor, training,
                    noise=None):
    """In training, `new_user_dropout` of the rows become a new user's: id
    0 and an empty history, so id 0 and the features-only path are trained
    (otherwise row 0 of the id embedding never is). `noise` as in
    `_training_history`."""
    if not (training and self.config.new_user_dropout):
      return user, history
    if noise is None:
      noise = tf.random.uniform(tf.shape(user))
    new = noise < self.config.new_user_dropout
    return (tf.where(new, tf.zeros_like(user), user),
            tf.where(new[:, None], tf.zeros_like(history), history))

  def _negatives(self, seed=None):
    """The step's sampled negatives (from the stateless `seed` [2] if
    given), or the whole catalogue when it is smaller than asked."""
    count = self.config.extra_negatives
    if count <= 0:
      return tf.zeros([0], tf.int32)
    if count >= self.num_items:
      return tf.range(1, self.num_items + 1, dtype=tf.int32)
    if seed is not None:
      return tf.random.stateless_uniform([count], seed, 1, self.num_items + 1,
                                         dtype=tf.int32)
    return tf.random.uniform([count], 1, self.num_items + 1, dtype=tf.int32)

  def _sampling_probability(self, candidate_ids, batch_size, num_negatives):
    """Probability that a candidate slot of a batch of `batch_size` rows
    plus `num_negatives` negatives holds each candidate (TFRS clips it to
    [1e-6, 1], so it must be a probability, not a count), to the power
    of the log-Q correction."""
    expected = (batch_size * tf.gather(self.item_share, candidate_ids) +
                num_negatives / self.num_items) / (batch_size + num_negatives)
    return expected ** self.config.logq_correction

  def compute_loss(self, inputs: Dict[str, tf.Tensor], training=False):
    if tf.distribute.has_strategy():
      return self._replica_loss(inputs, training)
    user, item = inputs["user"], inputs["item"]
    weight = inputs.get("weight")
    history = self._training_history(user, item, training,
                                     history=inputs.get("history"))
    user, history = self._as_new_users(user, history, training)
    # This step's graph rows (at most one propagation), for both towers.
    graph_rows = (self.graph.step_rows(training) if self.graph is not None
                  else None)
    query = self.user_embeddings(user, history, graph_rows)
    candidate = self.item_embeddings(item, training, graph_rows)
    negatives = self._negatives()
    candidate_ids = tf.concat([item, negatives], 0)
    candidates = tf.concat(
        [candidate, self.item_embeddings(negatives, training, graph_rows)], 0)
    batch_size = tf.cast(tf.shape(item)[0], tf.float32)
    num_negatives = tf.cast(tf.shape(negatives)[0], tf.float32)
    probability = self._sampling_probability(candidate_ids, batch_size,
                                             num_negatives)
    retrieval_loss = self.retrieval_task(
        query, candidates, sample_weight=weight,
        candidate_sampling_probability=probability,
        candidate_ids=candidate_ids, compute_metrics=False,
        compute_batch_metrics=False)
    predicted = self.predict_rating(query, candidate)
    ranking_loss = self.ranking_task(labels=inputs["rating"][:, None],
                                     predictions=predicted[:, None],
                                     sample_weight=weight)
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    ranking_loss /= batch_size * replicas
    return (self.config.retrieval_weight * retrieval_loss +
            self.config.ranking_weight * ranking_loss)

  def _replica_loss(self, inputs: Dict[str, tf.Tensor], training):
    """`compute_loss` of one replica under a strategy: one device's loss of
    the global batch `inputs`, restricted to this replica's rows (see
    `replicas`); the replicas' losses add up to it."""
    size = tf.shape(inputs["item"])[0]
    rows, valid, first = replicas_lib.replica_rows(size)
    draw = replicas_lib.StepRandom(self.seed, self.optimizer.iterations)
    user, item = (tf.gather(inputs[k], rows) for k in ("user", "item"))
    weight = tf.cast(valid, tf.float32)
    if "weight" in inputs:
      weight *= tf.gather(inputs["weight"], rows)
    given = inputs.get("history")
    history = self._training_history(user, item, training, tf.gather(
        draw.uniform([size, self.history_items.shape[1]],
                     replicas_lib.HISTORY), rows),
        None if given is None else tf.gather(given, rows))
    user, history = self._as_new_users(user, history, training, tf.gather(
        draw.uniform([size], replicas_lib.NEW_USERS), rows))
    graph_rows = (
        self.graph.step_rows(training, draw.seed_of(replicas_lib.EDGES))
        if self.graph is not None else None)
    query = self.user_embeddings(user, history, graph_rows)
    negatives = self._negatives(draw.seed_of(replicas_lib.NEGATIVES))
    candidate_ids = tf.concat([inputs["item"], negatives], 0)
    candidates = replicas_lib.embed_once(
        lambda ids, noise: self.item_embeddings(ids, training, graph_rows,
                                                noise),
        candidate_ids,
        draw.uniform(tf.shape(candidate_ids), replicas_lib.ITEM_IDS))
    batch_size = tf.cast(size, tf.float32)
    probability = self._sampling_probability(
        candidate_ids, batch_size, tf.cast(tf.shape(negatives)[0], tf.float32))
    # TFRS takes query i's positive to be candidate i: this replica's rows
    # are global rows first + i, so its candidates start at `first`.
    retrieval_loss = self.retrieval_task(
        query, tf.roll(candidates, -first, 0), sample_weight=weight,
        candidate_sampling_probability=tf.roll(probability, -first, 0),
        candidate_ids=tf.roll(candidate_ids, -first, 0),
        compute_metrics=False, compute_batch_metrics=False)
    predicted = self.predict_rating(query, tf.gather(candidates, rows))
    ranking_loss = self.ranking_task(
        labels=tf.gather(inputs["rating"], rows)[:, None],
        predictions=predicted[:, None], sample_weight=weight)
    return (self.config.retrieval_weight * retrieval_loss +
            self.config.ranking_weight * ranking_loss / batch_size)

  def train_step(self, inputs):
    """TFRS's step; under a strategy the loss it reports is the global
    batch's (the replicas' sum), the same on every replica, so Keras
    reports the first replica's metrics (see `__init__`)."""
    metrics = super().train_step(inputs)
    if tf.distribute.has_strategy():
      context = tf.distribute.get_replica_context()
      metrics["loss"] = context.all_reduce(tf.distribute.ReduceOp.SUM,
                                           metrics["loss"])
      metrics["total_loss"] = (metrics["loss"] +
                               metrics["regularization_loss"])
    return metrics
