"""`python -m tfgan_rec.train` end to end on tiny synthetic data."""
import json
import os

import pytest
import yaml

from tfgan_rec import train

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


def test_flags_override_yaml(tmp_path):
  config_file = tmp_path / "c.yaml"
  config_file.write_text(yaml.safe_dump({"train": {"epochs": 9, "batch_size": 64},
                                         "seed": 3}))
  args = train.build_parser().parse_args(["--config", str(config_file),
                                          "--epochs", "2"])
  config = train.resolve_config(args)
  assert (config.train.epochs, config.train.batch_size, config.seed) == (2, 64, 3)


def test_existing_run_dir_is_not_overwritten(first_run, capsys):
  tmp_path, run_dir = first_run
  before = (run_dir / "metrics.json").read_text()
  code = train.main([*TINY, "--run-dir", str(run_dir), "--no-export"])
  assert code == 2
  assert "already holds a run" in capsys.readouterr().err
  assert (run_dir / "metrics.json").read_text() == before


def test_csv_logs_run(tmp_path):
  ratings = tmp_path / "r.csv"
  rows = ["user_id,item_id,rating,timestamp"]
  for u in range(30):
    for j in range(12):
      rows.append(f"u{u},i{(u * 3 + j * 7) % 40},{1 + (u + j) % 5},{j}")
  ratings.write_text("\n".join(rows) + "\n")
  items = tmp_path / "i.csv"
  items.write_text("item_id,genres,year\n" + "\n".join(
      f"i{i},g{i % 4}|g{(i + 1) % 4},{1990 + i}" for i in range(45)) + "\n")
  run_dir = tmp_path / "run"
  assert train.main(["--ratings", str(ratings), "--items", str(items),
                     "--epochs", "2", "--run-dir", str(run_dir),
                     "--export-dir", str(tmp_path / "export")]) == 0
  metrics = json.loads((run_dir / "metrics.json").read_text())
  assert metrics["data"]["items"] == 45  # unrated items join the catalogue


def test_augment_gan_reports_both_models_and_new_items(tmp_path):
  run_dir = run(tmp_path, "gan", "--augment", "gan", "--gan-steps", "20",
                "--gan-batch-size", "32", "--cold-items", "0.1")
  metrics = json.loads((run_dir / "metrics.json").read_text())
  assert {"TFRS + GAN augmentation", "TFRS two-stage"} <= set(metrics["retrieval"])
  assert metrics["augmentation"]["generated"] > 0
  new_items = metrics["new_items"]
  assert set(new_items["retrieval"]) == {"tower embeddings", "random",
                                         "GAN-generated embeddings"}
  assert new_items["generated_embeddings"] >= new_items["cold_items"]
  report = (run_dir / "report.md").read_text()
  assert "| TFRS + GAN augmentation | sparse |" in report
  assert "## New items" in report


def test_gan_checkpoints_need_resume(tmp_path, capsys):
  run_dir = tmp_path / "killed"
  (run_dir / "gan_checkpoints").mkdir(parents=True)
  (run_dir / "gan_checkpoints" / "checkpoint").write_text("x")
  code = train.main([*TINY, "--augment", "gan", "--run-dir", str(run_dir),
                     "--no-export"])
  assert code == 2
  assert "pass --resume" in capsys.readouterr().err
