"""Run settings as dataclasses: one place to add a setting.

Each section (data, model, train, eval, export, gan, item_gan, augmentation,
privacy) is a dataclass; a field declared with `setting(default, help)` is
also a command-line flag (`--<flag>`, named after the field unless `flag=` says
otherwise), so the CLI, YAML files and the tuner all read the same fields.

Precedence: dataclass defaults < `--config FILE.yaml` < command-line flags.
The YAML file has one mapping per section, the shape `to_dict` writes to each
run's `config.yaml`:

>>> config = update(RunConfig(), {"train": {"epochs": 3}}, "example.yaml")
>>> config.train.epochs, RunConfig().to_dict()["data"]["sparse_keep"]
(3, 5)
"""
import dataclasses
from typing import Any, Dict, Optional, Tuple

import yaml

from tfgan_rec.errors import InputError

AUGMENTATION_SOURCES = ("none", "gan", "ease", "auto")
DATASETS = ("movielens", "csv", "synthetic")
SPARSE_MODES = ("latest", "oldest")
# How the exported models search the catalogue (tfgan_rec.signatures).
INDEXES = ("exact", "compact")
# What the towers represent a user or item by, besides features and history
# (tfgan_rec.recommender.towers), and how the graph's layers combine.
TOWERS = ("id", "graph", "id+graph")
GRAPH_COMBINATIONS = ("mean", "learned")
GRAPH_NORMALIZATIONS = ("symmetric", "row")
GRAPH_PROPAGATIONS = ("step", "epoch")
# Who retrieves for users without history (tfgan_rec.new_users).
NEW_USER_SCORERS = ("features", "tower")
# Whether next-item transitions are blended into retrieval
# (tfgan_rec.next_items).
NEXT_ITEMS = ("auto", "off")
# What `python -m tfgan_rec.tune` searches with and over (tfgan_rec.tuning).
TUNERS = ("random", "bayesian", "hyperband", "gan")
SEARCH_SPACES = ("recommender", "gan", "augmentation", "graph")


def setting(default, help: str, flag: Optional[str] = None,  # noqa: A002
            choices: Optional[Tuple[str, ...]] = None):
  """A dataclass field that is also a command-line flag; `choices` are
  listed in its help (RunConfig.check rejects others in one line)."""
  if choices:
    help = f"{help}; one of {', '.join(choices)}"  # noqa: A001
  metadata = {"help": help, "flag": flag}
  if isinstance(default, (dict, list)):
    return dataclasses.field(default_factory=lambda: type(default)(default),
                             metadata=metadata)
  return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass
