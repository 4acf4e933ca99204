"""`python -m tfgan_rec.tune`: a tiny search, resume, and a best config that
`train` reproduces."""
import json

import keras_tuner as kt
import pytest
import yaml

from tfgan_rec import config as config_lib
from tfgan_rec import pipeline, train, tune, tuning

DATA = ["--dataset", "synthetic", "--synthetic-interactions", "3000",
        "--patience", "1", "--seed", "3"]


def test_search_resumes_and_best_config_reproduces(tmp_path, capsys):
  args = [*DATA, "--tuner", "random", "--max-trials", "2", "--directory",
          str(tmp_path / "tuning"), "--project-name", "tiny"]
  assert tune.main(args) == 0
  project = tmp_path / "tuning" / "tiny"
  summary = json.loads((project / "trials.json").read_text())
  assert summary["trials"] == 2
  assert (project / "trials.md").read_text().count("\n") == 4  # header + 2

  # A second call resumes: the two finished trials are not run again.
  capsys.readouterr()
  assert tune.main(args) == 0
  assert "trial 0" not in capsys.readouterr().err
  assert json.loads((project / "trials.json").read_text())["trials"] == 2

  # The best configuration loads in train unchanged and reproduces the
  # trial's validation Recall@20 under the same seed.
  best = yaml.safe_load((project / "best_config.yaml").read_text())
  assert best["seed"] == 3
  run_dir = tmp_path / "run"
  assert train.main(["--config", str(project / "best_config.yaml"),
                     "--run-dir", str(run_dir), "--no-export"]) == 0
  metrics = json.loads((run_dir / "metrics.json").read_text())
  reproduced = pipeline.best_validation(metrics["history"], 20)
  assert abs(reproduced - summary["best_score"]) < 1e-6


def test_unknown_space_is_an_input_error(tmp_path, capsys):
  code = tune.main([*DATA, "--space", "everything", "--directory",
                    str(tmp_path)])
  assert code == 2
  assert "--space 'everything' is unknown" in capsys.readouterr().err


def test_graph_space_sets_the_graph_tower():
  space = kt.HyperParameters()
  space.values.update(graph_layers=3, graph_combination="learned",
                      graph_normalization="row", graph_edge_dropout=0.2,
                      embedding_dim=32, pooled_history=False)
  config = tuning.configure_trial(config_lib.RunConfig(), space, ["graph"])
  model = config.model
  assert (model.tower, model.graph_layers, model.graph_combination,
          model.graph_normalization, model.graph_edge_dropout,
          model.embedding_dim, model.pooled_history) == (
              "graph", 3, "learned", "row", 0.2, 32, False)
  base = config_lib.RunConfig()
  base.model.tower = "id+graph"
  assert tuning.configure_trial(base, space,
                                ["graph"]).model.tower == "id+graph"
  # A base that propagates once per epoch is searched without edge
  # dropout, which needs a propagation per step.
  base = config_lib.RunConfig()
  base.model.graph_propagation = "epoch"
  declared = kt.HyperParameters()
  tuning.configure_trial(base, declared, ["graph"])
  assert "graph_edge_dropout" not in declared.values
  assert tuning.configure_trial(base, space,
                                ["graph"]).model.graph_edge_dropout == 0.0


@pytest.mark.parametrize("flag", ["--search-seed", "--initial-trials",
                                  "--max-trials"])
def test_search_flags_below_one_are_input_errors(flag, tmp_path, capsys):
  code = tune.main([*DATA, flag, "0", "--directory", str(tmp_path)])
  assert code == 2
  assert f"{flag} 0" in capsys.readouterr().err


def test_gan_space_needs_augment(tmp_path, capsys):
  code = tune.main([*DATA, "--space", "gan", "--directory", str(tmp_path)])
  assert code == 2
  assert "needs --augment gan" in capsys.readouterr().err


def test_hyperband_uses_epochs_as_budget(tmp_path):
  assert tune.main([*DATA, "--synthetic-interactions", "2000", "--epochs", "3",
                    "--tuner", "hyperband", "--directory",
                    str(tmp_path)]) == 0
  project = tmp_path / "tfgan_rec"
  best = yaml.safe_load((project / "best_config.yaml").read_text())
  assert 1 <= best["train"]["epochs"] <= 3
  assert "| epochs |" not in (project / "trials.md").read_text()
