"""Reads a user's own interaction logs and feature tables from CSV.

Every problem is reported as an `InputError` whose one-line message names the
file, the row (1-based line number in the file, header = line 1) and the field,
and says what to do. Files are only ever read.
"""
import difflib
import logging
import os
from typing import List, Optional

import numpy as np
import pandas as pd

from tfgan_rec.errors import InputError

log = logging.getLogger(__name__)

RATINGS_REQUIRED = ("user_id", "item_id")
RATINGS_OPTIONAL = ("rating", "timestamp")


def _read_table(path: str, what: str, flag: str) -> pd.DataFrame:
  """Reads a CSV with every cell as a string, so IDs like '007' survive."""
  if not os.path.isfile(path):
    raise InputError(f"{what} file '{path}' not found; check the {flag} path.")
  try:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False,
                        skipinitialspace=True)
  except pd.errors.EmptyDataError:
    raise InputError(f"{path}: the file is empty; it needs a header row and "
                     f"at least one data row.") from None
  except (pd.errors.ParserError, UnicodeDecodeError) as err:
    detail = str(err).strip().splitlines()[-1]
    raise InputError(f"{path}: not a readable CSV ({detail}); save it as "
                     f"UTF-8 comma-separated text.") from None
  frame.columns = [str(c).strip() for c in frame.columns]
  if frame.empty:
    raise InputError(f"{path}: has a header but no data rows; add rows below "
                     f"the header.")
  return frame


def _require_columns(frame: pd.DataFrame, path: str, required) -> None:
  for column in required:
    if column in frame.columns:
      continue
    found = ", ".join(frame.columns)
    close = difflib.get_close_matches(column, frame.columns, n=1, cutoff=0.6)
    hint = (f"rename column '{close[0]}' to '{column}'" if close else
            f"add a '{column}' column")
    raise InputError(f"{path}: missing required column '{column}' (found: "
                     f"{found}); {hint}.")


def _line(row_position: int) -> int:
  """File line of a data row: the header is line 1."""
  return int(row_position) + 2


def _check_ids(frame: pd.DataFrame, path: str, column: str) -> None:
  empty = np.flatnonzero(frame[column].str.strip().eq("").to_numpy())
  if empty.size:
    raise InputError(f"{path} line {_line(empty[0])}: field '{column}' is "
                     f"empty ({empty.size} such rows); fill it in or remove "
                     f"the row.")
  frame[column] = frame[column].str.strip()


def _to_float(frame: pd.DataFrame, path: str, column: str,
              what: str) -> np.ndarray:
  text = frame[column].str.strip()
  values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
  bad = np.flatnonzero(~np.isfinite(values))
  if bad.size:
    shown = text.iloc[bad[0]]
    problem = "is empty" if shown == "" else f"'{shown}' is not a {what}"
    raise InputError(f"{path} line {_line(bad[0])}: field '{column}' {problem} "
                     f"({bad.size} such rows); fix or remove those rows.")
  return values


