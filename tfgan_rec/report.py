"""What a run measured (`RunSummary` and its parts) and its Markdown report."""
import dataclasses
from typing import Dict, List, Optional

from tfgan_rec import privacy as privacy_lib

SLICE_ORDER = ("overall", "sparse", "dense", "new")


@dataclasses.dataclass
class DataSummary:
  """The data a run used and how it was split."""
  source: str
  users: int
  items: int
  interactions: int
  train: int
  test: int
  sparse_users: int


@dataclasses.dataclass
class AugmentationSummary:
  """What the GAN (or the EASE teacher) added to the training examples,
  and how concentrated on popular items they are (Gini of the item counts:
  0 = every item equally often, 1 = one item only)."""
  generated: int
  users: int
  weight: float
  gan_last_step: Dict[str, float]
  gini_generated: float
  gini_real: float
  # Share of the interactions per tenth of the catalogue ranked by real
  # popularity, most popular first (`evaluate.popularity_shares`).
  popularity_generated: List[float] = dataclasses.field(default_factory=list)
  popularity_real: List[float] = dataclasses.field(default_factory=list)
  # Share of a thin user's generated items two noise draws agree on
  # (`augmentation.noise_agreement`; 1: the noise is ignored).
  noise_agreement: Optional[float] = None


@dataclasses.dataclass
class UserGeneratorSummary:
  """The user generator's blend weight per history-length bucket and the
  validation Recall@K of every weight tried, {bucket: {weight: recall}}."""
  weights: Dict[str, float]
  tried: Dict[str, Dict[float, float]]


@dataclasses.dataclass
class NewItemSummary:
  """Items without training interactions: how many got generated
  embeddings, and retrieval among held-out cold items per embedding kind."""
  generated_embeddings: int = 0
  cold_items: int = 0
  retrieval: Dict[str, dict] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class RunSummary:
  """Everything a run reports; written as metrics.json and report.md.

  `retrieval` maps recommender -> slice -> metric and `rmse` recommender ->
  test RMSE; both are empty for a production fit (no test split).
  """
  config: dict
  data: DataSummary
  best_epoch: int
  history: List[dict]
  retrieval: Dict[str, Dict[str, dict]]
  rmse: Dict[str, float]
  augmentation: Optional[AugmentationSummary]
  user_generator: Optional[UserGeneratorSummary]
  # What the augmentation used and why (the validation figures).
  decisions: Dict[str, str]
  new_items: Optional[NewItemSummary]
  seconds: Dict[str, float]
  exports: Dict[str, str]
  run_dir: str
  # The release generator's privacy statement (privacy.json), if trained.
  privacy: Optional[dict] = None

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


def retrieval_table(results: Dict[str, Dict[str, dict]], k: int) -> str:
  """Markdown table: one row per (recommender, slice).

  >>> print(retrieval_table({"EASE": {"overall": {"users": 2, "recall@5": .5,
  ...     "ndcg@5": .4, "hit_rate@5": 1.0, "coverage@5": .1}}}, 5))
  | recommender | slice | users | Recall@5 | NDCG@5 | HitRate@5 | Coverage@5 |
  |---|---|---:|---:|---:|---:|---:|
  | EASE | overall | 2 | 0.5000 | 0.4000 | 1.0000 | 0.1000 |
  """
  metrics = ("recall", "ndcg", "hit_rate", "coverage")
  titles = ("Recall", "NDCG", "HitRate", "Coverage")
  lines = ["| recommender | slice | users | " +
           " | ".join(f"{t}@{k}" for t in titles) + " |",
           "|---|---|---:|" + "---:|" * len(metrics)]
  for name, slices in results.items():
    for slice_name in [s for s in SLICE_ORDER if s in slices]:
      row = slices[slice_name]
      values = " | ".join(f"{row[f'{m}@{k}']:.4f}" for m in metrics)
      lines.append(f"| {name} | {slice_name} | {row['users']} | {values} |")
  return "\n".join(lines)