class DataConfig:
  """Where the interactions come from and how they are split."""
  dataset: str = setting("movielens", "movielens, csv (implied by --ratings) "
                         "or synthetic", choices=DATASETS)
  ratings: Optional[str] = setting(
      None, "CSV of user_id,item_id[,rating][,timestamp]")
  users: Optional[str] = setting(None, "CSV of user_id plus user feature "
                                 "columns")
  items: Optional[str] = setting(None, "CSV of item_id plus item feature "
                                 "columns (title, genres, ...)")
  data_dir: Optional[str] = setting(
      None, "local GroupLens ml-100k folder or TFDS data dir")
  cache_dir: Optional[str] = setting(
      None, "where downloaded MovieLens is cached (~/.cache/tfgan_rec)")
  synthetic_interactions: int = setting(20_000, "size of the --dataset "
                                        "synthetic data")
  test_fraction: float = setting(
      0.2, "latest fraction of each user's interactions for test; 0 trains "
      "on everything (production fit, no test report)")
  validation_fraction: float = setting(
      0.2, "latest fraction of training for validation")
  sparse_users: float = setting(
      0.3, "fraction of users whose training history is truncated")
  sparse_keep: int = setting(5, "interactions kept for those users")
  sparse_mode: str = setting(
      "latest", "which training interactions sparse users keep: latest "
      "(new users) or oldest (returning users whose taste has moved on)",
      choices=SPARSE_MODES)
  cold_items: float = setting(
      0.0, "fraction of items whose training interactions are removed, to "
      "measure new-item retrieval")
  cold_users: float = setting(
      0.0, "fraction of users held out entirely (known by features only; "
      "all their interactions are test), to measure new users")
  feature_kinds: Dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class ModelConfig:
  """Architecture of the two-stage TFRS model."""
  embedding_dim: int = setting(64, "tower output dimension")
  feature_dim: int = 16
  query_hidden: Tuple[int, ...] = (128,)
  candidate_hidden: Tuple[int, ...] = (128,)
  ranking_hidden: Tuple[int, ...] = (64,)
  pooled_history: bool = setting(
      True, "the query tower describes a user by the pooled embedding of "
      "their history items (off: by id or graph embedding and features "
      "only)")
  history_length: int = 100
  # Measured on MovieLens 100K, 5 seeds, paired against it off: Recall@20
  # +22.6% overall (+0.0419 ± 0.0034), +13.9% on sparse users, every seed
  # up; returning users (--sparse-mode oldest) -7.0% (README, Model).
  causal_history: bool = setting(
      True, "in training, a row's pooled history holds only the user's "
      "items before it in time, as when serving (off: all the user's "
      "other items)")
  history_dropout: float = 0.2
  generated_in_history: bool = False
  item_id_dropout: float = 0.1
  new_user_dropout: float = setting(
      0.0, "share of training rows whose user is shown as a new user (id 0, "
      "no history, features only), so the query tower learns to serve new "
      "users")
  # Measured on MovieLens 100K --cold-users 0.1, 5 seeds: the feature
  # softmax gave new users Recall@20 +17.4% over the tower's query and
  # +12.7% over the user generator's blend (README, New users). The tower's
  # features-only query is never trained (id 0, empty history) unless
  # new_user_dropout > 0.
  new_users: str = setting(
      "features", "what retrieves for users without history (new users, "
      "recommend_for_features without liked items): features (a softmax "
      "regression from their demographic groups to items, where the user "
      "features allow) or tower (the query tower from their features)",
      choices=NEW_USER_SCORERS)
  # Measured on MovieLens 100K, 5 seeds, against the tower alone: Recall@20
  # +8.0% overall (+0.0181 ± 0.0021), +9.5% on sparse users (README,
  # Next-item transitions).
  next_items: str = setting(
      "auto", "blend next-item transition scores (what follows the user's "
      "latest items in other users' histories) into retrieval, with a "
      "weight chosen on validation (auto; 0 when it does not help), or "
      "not (off)", choices=NEXT_ITEMS)
  temperature: float = setting(0.1, "retrieval softmax temperature")
  extra_negatives: int = 2048
  logq_correction: float = 1.0
  retrieval_weight: float = 1.0
  ranking_weight: float = setting(0.1, "weight of the ranking loss "
                                  "(retrieval's is 1)")
  tower: str = setting(
      "id", "what represents a user or item in both towers besides its "
      "features and pooled history: id (an id embedding), graph (a LightGCN "
      "embedding propagated over the training interactions, instead) or "
      "id+graph (both)", choices=TOWERS)
  graph_layers: int = setting(2, "LightGCN propagation steps of the graph "
                              "tower")
  graph_combination: str = setting(
      "mean", "how the graph tower combines its layers: mean, or learned "
      "softmax weights", choices=GRAPH_COMBINATIONS)
  graph_edge_dropout: float = setting(
      0.0, "fraction of graph edges dropped at each training step")
  graph_normalization: str = setting(
      "symmetric", "how the graph tower normalises the adjacency: symmetric "
      "(D^-1/2 A D^-1/2, LightGCN's) or row (D^-1 A, each node the "
      "weighted mean of its neighbours)", choices=GRAPH_NORMALIZATIONS)
  graph_propagation: str = setting(
      "step", "how often training propagates the graph tower: every step "
      "(LightGCN; a step's cost grows with the edges) or once per epoch (a "
      "step trains each node's own row against the epoch's propagated "
      "layers; its cost does not grow with the graph; no edge dropout)",
      choices=GRAPH_PROPAGATIONS)

  @property
  def uses_id(self) -> bool:
    """Whether the towers embed the user and item ids (id, id+graph)."""
    return "id" in self.tower.split("+")

  @property
  def uses_graph(self) -> bool:
    """Whether the towers use the graph embedding (graph, id+graph)."""
    return "graph" in self.tower.split("+")


@dataclasses.dataclass
class TrainConfig:
  """Optimisation and early stopping."""
  epochs: int = setting(40, "maximum epochs (early stopping on validation "
                        "Recall@K)")
  batch_size: int = setting(512, "training batch size")
  learning_rate: float = setting(0.003, "Adam learning rate")
  patience: int = setting(4, "epochs without validation gain before "
                          "stopping")
  refit: bool = setting(True, "retrain on train + validation for the best "
                        "epoch count")


@dataclasses.dataclass
class LoopConfig:
  """What every generator's training loop (`gan.loop`) reads besides its
  steps and batch: checkpoint and TensorBoard intervals and the loss beyond
  which a run counts as diverged."""
  checkpoint_every: int = 250
  log_every: int = 50
  divergence_threshold: float = 1e4


