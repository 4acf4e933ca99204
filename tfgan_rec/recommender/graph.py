"""LightGCN graph embeddings of users and items (He et al., SIGIR 2020).

Users and items are the nodes of one bipartite graph whose edges are the
training interactions. Every node has one trainable embedding (row `user`
for users 0..num_users, row `num_users + 1 + item` for items 0..num_items,
0 being the unknown user and the padding item); a propagation step replaces
each node's embedding by the sum of its neighbours' scaled by the
symmetric normalisation D^-1/2 A D^-1/2 (LightGCN's) or the row
normalisation D^-1 A (each node the weighted mean of its neighbours), with
no feature transform and no non-linearity, and the K step results plus the
node's own embedding are combined by their mean (LightGCN's choice) or by
learned softmax weights.
Propagation carries what dense users' interactions say about an item to the
sparse users who share it.

A node with no edges (a user or item absent from the training rows, the
unknown user 0, the padding item 0) gets a zero graph embedding, so the
towers describe it through its features and pooled history alone, exactly
as they describe a new user today (not its own untrained row).

How often training propagates (`PROPAGATIONS`): "step" propagates the whole
graph at every training step, as LightGCN does, so a step costs time in
proportion to the edges and an epoch to edges x steps (quadratic in the
interactions). "epoch" propagates once per epoch and keeps the K layers;
within the epoch a step gathers only its nodes' rows, trains their own row
(layer 0) and the layer weights, and reads their propagated layers from the
epoch's (no gradient reaches the neighbours through them), so a step costs
the same whatever the graph's size (the historical-embedding approximation,
as in GNNAutoScale, Fey et al. 2021).
"""
import dataclasses
from typing import Callable, Optional

import numpy as np
import tensorflow as tf
from scipy import sparse

COMBINATIONS = ("mean", "learned")
NORMALIZATIONS = ("symmetric", "row")
PROPAGATIONS = ("step", "epoch")

# Node ids [n] -> their graph embeddings [n, dim], as a training step sees
# them (`GraphEmbedding.step_rows`).
GraphRows = Callable[[tf.Tensor], tf.Tensor]


@dataclasses.dataclass(frozen=True)
class Adjacency:
  """The normalised user-item adjacency, as a sparse matrix in canonical
  (row-major) order over `num_nodes` = users + items + 2 nodes.

  Attributes:
    indices: int64 [edges, 2] (row, column) of the non-zero entries.
    values: float32 [edges], w / sqrt(degree(row) * degree(column))
      (symmetric) or w / degree(row) (row).
    num_nodes: users (0 included) then items (0 included).
    connected: bool [num_nodes], whether the node has any edge.
  """
  indices: np.ndarray
  values: np.ndarray
  num_nodes: int
  connected: np.ndarray


def normalized_adjacency(user: np.ndarray, item: np.ndarray,
                         weight: np.ndarray, num_users: int,
                         num_items: int,
                         normalization: str = "symmetric") -> Adjacency:
  """D^-1/2 A D^-1/2 (or D^-1 A) of the bipartite graph of (user, item)
  interactions.

  A[u, num_users + 1 + i] = A[num_users + 1 + i, u] = the summed `weight`
  of u's interactions with i (generated interactions enter with their
  sample weight < 1); degrees are the weighted row sums. The symmetric
  normalisation is LightGCN's; the row normalisation makes a step the
  weighted mean of the neighbours' embeddings, so a hub item passes on as
  much as a rare one (no 1/sqrt(degree) damping of popular neighbours).

  Args:
    user: int [n] user indices (1..num_users).
    item: int [n] item indices (1..num_items).
    weight: float [n] sample weights.
    num_users: users, the unknown user 0 not counted.
    num_items: items, the padding item 0 not counted.
    normalization: "symmetric" (D^-1/2 A D^-1/2) or "row" (D^-1 A).

  Returns:
    The normalised `Adjacency`.
  """
  if normalization not in NORMALIZATIONS:
    raise ValueError(f"normalization must be one of {NORMALIZATIONS}.")
  interactions = sparse.csr_matrix(
      (np.asarray(weight, np.float64), (user, item)),
      shape=(num_users + 1, num_items + 1))  # duplicates are summed
  interactions.eliminate_zeros()
  graph = sparse.bmat([[None, interactions], [interactions.T, None]],
                      format="csr").tocoo()
  degree = np.asarray(graph.sum(axis=1)).ravel()
  if normalization == "row":
    values = graph.data / degree[graph.row]  # every row has an edge here
  else:
    scale = np.where(degree > 0, 1.0 / np.sqrt(np.maximum(degree, 1e-12)),
                     0.0)
    values = graph.data * scale[graph.row] * scale[graph.col]
  return Adjacency(
      indices=np.stack([graph.row, graph.col], axis=1).astype(np.int64),
      values=values.astype(np.float32), num_nodes=graph.shape[0],
      connected=degree > 0)