def _parse_timestamps(frame: pd.DataFrame, path: str) -> np.ndarray:
  """Numeric (epoch) timestamps, or ISO-8601 dates in epoch seconds."""
  text = frame["timestamp"].str.strip()
  numeric = pd.to_numeric(text, errors="coerce")
  if numeric.notna().mean() >= 0.5:  # Mostly epoch numbers: the rest are bad.
    return _to_float(frame, path, "timestamp", "number")
  dates = pd.to_datetime(text, errors="coerce", utc=True, format="ISO8601")
  bad = np.flatnonzero(dates.isna().to_numpy())
  if bad.size:
    raise InputError(f"{path} line {_line(bad[0])}: field 'timestamp' value "
                     f"'{text.iloc[bad[0]]}' is neither a number nor an "
                     f"ISO-8601 date ({bad.size} such rows); fix those rows.")
  return (dates - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy()


def read_ratings(path: str) -> pd.DataFrame:
  """Reads `user_id,item_id[,rating][,timestamp]` logs.

  Returns a frame with string `user_id`, `item_id` and float `rating`,
  `timestamp` (rating 1.0 when absent: implicit feedback; timestamp = file
  order when absent). Repeated (user, item) pairs keep their latest row.

  >>> import tempfile
  >>> with tempfile.NamedTemporaryFile("w", suffix=".csv") as csv_file:
  ...   _ = csv_file.write("user_id,item_id\\nu1,i7\\n"); csv_file.flush()
  ...   read_ratings(csv_file.name)[["user_id", "item_id", "rating"]]
    user_id item_id  rating
  0      u1      i7     1.0
  """
  frame = _read_table(path, "ratings", "--ratings")
  _require_columns(frame, path, RATINGS_REQUIRED)
  for column in RATINGS_REQUIRED:
    _check_ids(frame, path, column)
  out = pd.DataFrame({"user_id": frame["user_id"], "item_id": frame["item_id"]})
  if "rating" in frame.columns:
    out["rating"] = _to_float(frame, path, "rating", "number")
  else:
    log.warning("%s: no 'rating' column; treating every row as implicit "
                "feedback with rating 1.0.", path)
    out["rating"] = 1.0
  if "timestamp" in frame.columns:
    out["timestamp"] = _parse_timestamps(frame, path)
  else:
    log.warning("%s: no 'timestamp' column; file order is used as time for "
                "the temporal split.", path)
    out["timestamp"] = np.arange(len(out), dtype=np.float64)
  return deduplicate(out, path)


def deduplicate(ratings: pd.DataFrame, path: str) -> pd.DataFrame:
  """Keeps the latest row of each (user_id, item_id) pair, with a warning."""
  order = np.lexsort((np.arange(len(ratings)), ratings["timestamp"].to_numpy()))
  ordered = ratings.iloc[order]
  keep = ~ordered.duplicated(["user_id", "item_id"], keep="last")
  dropped = int((~keep).sum())
  if dropped:
    log.warning("%s: %d repeated (user_id, item_id) rows; kept the latest of "
                "each.", path, dropped)
  return ordered[keep.to_numpy()].reset_index(drop=True)


def read_features(path: str, id_column: str, flag: str) -> pd.DataFrame:
  """Reads a feature table: an ID column plus any feature columns (as text).

  Returns a frame indexed by the ID; feature typing happens in `features`.
  """
  frame = _read_table(path, id_column.replace("_id", "") + " features", flag)
  _require_columns(frame, path, (id_column,))
  _check_ids(frame, path, id_column)
  repeated = np.flatnonzero(frame[id_column].duplicated().to_numpy())
  if repeated.size:
    raise InputError(f"{path} line {_line(repeated[0])}: {id_column} "
                     f"'{frame[id_column].iloc[repeated[0]]}' appears more "
                     f"than "
                     f"once ({repeated.size} repeated rows); keep one row per "
                     f"{id_column}.")
  if len(frame.columns) == 1:
    log.warning("%s: only the '%s' column; no features to use.", path,
                id_column)
  return frame.set_index(id_column)


def check_feature_ids(features: Optional[pd.DataFrame], ids: pd.Series,
                      path: str, id_column: str, kind: str) -> List[str]:
  """Reports how the feature table's IDs relate to the IDs in the ratings.

  Rows for IDs without ratings are kept (cold items for the catalogue, new
  users known only by features); IDs in the ratings without a feature row get
  missing features. Returns the feature-only IDs.
  """
  if features is None:
    return []
  rated = pd.Index(ids.unique())
  extra = features.index.difference(rated)
  missing = rated.difference(features.index)
  if len(extra):
    log.info("%s: %d %s IDs have features but no ratings; kept as cold %ss.",
             path, len(extra), id_column, kind)
  if len(missing):
    log.warning("%s: %d %s IDs in the ratings have no feature row (e.g. '%s'); "
                "their features are treated as missing.", path, len(missing),
                id_column, missing[0])
  if len(extra) == len(features.index):
    raise InputError(f"{path}: none of its {id_column} values appear in the "
                     f"ratings (e.g. '{features.index[0]}'); check that both "
                     f"files use the same IDs.")
  return list(extra)