@dataclasses.dataclass
class GANConfig(LoopConfig):
  """The conditional GAN over users' interaction vectors and its training."""
  noise_dim: int = 32
  hidden: Tuple[int, ...] = (256,)
  feature_dim: int = 8
  g_learning_rate: float = 1e-3
  d_learning_rate: float = 1e-3
  d_steps: int = 1
  loss: str = setting("modified", "GAN loss: modified (minimax D, "
                      "non-saturating G) or wasserstein (with gradient "
                      "penalty)",
                      flag="gan_loss", choices=("modified", "wasserstein"))
  gp_weight: float = 10.0
  target: str = setting(
      "next", "what the interaction GAN generates: profile (a user's "
      "items from a partial history, CFGAN) or next (the items a user takes "
      "next, from the latest --gan-context items before a random point of "
      "their time-ordered history: simulated sparse users)",
      flag="gan_target", choices=("profile", "next"))
  context: int = setting(5, "with --gan-target next: the latest items the "
                         "generator is conditioned on", flag="gan_context")
  horizon: int = setting(10, "with --gan-target next: how many following "
                         "items are the real sample", flag="gan_horizon")
  item_to_item: bool = setting(
      True, "the generator adds a linear item-to-item map of the history "
      "to its MLP's logits", flag="gan_item_to_item")
  # The next-items target's measured setting (5 seeds, README): a softmax
  # ranking term and few shown negatives, no CFGAN reconstruction terms;
  # --gan-target profile was measured with ranking 0, negatives 0.1, ZR 1,
  # reconstruction 5 (config.yaml keys gan.*).
  ranking_weight: float = 10.0
  history_dropout: float = 0.5
  negative_rate: float = 0.005
  zr_weight: float = 0.0
  reconstruction_weight: float = 0.0
  steps: int = setting(1000, "GAN training steps", flag="gan_steps")
  batch_size: int = setting(128, "users per GAN step (divisible by the "
                            "replicas)", flag="gan_batch_size")
  clip_norm: float = 5.0


@dataclasses.dataclass
class PrivacyConfig:
  """The release generator (`python -m tfgan_rec.synthesize`): trained with
  user-level differential privacy at `epsilon` (see docs/privacy.md)."""
  epsilon: float = setting(
      0.0, "train a generator for releasing synthetic data with (epsilon, "
      "--dp-delta) user-level differential privacy, epsilon being the total "
      "of model and user features; inf: the same generator without "
      "privacy; 0: no release generator", flag="dp_epsilon")
  delta: float = setting(1e-5, "delta of the release's guarantee; keep it "
                         "well below 1/users", flag="dp_delta")
  clip_norm: float = setting(1.0, "each user's discriminator gradient is "
                             "clipped to this norm", flag="dp_clip_norm")
  feature_share: float = setting(
      0.1, "share of epsilon and delta spent on the users' feature "
      "marginals (the rest on the model)", flag="dp_feature_share")

  @property
  def release(self) -> bool:
    """Whether a release generator is trained."""
    return self.epsilon > 0

  @property
  def private(self) -> bool:
    """Whether it is trained with differential privacy."""
    return 0 < self.epsilon < float("inf")


@dataclasses.dataclass
class ItemGANConfig(LoopConfig):
  """The content generator that embeds new items (`gan.item_generator`)."""
  noise_dim: int = 16
  hidden: int = 128
  feature_dim: int = 16
  learning_rate: float = 1e-3
  steps: int = 1500
  batch_size: int = 128
  similarity_weight: float = 5.0


@dataclasses.dataclass
class UserGANConfig(LoopConfig):
  """The user generator (`gan.user_generator`): thin profile -> query."""
  max_thin: int = 5
  positives: int = 10
  min_history: int = 20
  validation_users: float = 0.1
  new_user_share: float = 0.2
  returning_share: float = 0.3
  noise_dim: int = 8
  hidden: int = 128
  feature_dim: int = 16
  learning_rate: float = 1e-3
  steps: int = setting(2000, "user generator training steps",
                       flag="user_gan_steps")
  batch_size: int = 128
  temperature: float = 0.1
  ranking_weight: float = 1.0
  distillation_weight: float = 0.5
  anchor_weight: float = 1.0
  adversarial_weight: float = setting(
      0.1, "weight of the user generator's adversarial term (0: no GAN, "
      "distillation only)", flag="user_gan_adversarial_weight")
  samples: int = 4


