"""Formats a run's metrics as a Markdown report."""
from typing import Dict

SLICE_ORDER = ("overall", "sparse", "dense")


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


def markdown_report(summary: dict) -> str:
  """The run's report.md: data, split, tables, timings and exports."""
  k = summary["config"]["eval"]["k"]
  data = summary["data"]
  lines = [
      "# tfgan_rec run report", "",
      f"- data: {data['source']}",
      f"- {data['users']:,} users, {data['items']:,} items, "
      f"{data['interactions']:,} interactions; train {data['train']:,}, "
      f"test {data['test']:,}; {data['sparse_users']:,} sparse users "
      f"(at most {summary['config']['data']['sparse_keep']} training "
      f"interactions)",
      f"- seed {summary['config']['seed']}; model trained "
      f"{summary['best_epoch']} epochs (best validation Recall@{k})",
  ]
  augmentation = summary.get("augmentation")
  if augmentation:
    lines.append(
        f"- GAN augmentation: {augmentation['generated']:,} generated "
        f"interactions for {augmentation['users']:,} users (weight "
        f"{augmentation['weight']:g}); the non-augmented twin is trained on "
        f"the same split with the same seed")
  lines += [
      "", f"## Retrieval (test, K={k}, training items excluded)", "",
      retrieval_table(summary["retrieval"], k), "",
      "## Ranking", "", rating_table(summary["rmse"]), ""]
  new_items = summary.get("new_items") or {}
  if new_items.get("retrieval"):
    lines += [f"## New items ({new_items['cold_items']} items whose training "
              f"interactions were removed; ranked among themselves)", "",
              f"| item embeddings | Recall@{k} | NDCG@{k} | HitRate@{k} | users |",
              "|---|---:|---:|---:|---:|"]
    lines += [f"| {name} | {m[f'recall@{k}']:.4f} | {m[f'ndcg@{k}']:.4f} | "
              f"{m[f'hit_rate@{k}']:.4f} | {m['users']} |"
              for name, m in new_items["retrieval"].items()]
    lines.append("")
  lines += [
      "## Time (seconds)", "",
      "| stage | seconds |", "|---|---:|"]
  lines += [f"| {stage} | {sec:.1f} |"
            for stage, sec in summary["seconds"].items()]
  if summary.get("exports"):
    lines += ["", "## Exports", ""]
    lines += [f"- {name}: `{path}`" for name, path in summary["exports"].items()]
  return "\n".join(lines) + "\n"