class _Untracked:
  """Holds a variable where Keras' tracking does not look."""

  def __init__(self, variable: tf.Variable):
    self.variable = variable


class GraphEmbedding(tf.keras.layers.Layer):
  """LightGCN propagation over one trainable table of user and item rows.

  `propagate` runs over the whole graph: `layers` steps of
  `tf.sparse.sparse_dense_matmul`, combined with the node's own row, and
  returns every node's graph embedding [num_nodes, dim]. A training step
  takes `step_rows` once and both towers gather their rows from it: with
  `propagation` "step" from one propagation of the step's weights, with
  "epoch" from the node's own row and the layers `refresh` kept (see the
  module docstring). Outside training the towers read `cached`, the
  propagation of the current weights that `refresh` stores (TwoStageModel
  refreshes it after training, and with "epoch" propagation also before
  every epoch): evaluation, serving signatures and exports then gather rows
  from a table, so TF Serving runs no graph op.

  Args:
    adjacency: the normalised adjacency of the training rows.
    num_users: users, the unknown user 0 not counted (items start at row
      num_users + 1).
    dim: the size of each embedding.
    layers: propagation steps K (0: the node's own row only).
    combination: "mean" of the K + 1 layer outputs, or "learned" softmax
      weights over them (initialised to the mean).
    edge_dropout: in training, the fraction of adjacency entries dropped
      at each step (the rest rescaled by 1 / keep, as LightGCN's code);
      "step" propagation only.
    propagation: "step" or "epoch" (`PROPAGATIONS`).

  >>> adjacency = normalized_adjacency(np.array([1, 2]), np.array([1, 1]),
  ...                                  np.ones(2), num_users=2, num_items=1)
  >>> GraphEmbedding(adjacency, num_users=2, dim=4).propagate().shape
  TensorShape([5, 4])
  """

  def __init__(self, adjacency: Adjacency, num_users: int, dim: int,
               layers: int = 2, combination: str = "mean",
               edge_dropout: float = 0.0, propagation: str = "step",
               **kwargs):
    super().__init__(**kwargs)
    if combination not in COMBINATIONS:
      raise ValueError(f"combination must be one of {COMBINATIONS}.")
    if propagation not in PROPAGATIONS:
      raise ValueError(f"propagation must be one of {PROPAGATIONS}.")
    if propagation == "epoch" and edge_dropout:
      raise ValueError("edge dropout needs propagation at every step.")
    self.propagation = propagation
    self.num_users, self.num_layers = num_users, layers
    self.combination, self.edge_dropout = combination, edge_dropout
    self.num_nodes = adjacency.num_nodes
    # Constants, not variables: the adjacency is rebuilt from the training
    # rows with the model, so checkpoints hold only what was learnt (and
    # the cache) and restore whichever rows size the model's tables.
    self.edge_indices = tf.constant(adjacency.indices)
    self.edge_values = tf.constant(adjacency.values)
    self.connected = tf.constant(
        adjacency.connected.astype(np.float32)[:, None])
    # "uniform", as tf.keras.layers.Embedding (the id tower's tables).
    self.table = self.add_weight("table", [self.num_nodes, dim],
                                 initializer="uniform")
    self.layer_logits = self.add_weight(
        "layer_logits", [layers + 1], initializer="zeros",
        trainable=combination == "learned")
    self.cached = self.add_weight("cached", [self.num_nodes, dim],
                                  initializer="zeros", trainable=False)
    # The K propagated layers of the last refresh ("epoch" propagation),
    # node-major so a step gathers its rows at once. Held out of Keras'
    # tracking: K copies of the table need not be in checkpoints, weights or
    # exports, since every epoch recomputes them before a step reads them.
    self._kept = (_Untracked(tf.Variable(
        tf.zeros([self.num_nodes, layers, dim]), trainable=False,
        name="kept_layers")) if propagation == "epoch" and layers else None)

  @property
  def kept_layers(self) -> Optional[tf.Variable]:
    """[num_nodes, K, dim]: the layers of the last `refresh` ("epoch"
    propagation with K > 0), else None."""
    return None if self._kept is None else self._kept.variable

  def layer_weights(self) -> tf.Tensor:
    """The K + 1 weights of the layer combination (summing to 1)."""
    return tf.nn.softmax(self.layer_logits)

  def _adjacency(self, training, seed=None) -> tf.sparse.SparseTensor:
    values = self.edge_values
    if training and self.edge_dropout:
      keep = 1.0 - self.edge_dropout
      noise = (tf.random.uniform(tf.shape(values)) if seed is None else
               tf.random.stateless_uniform(tf.shape(values), seed))
      kept = noise < keep
      values = tf.where(kept, values / keep, tf.zeros_like(values))
    return tf.sparse.SparseTensor(self.edge_indices, values,
                                  [self.num_nodes, self.num_nodes])

  def propagate(self, training=None, seed=None) -> tf.Tensor:
    """Every node's graph embedding [num_nodes, dim]: the layer
    combination of its own row and its K propagated rows; 0 for nodes with
    no edge. `training` applies the edge dropout, drawn from the stateless
    `seed` [2] if given."""
    layers = self._layers(training, seed)
    weights = self.layer_weights()
    combined = weights[0] * self.table
    for step, layer in enumerate(layers, start=1):
      combined += weights[step] * layer
    return combined * self.connected

  def _layers(self, training=None, seed=None) -> list:
    """The K propagated layers [num_nodes, dim] of the current table."""
    adjacency = self._adjacency(training, seed)
    layer, layers = tf.convert_to_tensor(self.table), []
    for _ in range(self.num_layers):
      layer = tf.sparse.sparse_dense_matmul(adjacency, layer)
      layers.append(layer)
    return layers

  def step_rows(self, training=None, seed=None) -> GraphRows:
    """What one training step gathers its nodes' graph embeddings from
    (`seed` as in `propagate`): one propagation of the whole graph
    ("step"), or the nodes' own rows and the layers of the last `refresh`
    ("epoch"; outside training, `cached`)."""
    if self.propagation == "step":
      table = self.propagate(training, seed)
      return lambda nodes: tf.gather(table, nodes)
    if training:
      return self._epoch_rows
    return lambda nodes: tf.gather(self.cached, nodes)

  def _epoch_rows(self, nodes: tf.Tensor) -> tf.Tensor:
    """`nodes`' graph embeddings from their own trainable rows and the
    layers kept by the last `refresh`."""
    weights = self.layer_weights()
    combined = weights[0] * tf.gather(self.table, nodes)
    if self.kept_layers is not None:
      kept = tf.gather(self.kept_layers, nodes)
      combined += tf.einsum("k,nkd->nd", weights[1:], kept)
    return combined * tf.gather(self.connected, nodes)

  def refresh(self) -> None:
    """Stores the propagation of the current weights in `cached` (and,
    with "epoch" propagation, its layers in `kept_layers`)."""
    if self.kept_layers is None:
      self.cached.assign(self.propagate(training=False))
      return
    self.kept_layers.assign(tf.stack(self._layers(training=False), axis=1))
    self.cached.assign(self._epoch_rows(tf.range(self.num_nodes)))

  def user_rows(self, user: tf.Tensor,
                rows: Optional[GraphRows] = None) -> tf.Tensor:
    """The users' graph embeddings from this step's `rows` (default:
    `cached`)."""
    return tf.gather(self.cached, user) if rows is None else rows(user)

  def item_rows(self, item: tf.Tensor,
                rows: Optional[GraphRows] = None) -> tf.Tensor:
    """The items' graph embeddings from this step's `rows` (default:
    `cached`)."""
    nodes = item + self.num_users + 1
    return tf.gather(self.cached, nodes) if rows is None else rows(nodes)