@dataclasses.dataclass
class AugmentationConfig:
  """Where generated interactions come from, who gets them, how many, and
  their weight."""
  source: str = setting(
      "none", "gan: the GANs serve thin and new users and new items, and the "
      "report sets each beside the model without them; auto: as gan, but "
      "generated interactions are kept only if validation says they help; "
      "ease: EASE's top items instead of the interaction GAN's (an "
      "ablation)", flag="augment", choices=AUGMENTATION_SOURCES)
  threshold: int = setting(20, "users with fewer training interactions get "
                           "generated ones", flag="augment_threshold")
  items_per_user: int = setting(5, "generated interactions per such user",
                                flag="augment_items")
  weight: float = setting(0.1, "sample weight of generated interactions",
                          flag="augment_weight")
  samples: int = 4

  @property
  def uses_gan(self) -> bool:
    """Whether the GANs are trained (gan, auto)."""
    return self.source in ("gan", "auto")


@dataclasses.dataclass
class EvalConfig:
  """How the test report ranks."""
  k: int = setting(20, "cut-off K of the evaluation metrics")


@dataclasses.dataclass
class ExportConfig:
  """Where and how the SavedModels are written."""
  enabled: bool = setting(True, "export the SavedModels for TF Serving",
                          flag="export")
  export_dir: str = setting("export", "where versioned SavedModels are "
                            "written")
  top_k: int = setting(20, "items returned by the exported retrieval model")
  keep_versions: int = setting(3, "exported versions kept per model")
  index: str = setting(
      "exact", "how retrieval and recommend search the catalogue: compact "
      "(a bfloat16 first pass, exact float32 scores for a shortlist; see "
      "benchmarks/README.md) or exact (every item in float32)",
      choices=INDEXES)
  shortlist_factor: int = setting(
      10, "with --index compact, items re-scored exactly per query, as a "
      "multiple of the items returned")


@dataclasses.dataclass
class RunConfig:
  """Everything one `python -m tfgan_rec.train` run needs."""
  data: DataConfig = dataclasses.field(default_factory=DataConfig)
  model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
  train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
  eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
  export: ExportConfig = dataclasses.field(default_factory=ExportConfig)
  gan: GANConfig = dataclasses.field(default_factory=GANConfig)
  item_gan: ItemGANConfig = dataclasses.field(default_factory=ItemGANConfig)
  user_gan: UserGANConfig = dataclasses.field(default_factory=UserGANConfig)
  augmentation: AugmentationConfig = dataclasses.field(
      default_factory=AugmentationConfig)
  privacy: PrivacyConfig = dataclasses.field(default_factory=PrivacyConfig)
  seed: int = setting(42, "fixes the split, initialisation and training "
                      "order")
  run_dir: Optional[str] = setting(
      None, "run output folder (default: runs/<time>-seed<N>)")
  logdir: Optional[str] = setting(None, "TensorBoard log folder")

  def to_dict(self) -> Dict[str, Any]:
    return _plain(dataclasses.asdict(self))

  def copy(self) -> "RunConfig":
    return update(RunConfig(), self.to_dict(), "copy")

  def check(self) -> "RunConfig":
    """Raises InputError naming the first setting out of range."""
    for name, value, low, high in self._ranges():
      if not low <= value <= high:
        raise InputError(f"setting {name}={value} is out of range; use a "
                         f"value from {low:g} to {high:g}.")
    for name, value, known in (
        ("data.dataset", self.data.dataset, DATASETS),
        ("data.sparse_mode", self.data.sparse_mode, SPARSE_MODES),
        ("model.tower", self.model.tower, TOWERS),
        ("model.new_users", self.model.new_users, NEW_USER_SCORERS),
        ("model.next_items", self.model.next_items, NEXT_ITEMS),
        ("model.graph_combination", self.model.graph_combination,
         GRAPH_COMBINATIONS),
        ("model.graph_normalization", self.model.graph_normalization,
         GRAPH_NORMALIZATIONS),
        ("model.graph_propagation", self.model.graph_propagation,
         GRAPH_PROPAGATIONS),
        ("augmentation.source", self.augmentation.source,
         AUGMENTATION_SOURCES),
        ("gan.loss", self.gan.loss, ("modified", "wasserstein")),
        ("export.index", self.export.index, INDEXES)):
      if value not in known:
        raise InputError(f"setting {name}='{value}' is unknown; use "
                         f"{', '.join(known)}.")
    if (self.model.graph_propagation == "epoch" and
        self.model.graph_edge_dropout > 0):
      raise InputError("--graph-edge-dropout needs --graph-propagation step "
                       "(edges are dropped at every step's propagation).")
    if self.augmentation.source == "auto" and not (
        self.data.validation_fraction > 0):
      raise InputError("--augment auto decides on the validation split; set "
                       "--validation-fraction above 0, or use --augment "
                       "gan.")
    return self

  def _ranges(self):
    fractions = [
        ("data.test_fraction", self.data.test_fraction, 0.0, 0.9),
        ("data.validation_fraction", self.data.validation_fraction, 0.0, 0.9),
        ("data.sparse_users", self.data.sparse_users, 0.0, 1.0),
        ("data.cold_items", self.data.cold_items, 0.0, 0.9),
        ("data.cold_users", self.data.cold_users, 0.0, 0.9),
        ("model.temperature", self.model.temperature, 1e-4, 100.0),
        # Weight 1 is what marks a row real (Examples.is_real).
        ("augmentation.weight", self.augmentation.weight, 1e-3, 0.99),
        ("model.graph_layers", self.model.graph_layers, 0, 10),
        ("model.new_user_dropout", self.model.new_user_dropout, 0.0, 0.9),
        ("model.graph_edge_dropout", self.model.graph_edge_dropout, 0.0, 0.9),
        ("train.learning_rate", self.train.learning_rate, 1e-7, 10.0),
        ("privacy.epsilon", self.privacy.epsilon, 0.0, float("inf")),
        ("privacy.delta", self.privacy.delta, 1e-15, 0.1),
        ("privacy.clip_norm", self.privacy.clip_norm, 1e-6, 1e6),
        ("privacy.feature_share", self.privacy.feature_share, 0.01, 0.99),
    ]
    return fractions + [(name, value, 1, 10**9) for name, value in (
        ("data.sparse_keep", self.data.sparse_keep),
        ("data.synthetic_interactions", self.data.synthetic_interactions),
        ("model.embedding_dim", self.model.embedding_dim),
        ("model.history_length", self.model.history_length),
        ("train.epochs", self.train.epochs),
        ("train.batch_size", self.train.batch_size),
        ("train.patience", self.train.patience),
        ("gan.steps", self.gan.steps), ("gan.batch_size", self.gan.batch_size),
        ("eval.k", self.eval.k), ("export.top_k", self.export.top_k),
        ("export.keep_versions", self.export.keep_versions),
        ("export.shortlist_factor", self.export.shortlist_factor))]


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


