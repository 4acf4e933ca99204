"""The in-graph feature encoder on a small hand-made table."""
import numpy as np
import pytest
import tensorflow as tf

from tfgan_rec import layers
from tfgan_rec.data import features

TABLE = features.FeatureTable(
    columns={
        "age": np.array(["", "20", "40", "40", "20"], object),
        "gender": np.array(["", "F", "M", "F", "X"], object),
        "genres": np.array(["", "Drama|Comedy", "Drama", "comedy|Film-Noir",
                            ""], object),
        "title": np.array(["", "The Big Sleep", "Big Fish", "", ""], object)},
    kinds={"age": "numeric", "gender": "categorical", "genres": "tokens",
           "title": "tokens"})


def padded(ids):
  return ids + [0] * (layers.MAX_TOKENS - len(ids))


def test_feature_preprocessing_encodes_as_specified():
  preprocessing = layers.FeaturePreprocessing.adapted(TABLE)
  encoded = preprocessing({
      "age": tf.constant(["35", "", "-5", " 40 "]),
      "gender": tf.constant(["M", "", "?", "X"]),
      "genres": tf.constant(["Film-Noir|DRAMA|Western", "", "comedy", "x|"]),
      "title": tf.constant(["the BIG, big Fish!", "", "Sleep", "big " * 20])})
  encoded = {name: values.numpy().tolist() for name, values in encoded.items()}
  # Present ages 20, 40, 40, 20: mean 30, variance 100 ("" is missing: 0).
  assert encoded["age"] == pytest.approx([0.5, 0.0, -3.5, 1.0])
  # Deciles of (20, 20, 40, 40): 20, 24, 30, 36, 40; bucket 0 is missing.
  assert encoded["age_bucket"] == [4, 0, 1, 6]
  # Vocabulary F, M, X -> 1, 2, 3; "" and unknown values -> 0.
  assert encoded["gender"] == [2, 0, 0, 3]
  # comedy, drama, film-noir -> 1, 2, 3: split on "|", lower-cased,
  # unknown tokens dropped, 0-padded.
  assert encoded["genres"] == [padded([3, 2]), padded([]), padded([1]),
                               padded([])]
  # big, fish, sleep, the -> 1..4: words without punctuation, truncated to
  # MAX_TOKENS.
  assert encoded["title"] == [padded([4, 1, 1, 2]), padded([]), padded([3]),
                              [1] * layers.MAX_TOKENS]
  assert {name: (f.kind, f.vocabulary_size, f.length)
          for name, f in preprocessing.encoded_features.items()} == {
              "age": ("numeric", 0, 1), "age_bucket": ("categorical", 7, 1),
              "gender": ("categorical", 4, 1),
              "genres": ("tokens", 4, layers.MAX_TOKENS),
              "title": ("tokens", 5, layers.MAX_TOKENS)}


def test_a_non_number_fails_naming_the_feature():
  preprocessing = layers.FeaturePreprocessing.adapted(TABLE)
  request = {name: tf.constant([""]) for name in TABLE.columns}
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match='age must be a number, or "" if unknown'):
    preprocessing(dict(request, age=tf.constant(["old"])))


def test_large_token_vocabularies_drop_tokens_seen_once():
  words = [f"w{i}" for i in range(1001)] + ["common", "common"]
  table = features.FeatureTable({"tags": np.array([""] + words, object)},
                                {"tags": "tokens"})
  preprocessing = layers.FeaturePreprocessing.adapted(table)
  assert preprocessing.vocabularies["tags"] == ["common"]


def test_feature_encoder_embeds_raw_and_preprocessed_alike():
  preprocessing = layers.FeaturePreprocessing.adapted(TABLE)
  encoder = layers.FeatureEncoder(preprocessing, dim=3)
  raw = {name: tf.constant(column) for name, column in TABLE.columns.items()}
  vectors = encoder(raw)
  # age, then 3 per embedded feature (age_bucket, gender, genres, title).
  assert vectors.shape == (5, 13)
  np.testing.assert_array_equal(
      vectors.numpy(), encoder(preprocessing(raw), preprocessed=True).numpy())
  assert not preprocessing.trainable_weights
