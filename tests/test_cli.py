"""`python -m tfgan_rec.train` end to end on tiny synthetic data."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import yaml

from tfgan_rec import cli
from tfgan_rec import export as export_lib
from tfgan_rec import baselines, pipeline, saved_models, train
from tfgan_rec.config import load_yaml, save_yaml

TINY = ["--dataset", "synthetic", "--synthetic-interactions", "3000",
        "--epochs", "3", "--patience", "2"]


def run(tmp_path, name, *extra):
  run_dir = tmp_path / name
  code = train.main([*TINY, "--run-dir", str(run_dir), "--export-dir",
                     str(tmp_path / "export"), *extra])
  assert code == 0
  return run_dir


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
  tmp_path = tmp_path_factory.mktemp("cli")
  return tmp_path, run(tmp_path, "a", "--seed", "5")


def test_run_writes_config_metrics_report_and_exports(first_run):
  tmp_path, run_dir = first_run
  assert {"config.yaml", "metrics.json", "report.md"} <= set(os.listdir(run_dir))
  assert "checkpoints" not in os.listdir(run_dir)  # removed when it ended
  metrics = json.loads((run_dir / "metrics.json").read_text())
  assert set(metrics["retrieval"]) >= {"TFRS two-stage", "MostPop"}
  assert any(name.startswith("EASE") for name in metrics["retrieval"])
  for name in metrics["retrieval"]:
    assert set(metrics["retrieval"][name]) == {"overall", "sparse", "dense"}
  assert metrics["config"]["seed"] == 5
  report = (run_dir / "report.md").read_text()
  assert "| TFRS two-stage | overall |" in report and "| MostPop | sparse |" in report
  for model in ("retrieval", "ranking"):
    assert os.path.isfile(tmp_path / "export" / model / "1" / "saved_model.pb")


def test_same_seed_same_metrics_and_config_round_trips(first_run):
  tmp_path, run_dir = first_run
  # The written config.yaml is accepted by --config and reproduces the run.
  again = run(tmp_path, "b", "--config", str(run_dir / "config.yaml"))
  first = json.loads((run_dir / "metrics.json").read_text())
  second = json.loads((again / "metrics.json").read_text())
  assert first["retrieval"] == second["retrieval"]
  assert first["rmse"] == second["rmse"]
  assert sorted(os.listdir(tmp_path / "export" / "retrieval")) == ["1", "2"]


def test_export_stage_rebuilds_the_run_exactly(first_run, capsys):
  tmp_path, run_dir = first_run
  again = tmp_path / "export-again"
  assert export_lib.main(["--run-dir", str(run_dir), "--export-dir",
                          str(again)]) == 0
  assert "recommend: " in capsys.readouterr().out
  users = tf.constant(["1", "2", "3", "unknown-user"])
  # A new user without liked items: the feature softmax the run attached.
  new_user = {"age": tf.constant(["30"]), "gender": tf.constant(["F"]),
              "occupation": tf.constant(["doctor"]),
              "liked_item_ids": tf.constant([[""]]),
              "k": tf.constant([5], tf.int32)}
  outputs = []
  for root in (tmp_path / "export", again):
    model = tf.saved_model.load(str(root / "recommend" / "1"))
    outputs.append(model.signatures["serving_default"](
        user_id=users, k=tf.constant([5, 5, 5, 5], tf.int32)))
    outputs.append(model.signatures["recommend_for_features"](**new_user))
  for first, second in (outputs[0::2], outputs[1::2]):
    np.testing.assert_array_equal(first["item_ids"], second["item_ids"])
    np.testing.assert_allclose(first["scores"], second["scores"], rtol=1e-5)
  metrics = json.loads((run_dir / "metrics.json").read_text())
  assert metrics["decisions"]["users without history"].startswith(
      "the feature softmax")


def test_export_stage_rejects_unfinished_run(tmp_path, capsys):
  (tmp_path / "half").mkdir()
  (tmp_path / "half" / "config.yaml").write_text("seed: 1\n")
  assert export_lib.main(["--run-dir", str(tmp_path / "half")]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and "holds no trained model" in err
  assert export_lib.main(["--run-dir", str(tmp_path / "nowhere")]) == 2
  assert "not found" in capsys.readouterr().err


def test_flags_override_yaml(tmp_path):
  config_file = tmp_path / "c.yaml"
  config_file.write_text(yaml.safe_dump({"train": {"epochs": 9, "batch_size": 64},
                                         "seed": 3}))
  args = train.build_parser().parse_args(["--config", str(config_file),
                                          "--epochs", "2"])
  config = cli.resolve_config(args)
  assert (config.train.epochs, config.train.batch_size, config.seed) == (2, 64, 3)


def test_existing_run_dir_is_not_overwritten(first_run, capsys):
  tmp_path, run_dir = first_run
  before = (run_dir / "metrics.json").read_text()
  code = train.main([*TINY, "--run-dir", str(run_dir), "--no-export"])
  assert code == 2
  assert "already holds a run" in capsys.readouterr().err
  assert (run_dir / "metrics.json").read_text() == before


def write_csv_logs(tmp_path):
  ratings = tmp_path / "r.csv"
  rows = ["user_id,item_id,rating,timestamp"]
  for u in range(30):
    for j in range(12):
      rows.append(f"u{u},i{(u * 3 + j * 7) % 40},{1 + (u + j) % 5},{j}")
  ratings.write_text("\n".join(rows) + "\n")
  items = tmp_path / "i.csv"
  items.write_text("item_id,genres,year\n" + "\n".join(
      f"i{i},g{i % 4}|g{(i + 1) % 4},{1990 + i}" for i in range(45)) + "\n")
  return ["--ratings", str(ratings), "--items", str(items)]


def test_csv_logs_run(tmp_path):
  run_dir = tmp_path / "run"
  assert train.main([*write_csv_logs(tmp_path), "--epochs", "2",
                     "--run-dir", str(run_dir),
                     "--export-dir", str(tmp_path / "export")]) == 0
  metrics = json.loads((run_dir / "metrics.json").read_text())
  assert metrics["data"]["items"] == 45  # unrated items join the catalogue


def test_production_fit_on_csv_logs_exports_all_models(tmp_path):
  run_dir = tmp_path / "run"
  assert train.main([*write_csv_logs(tmp_path), "--epochs", "2",
                     "--test-fraction", "0", "--sparse-users", "0",
                     "--run-dir", str(run_dir),
                     "--export-dir", str(tmp_path / "export")]) == 0
  metrics = json.loads((run_dir / "metrics.json").read_text())
  assert metrics["data"]["train"] == metrics["data"]["interactions"] == 360
  for model in saved_models.MODEL_NAMES:
    assert os.path.isfile(tmp_path / "export" / model / "1" / "saved_model.pb")


def test_augment_gan_reports_both_models_and_new_items(tmp_path):
  run_dir = run(tmp_path, "gan", "--augment", "gan", "--gan-steps", "20",
                "--gan-batch-size", "32", "--cold-items", "0.1",
                "--user-gan-steps", "20")
  metrics = json.loads((run_dir / "metrics.json").read_text())
  assert {"TFRS + GAN interactions", "TFRS two-stage",
          "TFRS + GAN user generator", "user generator alone",
          "interaction GAN alone",
          "TFRS, latest 5 items only (no GAN)"} <= set(metrics["retrieval"])
  assert set(metrics["user_generator"]["weights"]) == {
      "no history", "1-5", "6-19", "20+"}
  generated = metrics["augmentation"]
  assert 0 <= generated["gini_generated"] <= 1 and generated["generated"] > 0
  assert 0 <= generated["noise_agreement"] <= 1
  # The popularity profile: shares per tenth of the catalogue, and its PNG.
  for shares in (generated["popularity_generated"],
                 generated["popularity_real"]):
    assert len(shares) == 10 and abs(sum(shares) - 1) < 1e-6
  assert (run_dir / "generated_popularity.png").stat().st_size > 1000
  new_items = metrics["new_items"]
  assert set(new_items["retrieval"]) == {"tower embeddings", "random",
                                         "GAN-generated embeddings"}
  assert new_items["generated_embeddings"] >= new_items["cold_items"]
  # Every generator checkpoints (so --resume continues it) in its folder.
  for folder in ("", "user_generator_fit", "item_generator"):
    assert (run_dir / "checkpoints" / folder / "checkpoint").exists()
  # The recommenders' epochs only serve to resume the run: gone at its end.
  assert not set(pipeline.RECOMMENDER_CHECKPOINTS) & set(
      os.listdir(run_dir / "checkpoints"))
  report = (run_dir / "report.md").read_text()
  assert "| TFRS + GAN user generator | sparse |" in report
  assert "two noise draws for the same thin user agree on" in report
  # The export stage rebuilds the generator and its blend from the run.
  again = tmp_path / "export-again"
  assert export_lib.main(["--run-dir", str(run_dir), "--export-dir",
                          str(again)]) == 0
  users = tf.constant(["1", "2", "3", "unknown-user"])
  outputs = [tf.saved_model.load(str(root / "recommend" / "1")).signatures[
      "serving_default"](user_id=users, k=tf.constant([5] * 4, tf.int32))
             for root in (tmp_path / "export", again)]
  np.testing.assert_array_equal(outputs[0]["item_ids"], outputs[1]["item_ids"])
  assert "## New items" in report


def test_checkpoints_need_resume_with_the_same_settings(tmp_path, capsys):
  run_dir = tmp_path / "killed"
  (run_dir / "checkpoints" / "recommender").mkdir(parents=True)
  code = train.main([*TINY, "--run-dir", str(run_dir), "--no-export"])
  assert code == 2
  assert "pass --resume" in capsys.readouterr().err
  config = cli.resolve_config(train.build_parser().parse_args(
      [*TINY, "--run-dir", str(run_dir), "--no-export"]))
  save_yaml(config, str(run_dir / "config.yaml"))
  code = train.main([*TINY, "--run-dir", str(run_dir), "--no-export",
                     "--resume", "--patience", "9"])
  assert code == 2
  assert "which has train.patience=" in capsys.readouterr().err
  assert load_yaml(str(run_dir / "config.yaml")) == config.to_dict()


def test_every_setting_flag_maps_to_a_config_field():
  table = cli.flag_table()
  assert table["gan_steps"] == ("gan", "steps")
  assert table["augment"] == ("augmentation", "source")
  assert table["seed"] == (None, "seed")
  args = train.build_parser().parse_args(
      ["--augment", "gan", "--gan-steps", "7", "--no-refit", "--no-export"])
  config = cli.resolve_config(args)
  assert (config.augmentation.source, config.gan.steps, config.train.refit,
          config.export.enabled) == ("gan", 7, False, False)


def _write_ratings(path, rows):
  path.write_text("user_id,item_id,rating,timestamp\n" + "\n".join(
      ",".join(map(str, row)) for row in rows) + "\n")


def test_production_fit_trains_on_everything_and_exports(tmp_path, capsys):
  run_dir = tmp_path / "prod"
  # Without --sparse-users 0 too: nothing is truncated without a test.
  assert train.main([*TINY, "--test-fraction", "0", "--run-dir",
                     str(run_dir), "--export-dir",
                     str(tmp_path / "export")]) == 0
  metrics = json.loads((run_dir / "metrics.json").read_text())
  assert metrics["data"]["test"] == 0
  assert metrics["data"]["train"] == metrics["data"]["interactions"]
  assert metrics["retrieval"] == {} and metrics["rmse"] == {}
  assert any(r.get("refit") for r in metrics["history"])
  assert "test report is skipped" in capsys.readouterr().err
  assert "No test split" in (run_dir / "report.md").read_text()
  for model in saved_models.MODEL_NAMES:
    assert os.path.isfile(tmp_path / "export" / model / "1" / "saved_model.pb")


def test_data_too_small_to_split_is_one_line_and_exit_2(tmp_path, capsys):
  ratings = tmp_path / "tiny.csv"
  _write_ratings(ratings, [("u1", "i1", 4, 1), ("u2", "i2", 3, 2)])
  assert train.main(["--ratings", str(ratings), "--run-dir",
                     str(tmp_path / "run")]) == 2
  err = capsys.readouterr().err.strip()
  assert err.count("\n") == 0 and err.startswith("error: ")
  assert "too small to split" in err and "--test-fraction 0" in err
  assert not (tmp_path / "run").exists()


def test_production_fit_refuses_cold_items(tmp_path, capsys):
  assert train.main([*TINY, "--test-fraction", "0", "--cold-items", "0.1",
                     "--run-dir", str(tmp_path / "run")]) == 2
  assert "--cold-items" in capsys.readouterr().err


def test_config_of_an_older_version_names_the_new_setting(tmp_path, capsys):
  old = tmp_path / "old.yaml"
  old.write_text(yaml.safe_dump({"augment": "gan", "seed": 3}))
  assert train.main(["--config", str(old), "--run-dir",
                     str(tmp_path / "run")]) == 2
  assert "augmentation.source" in capsys.readouterr().err
  old.write_text(yaml.safe_dump({"gan": {"loss": "minimax"}}))
  assert train.main(["--config", str(old), "--run-dir",
                     str(tmp_path / "run")]) == 2
  assert "'modified'" in capsys.readouterr().err


def test_augment_auto_says_what_it_used_and_why(tmp_path):
  run_dir = run(tmp_path, "auto", "--augment", "auto", "--gan-steps", "10",
                "--gan-batch-size", "32", "--user-gan-steps", "20")
  metrics = json.loads((run_dir / "metrics.json").read_text())
  decision = metrics["decisions"]["generated interactions"]
  assert decision.startswith(("kept:", "not used:"))
  assert "validation Recall@20" in decision
  assert "user generator" in metrics["decisions"]
  # New items: decided on the items first taken in the validation split.
  new_items = metrics["decisions"]["new-item embeddings"]
  assert new_items.startswith(("kept", "not used:")), new_items
  report = (run_dir / "report.md").read_text()
  assert "- generated interactions: " in report
  assert "- new-item embeddings: " in report


def test_augment_auto_needs_a_validation_split(tmp_path, capsys):
  assert train.main([*TINY, "--augment", "auto", "--validation-fraction",
                     "0", "--run-dir", str(tmp_path / "run")]) == 2
  assert "--validation-fraction above 0" in capsys.readouterr().err


def test_cold_users_get_a_new_slice_and_group_popularity(tmp_path):
  run_dir = run(tmp_path, "cold", "--cold-users", "0.2", "--augment", "gan",
                "--gan-steps", "10", "--gan-batch-size", "32",
                "--user-gan-steps", "20", "--augment-items", "0")
  metrics = json.loads((run_dir / "metrics.json").read_text())
  assert "GroupPop" in metrics["retrieval"]
  softmax = [name for name in metrics["retrieval"]
             if name.startswith("FeatureSoftmax (l2=")]
  assert len(softmax) == 1
  # EASE keeps its own lambda (from its validation grid).
  ease = [name for name in metrics["retrieval"] if name.startswith("EASE")]
  assert len(ease) == 1 and float(ease[0][len("EASE (lambda="):-1]) in (
      50, 100, 200, 500, 1000, 2000)
  assert "TFRS + GAN interactions" not in metrics["retrieval"]
  for name in ("TFRS two-stage", "TFRS + GAN user generator", "GroupPop",
               "MostPop", "user generator alone", *softmax):
    assert metrics["retrieval"][name]["new"]["users"] == round(0.2 * 75)
  assert "| TFRS + GAN user generator | new |" in (
      run_dir / "report.md").read_text()
  # The feature softmax serves the new users, and only them.
  assert metrics["decisions"]["users without history"].startswith(
      "the feature softmax")
  served = metrics["retrieval"][pipeline.NEW_USERS_NAME]
  assert served["new"] == pytest.approx(metrics["retrieval"][softmax[0]]["new"])
  assert served["dense"] == metrics["retrieval"]["TFRS + GAN user generator"][
      "dense"]
  # The exported retrieval gives a new user the softmax's best items.
  config = pipeline.load_run_config(str(run_dir))
  ready = pipeline.prepare(config.data, config.seed)
  new = ready.data.user_ids[ready.user_slices["new"][1:]][:5]
  l2 = float(softmax[0][len("FeatureSoftmax (l2="):-1])
  scores = baselines.FeatureSoftmax(
      ready.matrices["train"], ready.data.user_features, l2).scores(
          ready.user_slices["new"].nonzero()[0][:5])
  retrieved = tf.saved_model.load(str(tmp_path / "export" / "retrieval" / "1")
                                  ).signatures["serving_default"](
                                      user_id=tf.constant(new))
  index = {item: i + 1 for i, item in enumerate(ready.data.item_ids)}
  for row, items in zip(scores, retrieved["item_ids"].numpy().astype(str)):
    # Each of the 20 is among the softmax's best 20 (float32 ties aside).
    twentieth = np.sort(row[1:])[-20]
    assert all(row[index[item]] >= twentieth - 1e-4 for item in items)
  # The two-stage model re-ranks the softmax's best 100 for them.
  recommended = tf.saved_model.load(str(tmp_path / "export" / "recommend" / "1")
                                    ).signatures["serving_default"](
      user_id=tf.constant(new), k=tf.constant([10] * len(new), tf.int32))
  for row, items in zip(scores, recommended["item_ids"].numpy().astype(str)):
    hundredth = np.sort(row[1:])[-min(100, len(row) - 1)]
    assert all(row[index[item]] >= hundredth - 1e-4 for item in items)
