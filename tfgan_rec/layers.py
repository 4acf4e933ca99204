"""Keras layers shared by the recommender's towers and the GANs.

Raw feature text goes through one path everywhere: `FeaturePreprocessing`
encodes it in the graph (vocabulary lookups, normalisation, deciles, token
bags) and `FeatureEncoder` embeds the result into one vector. Training,
evaluation, the GANs' conditions and the exported serving signatures all call
the same layers, so the encoding a model was trained with is the one it
serves with. `PooledEmbedding` averages bags of ids; `mlp` stacks dense
layers.
"""
import collections
import dataclasses
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from tfgan_rec.data import features as features_lib
from tfgan_rec.data.features import CATEGORICAL, NUMERIC, TOKENS

NUM_BUCKETS = 10
MAX_TOKENS = 16
MAX_VOCAB = 50_000
# Token columns with more distinct tokens than this keep only the tokens seen
# at least twice.
RARE_TOKENS_ABOVE = 1000
_NUMBER = features_lib.NUMBER_PATTERN
_WORD_SEPARATORS = "[^a-z0-9']+"


@dataclasses.dataclass(frozen=True)
class EncodedFeature:
  """One output of `FeaturePreprocessing`: its kind, the number of distinct
  ids including 0 (missing/unknown; 0 for numbers) and values per row."""
  kind: str
  vocabulary_size: int = 0
  length: int = 1


@dataclasses.dataclass(frozen=True)
class NumberStatistics:
  """Of one numeric column's present values: mean and variance (as
  `Normalization.adapt` computes them; a constant column gets variance 1)
  and the decile boundaries of its buckets."""
  mean: float
  variance: float
  boundaries: Sequence[float]


def split_tokens(text: tf.Tensor) -> tf.RaggedTensor:
  """Per value, its lower-cased tokens: split on "|" when the value holds
  one (e.g. genres), else into words [a-z0-9']+. No token is empty."""
  lower = tf.strings.lower(tf.strings.strip(text), encoding="utf-8")
  words = tf.strings.regex_replace(lower, _WORD_SEPARATORS, "|")
  joined = tf.where(tf.strings.regex_full_match(lower, r".*\|.*"), lower,
                    words)
  tokens = tf.strings.strip(tf.strings.split(joined, "|"))
  return tf.ragged.boolean_mask(tokens, tokens != "")


def parse_numbers(name: str, text: tf.Tensor) -> tf.Tensor:
  """float32 values of `text`, NaN for ""; anything else that is not a
  number fails with an InvalidArgument error naming the feature."""
  text = tf.strings.strip(text)
  is_number = tf.strings.regex_full_match(text, _NUMBER)
  check = tf.debugging.assert_equal(
      tf.reduce_all(is_number | (text == "")), True,
      message=f"{name} must be a number, or \"\" if unknown")
  with tf.control_dependencies([check]):
    return tf.strings.to_number(tf.where(text == "", "nan", text), tf.float32)


def _vocabulary(counts: collections.Counter, min_count: int) -> List[str]:
  """The most common values (at most MAX_VOCAB, each seen `min_count`
  times), sorted; entry i gets id i + 1."""
  kept = [v for v, c in counts.most_common(MAX_VOCAB) if c >= min_count]
  return sorted(kept)


def _token_vocabulary(values: np.ndarray) -> List[str]:
  tokens = split_tokens(tf.constant(values, tf.string)).flat_values.numpy()
  counts = collections.Counter(t.decode() for t in tokens)
  return _vocabulary(counts,
                     min_count=2 if len(counts) > RARE_TOKENS_ABOVE else 1)


def _number_statistics(name: str, values: np.ndarray) -> NumberStatistics:
  numbers = parse_numbers(name, tf.constant(values, tf.string)).numpy()
  present = numbers[~np.isnan(numbers)].astype(np.float64)
  if not len(present):
    return NumberStatistics(0.0, 1.0, ())
  boundaries = np.unique(np.quantile(
      present, np.linspace(0, 1, NUM_BUCKETS + 1)[1:-1]))
  return NumberStatistics(float(present.mean()), float(present.var() or 1.0),
                          tuple(float(b) for b in boundaries))


