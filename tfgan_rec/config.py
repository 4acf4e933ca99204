"""Run configuration as dataclasses, filled by the CLI, YAML files and the tuner.

Precedence: dataclass defaults < `--config FILE.yaml` < command-line flags.
The YAML file has one mapping per section (data, model, train, eval, export),
the same shape `to_dict` writes to each run's `config.yaml`.
"""
import dataclasses
from typing import Any, Dict, Optional, Tuple

import yaml

from tfgan_rec.errors import InputError


@dataclasses.dataclass
class DataConfig:
  """Where the interactions come from and how they are split."""
  dataset: str = "movielens"  # movielens | csv | synthetic
  ratings: Optional[str] = None
  users: Optional[str] = None
  items: Optional[str] = None
  data_dir: Optional[str] = None
  cache_dir: Optional[str] = None
  synthetic_interactions: int = 20_000
  test_fraction: float = 0.2
  validation_fraction: float = 0.2
  sparse_users: float = 0.3
  sparse_keep: int = 5
  cold_items: float = 0.0
  feature_kinds: Dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class ModelConfig:
  """Architecture of the two-stage TFRS model."""
  embedding_dim: int = 64
  feature_dim: int = 16
  query_hidden: Tuple[int, ...] = (128,)
  candidate_hidden: Tuple[int, ...] = (128,)
  ranking_hidden: Tuple[int, ...] = (64,)
  history_length: int = 100
  history_dropout: float = 0.2
  generated_in_history: bool = False
  item_id_dropout: float = 0.1
  temperature: float = 0.1
  extra_negatives: int = 2048
  logq_correction: float = 1.0
  retrieval_weight: float = 1.0
  ranking_weight: float = 0.1


@dataclasses.dataclass
class TrainConfig:
  """Optimisation and early stopping."""
  epochs: int = 40
  batch_size: int = 512
  learning_rate: float = 0.003
  patience: int = 4
  refit: bool = True


@dataclasses.dataclass
class GANConfig:
  """The conditional GAN over users' interaction vectors and its training."""
  noise_dim: int = 32
  hidden: Tuple[int, ...] = (256,)
  feature_dim: int = 8
  g_learning_rate: float = 1e-3
  d_learning_rate: float = 1e-3
  d_steps: int = 1
  loss: str = "minimax"  # minimax | wasserstein
  gp_weight: float = 10.0
  history_dropout: float = 0.5
  negative_rate: float = 0.1
  zr_weight: float = 1.0
  reconstruction_weight: float = 5.0
  steps: int = 1000
  batch_size: int = 128
  clip_norm: float = 5.0
  checkpoint_every: int = 250
  log_every: int = 50
  divergence_threshold: float = 1e4


@dataclasses.dataclass
class AugmentConfig:
  """Which users get generated interactions, how many, and their weight."""
  threshold: int = 20
  items_per_user: int = 5
  weight: float = 0.1
  samples: int = 4


@dataclasses.dataclass
class EvalConfig:
  k: int = 20


@dataclasses.dataclass
class ExportConfig:
  export_dir: str = "export"
  top_k: int = 20
  keep_versions: int = 3


@dataclasses.dataclass
class RunConfig:
  """Everything one `python -m tfgan_rec.train` run needs."""
  data: DataConfig = dataclasses.field(default_factory=DataConfig)
  model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
  train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
  eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
  export: ExportConfig = dataclasses.field(default_factory=ExportConfig)
  gan: GANConfig = dataclasses.field(default_factory=GANConfig)
  augmentation: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
  augment: str = "none"  # none | gan
  seed: int = 42
  run_dir: Optional[str] = None
  logdir: Optional[str] = None

  def to_dict(self) -> Dict[str, Any]:
    return _plain(dataclasses.asdict(self))

  def check(self) -> "RunConfig":
    """Raises InputError naming the first setting out of range."""
    ranges = [
        ("data.test_fraction", self.data.test_fraction, 0.0, 0.9),
        ("data.validation_fraction", self.data.validation_fraction, 0.0, 0.9),
        ("data.sparse_users", self.data.sparse_users, 0.0, 1.0),
        ("data.cold_items", self.data.cold_items, 0.0, 0.9),
        ("model.temperature", self.model.temperature, 1e-4, 100.0),
        ("train.learning_rate", self.train.learning_rate, 1e-7, 10.0),
    ]
    ranges += [(name, value, 1, 10**9) for name, value in (
        ("data.sparse_keep", self.data.sparse_keep),
        ("data.synthetic_interactions", self.data.synthetic_interactions),
        ("model.embedding_dim", self.model.embedding_dim),
        ("model.history_length", self.model.history_length),
        ("train.epochs", self.train.epochs),
        ("train.batch_size", self.train.batch_size),
        ("train.patience", self.train.patience),
        ("eval.k", self.eval.k), ("export.top_k", self.export.top_k),
        ("export.keep_versions", self.export.keep_versions))]
    for name, value, low, high in ranges:
      if not low <= value <= high:
        raise InputError(f"setting {name}={value} is out of range; use a "
                         f"value from {low:g} to {high:g}.")
    if self.data.dataset not in ("movielens", "csv", "synthetic"):
      raise InputError(f"setting data.dataset='{self.data.dataset}' is "
                       f"unknown; use movielens, csv or synthetic.")
    return self


def _plain(value):
  if isinstance(value, dict):
    return {k: _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  return value


def _coerce(current, value, where: str):
  """Converts a YAML/flag value to the type of the field's current value."""
  if isinstance(current, tuple):
    if not isinstance(value, (list, tuple)):
      value = [value]
    return tuple(int(v) for v in value)
  if isinstance(current, bool):
    if isinstance(value, str):
      return value.lower() in ("1", "true", "yes", "on")
    return bool(value)
  if isinstance(current, (int, float)) and not isinstance(value, bool):
    try:
      return type(current)(value)
    except (TypeError, ValueError):
      raise InputError(f"{where}: '{value}' is not a {type(current).__name__}; "
                       f"fix the value.") from None
  return value


def update(config, values: Dict[str, Any], source: str):
  """Sets fields of a (nested) config dataclass from a mapping, in place."""
  fields = {f.name for f in dataclasses.fields(config)}
  for key, value in values.items():
    where = f"{source}: {key}"
    if key not in fields:
      raise InputError(f"{where}: unknown setting; known: "
                       f"{', '.join(sorted(fields))}.")
    current = getattr(config, key)
    if dataclasses.is_dataclass(current):
      if not isinstance(value, dict):
        raise InputError(f"{where}: expected a mapping of settings.")
      update(current, value, where)
    else:
      setattr(config, key, _coerce(current, value, where))
  return config


def load_yaml(path: str) -> Dict[str, Any]:
  try:
    with open(path, encoding="utf-8") as handle:
      values = yaml.safe_load(handle) or {}
  except FileNotFoundError:
    raise InputError(f"config file '{path}' not found; check --config.") from None
  except yaml.YAMLError as err:
    mark = getattr(err, "problem_mark", None)
    line = f" line {mark.line + 1}" if mark else ""
    raise InputError(f"{path}{line}: not valid YAML; fix the syntax.") from None
  if not isinstance(values, dict):
    raise InputError(f"{path}: expected a mapping of sections (data, model, "
                     f"train, ...).")
  return values
