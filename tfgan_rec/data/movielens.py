"""MovieLens 100K from the first source that works.

1. TensorFlow Datasets (`movielens/100k-ratings`), when already prepared in
   the TFDS data dir or when GroupLens can be reached to download it;
2. a local GroupLens `ml-100k` folder (`u.data`, `u.user`, `u.item`);
3. the copy of ML-100K inside the `recbole` wheel on PyPI, downloaded once
   with pip into the cache dir. Only its data files are read; recbole itself
   (which needs PyTorch) is never installed or imported.

All three give the same columns: ratings (user_id, item_id, rating,
timestamp), users (age, gender, occupation, zip_code) and items (title,
genres as `|`-separated, year).
"""
import glob
import logging
import os
import socket
import subprocess
import sys
import tempfile
import zipfile
from typing import Optional

import numpy as np
import pandas as pd

try:  # Optional: only a prepared TFDS copy is read through it.
  import tensorflow_datasets as tfds
except ImportError:  # pragma: no cover (installed by setup.cfg)
  tfds = None

from tfgan_rec.data import csv_logs
from tfgan_rec.data.dataset import Interactions
from tfgan_rec.errors import InputError

log = logging.getLogger(__name__)

GROUPLENS_HOST = "files.grouplens.org"
RECBOLE_WHEEL = "recbole==1.2.1"
RECBOLE_PREFIX = "recbole/dataset_example/ml-100k/ml-100k"
GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy",
          "Crime", "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror",
          "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War",
          "Western")


def default_cache_dir() -> str:
  return os.environ.get("TFGAN_REC_CACHE",
                        os.path.join(os.path.expanduser("~"), ".cache",
                                     "tfgan_rec"))


def _reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
  try:
    socket.create_connection((host, port), timeout=timeout).close()
    return True
  except OSError:
    return False


def from_csv_files(folder: str, source: str) -> Interactions:
  """Reads ratings.csv, users.csv and items.csv written by this module."""
  ratings = csv_logs.read_ratings(os.path.join(folder, "ratings.csv"))
  users = csv_logs.read_features(os.path.join(folder, "users.csv"), "user_id",
                                 "--users")
  items = csv_logs.read_features(os.path.join(folder, "items.csv"), "item_id",
                                 "--items")
  return Interactions(ratings, users, items, source)


def _write_csv_files(folder: str, ratings: pd.DataFrame, users: pd.DataFrame,
                     items: pd.DataFrame) -> None:
  """Writes the three tables atomically: a folder appears complete or not."""
  parent = os.path.dirname(os.path.abspath(folder))
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=".ml-100k-", dir=parent)
  ratings.to_csv(os.path.join(staging, "ratings.csv"), index=False)
  users.to_csv(os.path.join(staging, "users.csv"), index=False)
  items.to_csv(os.path.join(staging, "items.csv"), index=False)
  try:
    os.rename(staging, folder)
  except OSError:  # Another process finished first; its copy is identical.
    subprocess.run(["rm", "-rf", staging], check=False)


# --- TFDS -----------------------------------------------------------------


def tfds_to_frames(examples) -> tuple:
  """Converts `movielens/100k-ratings` examples (dicts of numpy values)."""
  rows = list(examples)
  text = lambda v: v.decode() if isinstance(v, bytes) else str(v)
  ratings = pd.DataFrame({
      "user_id": [text(r["user_id"]) for r in rows],
      "item_id": [text(r["movie_id"]) for r in rows],
      "rating": [float(r["user_rating"]) for r in rows],
      "timestamp": [int(r["timestamp"]) for r in rows]})
  users = pd.DataFrame({
      "user_id": ratings["user_id"],
      "age": [int(r["raw_user_age"]) for r in rows],
      "gender": ["M" if r["user_gender"] else "F" for r in rows],
      "occupation": [text(r["user_occupation_text"]) for r in rows],
      "zip_code": [text(r["user_zip_code"]) for r in rows],
  }).drop_duplicates("user_id")
  titles = [text(r["movie_title"]) for r in rows]
  items = pd.DataFrame({
      "item_id": ratings["item_id"],
      "title": [t.rsplit(" (", 1)[0] for t in titles],
      "genres": ["|".join(GENRES[g] for g in r["movie_genres"]) for r in rows],
      "year": [_year_from_title(t) for t in titles],
  }).drop_duplicates("item_id")
  return ratings, users, items


def _year_from_title(title: str) -> str:
  tail = title.rstrip(")").rsplit("(", 1)
  return tail[1] if len(tail) == 2 and tail[1].isdigit() else ""


def _load_tfds(data_dir: Optional[str]) -> Optional[pd.DataFrame]:
  try:
    builder = tfds.builder("movielens/100k-ratings", data_dir=data_dir)
    if not builder.is_prepared():
      if not _reachable(GROUPLENS_HOST):
        return None
      builder.download_and_prepare()
    return tfds.as_numpy(builder.as_dataset(split="train"))
  except Exception as err:  # pylint: disable=broad-except
    log.info("TFDS MovieLens unavailable: %s", err)
    return None


# --- GroupLens folder -------------------------------------------------------