def rating_table(rmse: Dict[str, float]) -> str:
  lines = ["| rating predictor | test RMSE |", "|---|---:|"]
  lines += [f"| {name} | {value:.4f} |" for name, value in rmse.items()]
  return "\n".join(lines)


def new_item_table(new_items: NewItemSummary, k: int) -> str:
  lines = [f"## New items ({new_items.cold_items} items whose training "
           f"interactions were removed; ranked among themselves)", "",
           f"| item embeddings | Recall@{k} | NDCG@{k} | HitRate@{k} | users |",
           "|---|---:|---:|---:|---:|"]
  lines += [f"| {name} | {m[f'recall@{k}']:.4f} | {m[f'ndcg@{k}']:.4f} | "
            f"{m[f'hit_rate@{k}']:.4f} | {m['users']} |"
            for name, m in new_items.retrieval.items()]
  return "\n".join(lines)


def _header(summary: RunSummary, k: int) -> List[str]:
  data, config = summary.data, summary.config
  lines = [
      "# tfgan_rec run report", "",
      f"- data: {data.source}",
      f"- {data.users:,} users, {data.items:,} items, "
      f"{data.interactions:,} interactions; train {data.train:,}, "
      f"test {data.test:,}; {data.sparse_users:,} sparse users "
      f"(at most {config['data']['sparse_keep']} training interactions)",
      f"- seed {config['seed']}; model trained {summary.best_epoch} epochs "
      f"(best validation Recall@{k})",
  ]
  if summary.augmentation:
    generated = summary.augmentation
    lines.append(
        f"- generated interactions: {generated.generated:,} for "
        f"{generated.users:,} users (weight {generated.weight:g}); Gini of "
        f"their items {generated.gini_generated:.3f} (real interactions "
        f"{generated.gini_real:.3f}); the twin without them is trained on "
        f"the same split with the same seed")
    if generated.popularity_generated:
      lines.append(
          "- share of generated / real interactions in the catalogue's "
          "most popular tenth: "
          f"{generated.popularity_generated[0]:.3f} / "
          f"{generated.popularity_real[0]:.3f} (every tenth: "
          "metrics.json, picture: generated_popularity.png)")
    if generated.noise_agreement is not None:
      lines.append(
          "- two noise draws for the same thin user agree on "
          f"{generated.noise_agreement:.0%} of their generated items (100%: "
          "the noise is ignored)")
    if "diversity" in generated.gan_last_step:
      lines.append(
          "- batch diversity of the generated vectors at the GAN's last "
          f"step: {generated.gan_last_step['diversity']:.3f} (near 0: mode "
          "collapse)")
  lines += [f"- {what}: {decision}"
            for what, decision in summary.decisions.items()]
  if summary.privacy:
    lines.append(f"- {privacy_lib.describe(summary.privacy)}")
  return lines


def markdown_report(summary: RunSummary) -> str:
  """The run's report.md: data, split, tables, timings and exports."""
  k = summary.config["eval"]["k"]
  lines = _header(summary, k) + [""]
  if summary.retrieval:
    lines += [f"## Retrieval (test, K={k}, training items excluded)", "",
              retrieval_table(summary.retrieval, k), "",
              "## Ranking", "", rating_table(summary.rmse), ""]
  else:
    lines += ["No test split (test_fraction 0): the model was trained on "
              "every interaction and no test metrics were computed.", ""]
  if summary.new_items and summary.new_items.retrieval:
    lines += [new_item_table(summary.new_items, k), ""]
  lines += ["## Time (seconds)", "", "| stage | seconds |", "|---|---:|"]
  lines += [f"| {stage} | {seconds:.1f} |"
            for stage, seconds in summary.seconds.items()]
  if summary.exports:
    lines += ["", "## Exports", ""]
    lines += [f"- {name}: `{path}`" for name, path in summary.exports.items()]
  return "\n".join(lines) + "\n"