class FeaturePreprocessing(tf.keras.layers.Layer):
  """Encodes raw feature strings into ids and numbers, in the graph.

  Built from a `FeatureTable` by `adapted`, which learns from its columns
  what Keras preprocessing layers need, by the column's kind:
  - categorical: a `StringLookup` over the most common values (at most
    50,000); vocabulary entry i is id i + 1, "" and unknown values are 0;
  - numeric: the value `Normalization`-ed by the present values' mean and
    variance (0.0 when missing, ""), plus `<name>_bucket`, its decile from
    a `Discretization` (1..len(boundaries) + 1; 0 when missing). Any other
    text fails with an InvalidArgument error naming the feature;
  - tokens: the value lower-cased and split (see `split_tokens`), each
    token looked up (vocabulary as for categorical, but only tokens seen
    twice when a column has over 1,000 distinct ones), unknown tokens
    dropped, the first MAX_TOKENS kept and 0-padded to MAX_TOKENS.

  Args:
    kinds: the kind of each raw column, as in `FeatureTable.kinds`.
    vocabularies: each categorical and token column's vocabulary.
    numbers: each numeric column's `NumberStatistics`.

  Call it on {name: string [batch]} for every raw column; it returns
  {name: int32 [batch] | float32 [batch] | int32 [batch, MAX_TOKENS]}, one
  entry per `encoded_features` entry.

  >>> table = features_lib.FeatureTable(
  ...     columns={"age": np.array(["", "20", "40"], object),
  ...              "genres": np.array(["", "Drama|Comedy", "Drama"], object)},
  ...     kinds={"age": "numeric", "genres": "tokens"})
  >>> preprocessing = FeaturePreprocessing.adapted(table)
  >>> encoded = preprocessing({"age": tf.constant(["40", ""]),
  ...                          "genres": tf.constant(["drama", "Western"])})
  >>> encoded["age"].numpy().tolist(), encoded["age_bucket"].numpy().tolist()
  ([1.0, 0.0], [10, 0])
  >>> encoded["genres"].numpy()[:, :3].tolist()
  [[2, 0, 0], [0, 0, 0]]
  """

  def __init__(self, kinds: Mapping[str, str],
               vocabularies: Optional[Mapping[str, Sequence[str]]] = None,
               numbers: Optional[Mapping[str, NumberStatistics]] = None,
               **kwargs):
    kwargs.setdefault("trainable", False)
    super().__init__(**kwargs)
    self.kinds = dict(kinds)
    self.vocabularies = {name: list(vocabulary) for name, vocabulary
                         in (vocabularies or {}).items()}
    self.numbers = dict(numbers or {})
    # num_oov_indices=1: "" and unknown values are 0, vocabulary[i] is i+1.
    self.lookups = {name: tf.keras.layers.StringLookup(
        vocabulary=vocabulary, num_oov_indices=1, name=f"{name}_lookup")
                    for name, vocabulary in self.vocabularies.items()
                    if vocabulary}
    self.normalizations = {name: tf.keras.layers.Normalization(
        axis=None, mean=stats.mean, variance=stats.variance,
        name=f"{name}_normalization") for name, stats in self.numbers.items()}
    self.discretizations = {name: tf.keras.layers.Discretization(
        bin_boundaries=list(stats.boundaries), name=f"{name}_discretization")
                            for name, stats in self.numbers.items()}

  @classmethod
  def adapted(cls, table: features_lib.FeatureTable,
              **kwargs) -> "FeaturePreprocessing":
    """The preprocessing of `table`'s columns, learnt from their values
    (row 0, the unknown entity, is left out)."""
    vocabularies, numbers = {}, {}
    for name, kind in table.kinds.items():
      values = np.asarray(table.columns[name][1:], dtype=object)
      if kind == NUMERIC:
        numbers[name] = _number_statistics(name, values)
      elif kind == TOKENS:
        vocabularies[name] = _token_vocabulary(values)
      else:
        vocabularies[name] = _vocabulary(
            collections.Counter(v for v in values if v), min_count=1)
    return cls(table.kinds, vocabularies, numbers, **kwargs)

  @property
  def encoded_features(self) -> Dict[str, EncodedFeature]:
    """What `call` returns, by name, in a fixed order."""
    encoded = {}
    for name, kind in self.kinds.items():
      if kind == NUMERIC:
        encoded[name] = EncodedFeature(NUMERIC)
        encoded[f"{name}_bucket"] = EncodedFeature(
            CATEGORICAL, len(self.numbers[name].boundaries) + 2)
      else:
        encoded[name] = EncodedFeature(
            kind, len(self.vocabularies[name]) + 1,
            MAX_TOKENS if kind == TOKENS else 1)
    return encoded

  def call(self, raw: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    encoded = {}
    for name, kind in self.kinds.items():
      text = tf.strings.strip(raw[name])
      if kind == NUMERIC:
        number = parse_numbers(name, text)
        missing = tf.math.is_nan(number)
        encoded[name] = tf.where(missing, 0.0,
                                 self.normalizations[name](number))
        bucket = tf.cast(self.discretizations[name](number), tf.int32) + 1
        encoded[f"{name}_bucket"] = tf.where(missing, 0, bucket)
      elif kind == TOKENS:
        encoded[name] = self._token_ids(name, text)
      else:
        encoded[name] = self._ids(name, text)
    return encoded

  def _ids(self, name: str, text):
    if name not in self.lookups:  # an empty vocabulary: everything unknown
      return tf.zeros(tf.shape(text), tf.int32)
    return tf.cast(self.lookups[name](text), tf.int32)

  def _token_ids(self, name: str, text: tf.Tensor) -> tf.Tensor:
    ids = tf.ragged.map_flat_values(self._ids, name, split_tokens(text))
    ids = tf.ragged.boolean_mask(ids, ids > 0)
    ids = ids.to_tensor(default_value=0)[:, :MAX_TOKENS]
    return tf.pad(ids, [[0, 0], [0, MAX_TOKENS - tf.shape(ids)[1]]])

  def get_config(self):
    return {**super().get_config(), "kinds": self.kinds,
            "vocabularies": self.vocabularies,
            "numbers": {name: dataclasses.asdict(stats)
                        for name, stats in self.numbers.items()}}

  @classmethod
  def from_config(cls, config):
    numbers = {name: NumberStatistics(**stats)
               for name, stats in config.pop("numbers").items()}
    return cls(numbers=numbers, **config)


class FeatureEncoder(tf.keras.layers.Layer):
  """Raw features -> one vector: preprocessed, embedded, concatenated.

  Categorical features (numeric buckets included) get an embedding, token
  bags the mean embedding of their tokens, numeric features are their
  normalised value. The `FeaturePreprocessing` is passed in, not built, so
  layers that encode the same entity share one (it has no trainable
  weights).

  Args:
    preprocessing: encodes the raw strings.
    dim: the size of each embedding.

  Call it on {name: string [batch]} (or, with `preprocessed=True`, on what
  `preprocessing` returned for them); it returns float32 [batch, width].

  >>> table = features_lib.FeatureTable(
  ...     columns={"age": np.array(["", "20", "40"], object),
  ...              "gender": np.array(["", "F", "M"], object)},
  ...     kinds={"age": "numeric", "gender": "categorical"})
  >>> encoder = FeatureEncoder(FeaturePreprocessing.adapted(table), dim=4)
  >>> encoder({"age": tf.constant(["31", ""]),
  ...          "gender": tf.constant(["F", "?"])}).shape  # age, bucket, gender
  TensorShape([2, 9])
  """

  def __init__(self, preprocessing: FeaturePreprocessing, dim: int,
               **kwargs):
    super().__init__(**kwargs)
    self.preprocessing = preprocessing
    self.encoded_features = preprocessing.encoded_features
    self.embeddings = {name: _feature_embedding(name, feature, dim)
                       for name, feature in self.encoded_features.items()
                       if feature.kind != NUMERIC}

  @property
  def has_features(self) -> bool:
    return bool(self.encoded_features)

  def call(self, features: Mapping[str, tf.Tensor],
           preprocessed: bool = False) -> tf.Tensor:
    encoded = features if preprocessed else self.preprocessing(features)
    parts = []
    for name, feature in self.encoded_features.items():
      if feature.kind == NUMERIC:
        parts.append(tf.cast(encoded[name], tf.float32)[:, None])
      else:
        parts.append(self.embeddings[name](encoded[name]))
    return tf.concat(parts, axis=-1)


def _feature_embedding(name: str, feature: EncodedFeature,
                       dim: int) -> tf.keras.layers.Layer:
  """One vector per categorical value; the mean vector of a token bag."""
  layer = (tf.keras.layers.Embedding if feature.kind == CATEGORICAL
           else PooledEmbedding)
  return layer(feature.vocabulary_size, dim, name=f"{name}_embedding")


class PooledEmbedding(tf.keras.layers.Layer):
  """Per row, the mean embedding of a bag of ids (0 pads; an empty bag is 0).

  Computed as a sparse [rows, vocabulary] x [vocabulary, dim] matmul, whose
  gradient is one dense [vocabulary, dim] tensor. Gathering [rows, length,
  dim] embeddings instead gives a gradient slice per position (51,200 for a
  batch of 512 100-item histories) that the optimizer has to sum by id every
  step, which took a fifth of a training step. The dense gradient costs
  vocabulary x dim per step instead: small for token vocabularies and
  catalogues of tens of thousands of items (19K at 10M interactions), not
  for catalogues of millions.

  Args:
    vocabulary_size: the number of ids, 0 (padding) included.
    dim: the size of each embedding.

  >>> PooledEmbedding(10, 4)(tf.constant([[1, 2, 0], [0, 0, 0]])).shape
  TensorShape([2, 4])
  """

  def __init__(self, vocabulary_size: int, dim: int, **kwargs):
    super().__init__(**kwargs)
    self.vocabulary_size, self.dim = vocabulary_size, dim

  def build(self, input_shape):
    # "uniform", as tf.keras.layers.Embedding.
    self.embeddings = self.add_weight(
        "embeddings", [self.vocabulary_size, self.dim], initializer="uniform")
    super().build(input_shape)

  def call(self, ids: tf.Tensor) -> tf.Tensor:
    ids = tf.cast(ids, tf.int64)
    present = ids > 0
    positions = tf.where(present)
    counts = tf.reduce_sum(tf.cast(present, tf.float32), axis=1)
    bags = tf.sparse.SparseTensor(
        tf.stack([positions[:, 0], tf.gather_nd(ids, positions)], axis=1),
        tf.gather(1.0 / tf.maximum(counts, 1.0), positions[:, 0]),
        tf.stack([tf.shape(ids, out_type=tf.int64)[0],
                  tf.constant(self.vocabulary_size, tf.int64)]))
    return tf.sparse.sparse_dense_matmul(bags, self.embeddings)


def mlp(units: Sequence[int], output_dim: int, name: str,
        dropout: float = 0.0) -> tf.keras.Sequential:
  """Dense GELU layers of `units` (each followed by `dropout`, if any), then
  a linear layer of `output_dim`."""
  layers: List[tf.keras.layers.Layer] = []
  for width in units:
    layers.append(tf.keras.layers.Dense(width, activation="gelu"))
    if dropout:
      layers.append(tf.keras.layers.Dropout(dropout))
  layers.append(tf.keras.layers.Dense(output_dim))
  return tf.keras.Sequential(layers, name=name)
