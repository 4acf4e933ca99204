"""Types user and item feature columns and aligns them with the entity index.

A column is typed from its values:
- numeric (every non-empty value parses as a number): a z-normalised float
  plus a categorical feature of its deciles (``<name>_bucket``);
- multi-valued (some value contains ``|``, e.g. genres): a bag of tokens;
- text (values average two or more words, e.g. titles): a bag of lower-cased
  word tokens;
- anything else: categorical, one vocabulary entry per value.

Tables keep the raw text, one row per entity plus row 0 for "unknown" (all
""); `tfgan_rec.layers.FeaturePreprocessing` encodes them, in the graph, the
same way for training and serving. There, index 0 is the out-of-vocabulary /
missing value of every categorical and token feature, and numeric features
are 0 (the mean) when missing.
"""
import dataclasses
from typing import Dict, Optional, Sequence

import numpy as np
import pandas as pd

from tfgan_rec.errors import InputError

NUMERIC, CATEGORICAL, TOKENS = "numeric", "categorical", "tokens"


@dataclasses.dataclass
class FeatureTable:
  """Raw feature columns of one entity type, aligned with its index.

  `columns[name][i]` is the text of entity i (row 0: the unknown entity, "";
  entities without a value: ""), `kinds[name]` how the column is encoded.
  """
  columns: Dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  kinds: Dict[str, str] = dataclasses.field(default_factory=dict)


# What counts as a number, here and in the encoder's parser (layers.py).
NUMBER_PATTERN = r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?"


def _is_numeric(values: pd.Series) -> bool:
  present = values[values != ""]
  return len(present) > 0 and present.str.fullmatch(NUMBER_PATTERN).all()


def infer_kind(values: pd.Series) -> str:
  """Picks how a text column is encoded (see module docstring)."""
  if _is_numeric(values):
    return NUMERIC
  present = values[values != ""]
  if present.str.contains("|", regex=False).any():
    return TOKENS
  if present.str.split().str.len().mean() >= 2:
    return TOKENS
  return CATEGORICAL


def feature_table(frame: Optional[pd.DataFrame], ids: Sequence[str],
                  kinds: Optional[Dict[str, str]] = None) -> FeatureTable:
  """The raw columns of `frame` (indexed by ID, text cells) for entities `ids`.

  `kinds` overrides the inferred kind of named columns. IDs without a row get
  missing values (""), and so does row 0, the unknown entity. Example:

  >>> users = pd.DataFrame({"age": ["24", "53"]}, index=["u1", "u2"])
  >>> table = feature_table(users, ["u1", "u2", "u3"])
  >>> table.kinds, table.columns["age"].tolist()
  ({'age': 'numeric'}, ['', '24', '53', ''])
  """
  table = FeatureTable()
  if frame is None or frame.shape[1] == 0:
    return table
  aligned = frame.reindex(list(ids)).fillna("")
  for name in aligned.columns:
    values = aligned[name].astype(str).str.strip()
    table.kinds[name] = (kinds or {}).get(name) or infer_kind(values)
    if table.kinds[name] == NUMERIC and not _is_numeric(values):
      raise InputError(f"feature '{name}' is set numeric (feature_kinds) but "
                       f"holds values that are not numbers; fix them or "
                       f"drop the override.")
    table.columns[name] = np.concatenate(
        [[""], values.to_numpy(dtype=object)]).astype(object)
  return table