# Settings that moved or were renamed: (old section, old key, old value or
# None for any) -> the one-line fix named in the error.
_MOVED = {
    (None, "augment", None): "it is now augmentation.source (the same "
                             "values), under the augmentation section",
    ("gan", "loss", "minimax"): "the non-saturating loss is now called "
                                "'modified', as in TF-GAN",
}


def _check_moved(section: Optional[str], key: str, value, where: str):
  for (old_section, old_key, old_value), fix in _MOVED.items():
    if (section, key) == (old_section, old_key) and old_value in (None,
                                                                  value):
      raise InputError(f"{where}: setting from an older version; {fix}.")


def update(config, values: Dict[str, Any], source: str,
           section: Optional[str] = None):
  """Sets fields of a (nested) config dataclass from a mapping, in place;
  `section` names `config` inside RunConfig (None: RunConfig itself)."""
  fields = {f.name for f in dataclasses.fields(config)}
  for key, value in values.items():
    where = f"{source}: {key}"
    _check_moved(section, key, value, where)
    if key not in fields:
      raise InputError(f"{where}: unknown setting; known: "
                       f"{', '.join(sorted(fields))}.")
    current = getattr(config, key)
    if dataclasses.is_dataclass(current):
      if not isinstance(value, dict):
        raise InputError(f"{where}: expected a mapping of settings.")
      update(current, value, where, section=key)
    else:
      setattr(config, key, _coerce(current, value, where))
  return config


def load_yaml(path: str) -> Dict[str, Any]:
  """The mapping in a YAML settings file; InputError naming the line if it
  is not valid."""
  try:
    with open(path, encoding="utf-8") as handle:
      values = yaml.safe_load(handle) or {}
  except FileNotFoundError:
    raise InputError(f"config file '{path}' not found; check "
                     f"--config.") from None
  except yaml.YAMLError as err:
    mark = getattr(err, "problem_mark", None)
    line = f" line {mark.line + 1}" if mark else ""
    raise InputError(f"{path}{line}: not valid YAML; fix the syntax.") from None
  if not isinstance(values, dict):
    raise InputError(f"{path}: expected a mapping of sections (data, model, "
                     f"train, ...).")
  return values


def save_yaml(config: RunConfig, path: str) -> None:
  """Writes `config` as YAML that `load_yaml` + `update` read back."""
  with open(path, "w", encoding="utf-8") as handle:
    yaml.safe_dump(config.to_dict(), handle, sort_keys=False)