def read_grouplens_folder(folder: str) -> tuple:
  """Reads u.data, u.user and u.item of a GroupLens ml-100k folder."""
  paths = {name: os.path.join(folder, name)
           for name in ("u.data", "u.user", "u.item")}
  for name, path in paths.items():
    if not os.path.isfile(path):
      raise InputError(f"{folder}: no '{name}' here; --data-dir must be the "
                       f"GroupLens ml-100k folder (u.data, u.user, u.item).")
  ratings = pd.read_csv(paths["u.data"], sep="\t", dtype=str, header=None,
                        names=["user_id", "item_id", "rating", "timestamp"])
  users = pd.read_csv(paths["u.user"], sep="|", dtype=str, header=None,
                      names=["user_id", "age", "gender", "occupation",
                             "zip_code"])
  raw_items = pd.read_csv(paths["u.item"], sep="|", dtype=str, header=None,
                          encoding="latin-1",
                          names=["item_id", "title", "date", "video", "url",
                                 *GENRES])
  flags = raw_items[list(GENRES)].to_numpy() == "1"
  items = pd.DataFrame({
      "item_id": raw_items["item_id"],
      "title": raw_items["title"].str.rsplit(" (", n=1).str[0],
      "genres": ["|".join(np.array(GENRES)[row]) for row in flags],
      "year": raw_items["date"].fillna("").str[-4:]})
  return ratings, users, items


# --- recbole wheel ----------------------------------------------------------


def read_recbole_wheel(wheel: str) -> tuple:
  """Reads ML-100K's atomic files out of a recbole wheel (never imported)."""
  with zipfile.ZipFile(wheel) as archive:
    read = lambda suffix: pd.read_csv(
        archive.open(f"{RECBOLE_PREFIX}.{suffix}"), sep="\t", dtype=str,
        keep_default_na=False)
    inter, user, item = read("inter"), read("user"), read("item")
  strip_types = lambda frame: frame.rename(
      columns=lambda c: c.split(":")[0])
  inter, user, item = map(strip_types, (inter, user, item))
  # recbole splits genres on spaces; its genre names contain no spaces.
  items = pd.DataFrame({
      "item_id": item["item_id"],
      "title": item["movie_title"],
      "genres": item["class"].str.split().str.join("|"),
      "year": item["release_year"]})
  return inter, user, items


def _download_recbole_wheel(target: str) -> str:
  cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
         "--disable-pip-version-check", "-d", target, RECBOLE_WHEEL]
  log.info("Downloading MovieLens 100K (inside the %s wheel) ...",
           RECBOLE_WHEEL)
  result = subprocess.run(cmd, capture_output=True, text=True, check=False)
  wheels = glob.glob(os.path.join(target, "recbole-*.whl"))
  if result.returncode != 0 or not wheels:
    reason = (result.stderr.strip().splitlines() or ["no wheel"])[-1]
    raise InputError(f"could not download MovieLens 100K ({reason}); pass "
                     f"--data-dir with a GroupLens ml-100k folder or use "
                     f"--ratings with your own CSV.")
  return wheels[0]


def _cached_from_recbole(cache_dir: str) -> str:
  folder = os.path.join(cache_dir, "ml-100k")
  if not os.path.isfile(os.path.join(folder, "items.csv")):
    with tempfile.TemporaryDirectory() as tmp:
      frames = read_recbole_wheel(_download_recbole_wheel(tmp))
    _write_csv_files(folder, *frames)
  return folder


def load_movielens(data_dir: Optional[str] = None,
                   cache_dir: Optional[str] = None,
                   try_tfds: bool = True) -> Interactions:
  """MovieLens 100K from TFDS, a local folder, or the recbole wheel copy."""
  cache_dir = cache_dir or default_cache_dir()
  if data_dir:
    if os.path.isfile(os.path.join(data_dir, "u.data")):
      frames = read_grouplens_folder(data_dir)
      return _interactions(frames, f"GroupLens ml-100k folder {data_dir}")
    if os.path.isfile(os.path.join(data_dir, "ratings.csv")):
      return from_csv_files(data_dir, f"ml-100k CSV folder {data_dir}")
  if try_tfds:
    examples = _load_tfds(data_dir)
    if examples is not None:
      return _interactions(tfds_to_frames(examples),
                           "TFDS movielens/100k-ratings")
  if data_dir:
    raise InputError(f"{data_dir}: neither a GroupLens ml-100k folder (u.data) "
                     f"nor a TFDS data dir holding movielens/100k-ratings; fix "
                     f"--data-dir or leave it out to use the cached copy.")
  folder = _cached_from_recbole(cache_dir)
  return from_csv_files(folder, f"ml-100k from the {RECBOLE_WHEEL} wheel "
                        f"(cached in {folder})")


def _interactions(frames: tuple, source: str) -> Interactions:
  with tempfile.TemporaryDirectory() as tmp:
    # Round-trip through CSV so every source gets the same validation.
    for name, frame in zip(("ratings", "users", "items"), frames):
      frame.to_csv(os.path.join(tmp, f"{name}.csv"), index=False)
    return from_csv_files(tmp, source)
