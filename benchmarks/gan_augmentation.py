"""Generated interactions on MovieLens 100K: each interaction-GAN variant's
augmented recommender against its twin, over seeds.

For every seed the split of `python -m tfgan_rec.train --seed S` is made,
the twin (the recommender without augmentation) is trained, and for every
variant the pipeline's own stages run: `pipeline.generate_interactions`
(the interaction GAN trained on the fit part, its interactions for the thin
users of the fit and train parts) and `pipeline.train_recommender` on real
plus generated interactions. Test Recall@20 per slice, of the augmented
recommender and of the GAN alone; the table gives mean ± std over the seeds
and the paired difference against the twin.

    python benchmarks/gan_augmentation.py --seeds 42 1 2 3 4 \
        --variant default='{}' \
        --variant profile='{"item_to_item": false}'

A variant is a name and a JSON object of `GANConfig` fields (plus
"augmentation": {...} for `AugmentationConfig` fields and "model": {...}
for `ModelConfig` fields of the augmented recommender); `--model` sets
`ModelConfig` fields for the twin and every variant, `--data` the split's
`DataConfig` fields. Finished (seed,
variant) pairs are kept in `--results` (default
benchmarks/results/gan_augmentation.json) and skipped when the script is
run again.
"""
import argparse
import dataclasses
import json
import os
import time

import tfgan_rec  # noqa: F401  (Keras 2 before TensorFlow loads)
import numpy as np

from tfgan_rec import pipeline
from tfgan_rec.config import RunConfig
from tfgan_rec.recommender import training

K = 20
SLICES = ("overall", "sparse", "dense")
RESULTS = os.path.join(os.path.dirname(__file__), "results",
                       "gan_augmentation.json")


def recall_by_slice(score, split_data) -> dict:
  metrics = pipeline.evaluate_retrieval(score, split_data, K)
  return {name: values[f"recall@{K}"] for name, values in metrics.items()}


def twin(config: RunConfig, split_data) -> dict:
  result = pipeline.train_recommender(config, split_data,
                                      split_data.examples("fit"),
                                      split_data.examples("train"))
  return {"recommender": recall_by_slice(
      lambda users: training.score_all_items(result.model, users),
      split_data)}


def augmented(config: RunConfig, split_data) -> dict:
  """The augmented twin and the GAN alone, as the pipeline makes them."""
  fit_rows, train_rows = (split_data.examples("fit"),
                          split_data.examples("train"))
  start = time.time()
  generated = pipeline.generate_interactions(config, split_data, fit_rows,
                                             train_rows)
  gan_seconds = time.time() - start
  result = pipeline.train_recommender(config, split_data,
                                      fit_rows + generated.fit,
                                      train_rows + generated.train)
  return {"recommender": recall_by_slice(
      lambda users: training.score_all_items(result.model, users),
      split_data),
          "gan_alone": recall_by_slice(generated.train_score, split_data),
          "gan_seconds": gan_seconds, "last_gan_metrics": {
              name: float(value) for name, value in
              generated.gan_metrics.items()}}


def configured(seed: int, overrides: dict, model: dict,
               data: dict) -> RunConfig:
  config = RunConfig(seed=seed)
  config = dataclasses.replace(
      config, data=dataclasses.replace(config.data, **data))
  overrides = dict(overrides)
  augment = {"source": "gan", **overrides.pop("augmentation", {})}
  model = {**model, **overrides.pop("model", {})}
  return dataclasses.replace(
      config, gan=dataclasses.replace(config.gan, **overrides),
      augmentation=dataclasses.replace(config.augmentation, **augment),
      model=dataclasses.replace(config.model, **model))


def summarize(results: dict, seeds, variants) -> None:
  print(f"| variant | seeds | {' | '.join(SLICES)} | sparse vs twin |")
  print("|---|---:|" + "---:|" * (len(SLICES) + 1))
  twins = results.get("twin", {})
  for name in ["twin", *variants]:
    done = [s for s in seeds if str(s) in results.get(name, {})
            and str(s) in twins]
    if not done:
      continue
    values = {sl: np.array([results[name][str(s)]["recommender"][sl]
                            for s in done]) for sl in SLICES}
    base = np.array([twins[str(s)]["recommender"]["sparse"] for s in done])
    diff = values["sparse"] - base
    cells = " | ".join(f"{v.mean():.4f} ± {spread(v):.4f}"
                       for v in values.values())
    print(f"| {name} | {len(done)} | {cells} | "
          f"{100 * diff.mean() / base.mean():+.1f}% ({diff.mean():+.4f} ± "
          f"{spread(diff):.4f}) |")


def spread(values: np.ndarray) -> float:
  return float(values.std(ddof=1)) if len(values) > 1 else 0.0


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2, 3, 4])
  parser.add_argument("--variant", action="append", default=[],
                      help="NAME=JSON of GANConfig fields")
  parser.add_argument("--model", default="{}",
                      help="JSON of ModelConfig fields for the twin and "
                      "every variant (keep each setting's results apart "
                      "with --results)")
  parser.add_argument("--data", default="{}",
                      help="JSON of DataConfig fields, e.g. "
                      '\'{"sparse_mode": "oldest"}\' (returning users)')
  parser.add_argument("--results", default=RESULTS)
  args = parser.parse_args()
  variants = dict(v.split("=", 1) for v in args.variant) or {"default": "{}"}
  model, data = json.loads(args.model), json.loads(args.data)
  path = args.results
  results = json.load(open(path)) if os.path.exists(path) else {}
  # Files written before the next-item blend existed hold tower-only runs.
  blend = model.get("next_items", RunConfig().model.next_items)
  if results and results.get("next_items", "off") != blend:
    raise SystemExit(f"{path} holds runs with next_items="
                     f"{results.get('next_items', 'off')}; pass another "
                     f"--results.")
  results["next_items"] = blend
  for key, value in (("model", model), ("data", data)):
    if results.setdefault(key, value) != value:
      raise SystemExit(f"{path} holds runs with {key} settings "
                       f"{results[key]}; pass another --results.")
  for seed in args.seeds:
    split_data = None
    for name, overrides in [("twin", None), *variants.items()]:
      stored = results.get(name, {}).get(str(seed))
      if stored and stored["overrides"] != json.loads(overrides or "{}"):
        raise SystemExit(f"{path}: variant {name} was run with "
                         f"{stored['overrides']}; give the new settings "
                         f"another name.")
      if stored:
        continue
      config = configured(seed, json.loads(overrides or "{}"), model, data)
      split_data = split_data or pipeline.prepare(config.data, seed)
      outcome = (twin(config, split_data) if overrides is None
                 else augmented(config, split_data))
      outcome["overrides"] = json.loads(overrides or "{}")
      results.setdefault(name, {})[str(seed)] = outcome
      os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
      with open(path, "w") as out:
        json.dump(results, out, indent=1)
      print(name, seed, outcome["recommender"], flush=True)
  summarize(results, args.seeds, variants)


if __name__ == "__main__":
  main()
