"""MovieLens sources (recbole wheel, GroupLens folder, TFDS records),
feature typing and the synthetic generator."""
import zipfile

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from tfgan_rec import layers
from tfgan_rec.data import dataset, features, movielens, synthetic
from tfgan_rec.errors import InputError


def fake_recbole_wheel(path):
  prefix = movielens.RECBOLE_PREFIX
  with zipfile.ZipFile(path, "w") as wheel:
    wheel.writestr(f"{prefix}.inter",
                   "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                   "1\t10\t4\t100\n1\t20\t3\t101\n2\t10\t5\t102\n")
    wheel.writestr(f"{prefix}.user",
                   "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
                   "1\t24\tM\ttechnician\t85711\n2\t53\tF\tother\t94043\n")
    wheel.writestr(f"{prefix}.item",
                   "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
                   "10\tToy Story\t1995\tAnimation Children's Comedy\n"
                   "20\tGoldenEye\t1995\tAction Adventure Thriller\n"
                   "30\tNever Rated\t1996\tDrama\n")
  return str(path)


def test_recbole_wheel_cached_as_csv(tmp_path, monkeypatch):
  wheel = fake_recbole_wheel(tmp_path / "recbole-1.2.1-py3-none-any.whl")
  calls = []
  monkeypatch.setattr(movielens, "_download_recbole_wheel",
                      lambda target: calls.append(target) or wheel)
  cache = tmp_path / "cache"
  data = movielens.load_movielens(cache_dir=str(cache), try_tfds=False)
  assert "recbole" in data.source
  assert len(data.ratings) == 3
  assert data.items.loc["10", "genres"] == "Animation|Children's|Comedy"
  assert data.users.loc["2", "occupation"] == "other"
  assert "30" in data.items.index  # unrated items stay in the catalogue
  again = movielens.load_movielens(cache_dir=str(cache), try_tfds=False)
  assert len(calls) == 1 and len(again.ratings) == 3  # downloaded once


def test_grouplens_folder(tmp_path):
  (tmp_path / "u.data").write_text("1\t10\t4\t100\n2\t10\t3\t90\n")
  (tmp_path / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
  flags = ["0"] * 19
  flags[5] = "1"
  (tmp_path / "u.item").write_bytes(
      ("10|Toy Story (1995)|01-Jan-1995||http://x|" + "|".join(flags) +
       "\n").encode("latin-1"))
  data = movielens.load_movielens(data_dir=str(tmp_path), try_tfds=False)
  assert "GroupLens" in data.source
  assert data.items.loc["10"].to_dict() == {"title": "Toy Story",
                                            "genres": "Comedy", "year": "1995"}


def test_wrong_data_dir_is_an_error(tmp_path):
  with pytest.raises(InputError, match="--data-dir"):
    movielens.load_movielens(data_dir=str(tmp_path), try_tfds=False)


def test_tfds_records_converted():
  examples = [{"user_id": b"1", "movie_id": b"10", "user_rating": 4.0,
               "timestamp": 100, "raw_user_age": 24, "user_gender": True,
               "user_occupation_text": b"technician",
               "user_zip_code": b"85711", "movie_title": b"Toy Story (1995)",
               "movie_genres": np.array([3, 5])}]
  ratings, users, items = movielens.tfds_to_frames(examples)
  assert ratings.iloc[0].tolist() == ["1", "10", 4.0, 100]
  assert users.iloc[0].tolist() == ["1", 24, "M", "technician", "85711"]
  assert items.iloc[0].tolist() == ["10", "Toy Story", "Animation|Comedy",
                                    "1995"]


def test_feature_kinds_inferred():
  frame = pd.DataFrame({"age": ["24", "53", ""], "gender": ["M", "F", "M"],
                        "genres": ["a|b", "b", ""],
                        "title": ["the big film", "small film two", "x y"]},
                       index=["u1", "u2", "u3"])
  table = features.feature_table(frame, ["u1", "u2", "u3", "u4"])
  assert table.kinds == {"age": "numeric", "gender": "categorical",
                         "genres": "tokens", "title": "tokens"}
  # Row 0 is the unknown entity and u4 has no row: their text is "".
  assert table.columns["age"].tolist() == ["", "24", "53", "", ""]
  assert table.columns["genres"].tolist() == ["", "a|b", "b", "", ""]
  preprocessing = layers.FeaturePreprocessing.adapted(table)
  kinds = {name: f.kind for name, f in preprocessing.encoded_features.items()}
  assert kinds == {"age": "numeric", "age_bucket": "categorical",
                   "gender": "categorical", "genres": "tokens",
                   "title": "tokens"}
  encoded = {name: values.numpy() for name, values in preprocessing(
      {name: tf.constant(column) for name, column in table.columns.items()}
  ).items()}
  # u3's missing age is the mean (0), u4 unknown.
  assert encoded["age"][[0, 3, 4]].tolist() == [0.0, 0.0, 0.0]
  assert encoded["gender"][0] == 0 and encoded["gender"][4] == 0
  assert encoded["genres"].shape == (5, layers.MAX_TOKENS)
  assert (encoded["genres"][1] > 0).sum() == 2


def test_kinds_can_be_overridden():
  frame = pd.DataFrame({"zip": ["85711", "94043"]}, index=["u1", "u2"])
  table = features.feature_table(frame, ["u1", "u2"], {"zip": "categorical"})
  assert table.kinds == {"zip": "categorical"}


def test_encode_reserves_index_zero():
  data = synthetic.make_synthetic(synthetic.SyntheticConfig(2000, seed=1))
  encoded = dataset.encode(data)
  assert encoded.user.min() == 1 and encoded.item.min() >= 1
  assert encoded.user_ids[encoded.user[0] - 1] == data.ratings["user_id"][0]


def test_synthetic_is_seeded_sized_and_long_tailed():
  config = synthetic.SyntheticConfig(num_interactions=20_000, seed=4)
  first, second = synthetic.make_synthetic(config), synthetic.make_synthetic(config)
  pd.testing.assert_frame_equal(first.ratings, second.ratings)
  assert abs(len(first.ratings) - 20_000) < 200
  assert not first.ratings.duplicated(["user_id", "item_id"]).any()
  counts = first.ratings["item_id"].value_counts().to_numpy()
  assert counts[: len(counts) // 10].sum() > 0.3 * counts.sum()
  other = synthetic.make_synthetic(synthetic.SyntheticConfig(20_000, seed=5))
  assert not first.ratings.equals(other.ratings)
