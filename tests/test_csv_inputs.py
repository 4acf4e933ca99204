"""Bad input: one clear line naming file, row and field; exit 2; no change."""
import os
import subprocess
import sys

import pytest

from tfgan_rec import train
from tfgan_rec.data import csv_logs
from tfgan_rec.errors import InputError


def write(tmp_path, name, text):
  path = tmp_path / name
  path.write_text(text)
  return str(path)


def run_cli(capsys, *args):
  code = train.main(list(args))
  return code, capsys.readouterr().err


def error_line(capsys, *args):
  code, err = run_cli(capsys, *args)
  assert code == 2
  lines = [line for line in err.strip().splitlines()
           if line.startswith("error:")]
  assert len(lines) == 1, err
  assert "Traceback" not in err
  return lines[0]


GOOD = "user_id,item_id,rating,timestamp\nu1,i1,4,10\nu1,i2,3,11\nu2,i1,5,12\n"


def test_missing_file_names_flag(capsys, tmp_path):
  line = error_line(capsys, "--ratings", str(tmp_path / "nope.csv"))
  assert "nope.csv" in line and "--ratings" in line


def test_misnamed_column_suggests_rename(capsys, tmp_path):
  path = write(tmp_path, "r.csv", "user_id,itemid,rating\nu1,i1,4\n")
  line = error_line(capsys, "--ratings", path)
  assert "r.csv" in line and "'item_id'" in line and "rename column 'itemid'" in line


def test_missing_column_lists_found_columns(capsys, tmp_path):
  path = write(tmp_path, "r.csv", "user_id,rating\nu1,4\n")
  line = error_line(capsys, "--ratings", path)
  assert "missing required column 'item_id'" in line and "found: user_id, rating" in line


def test_non_numeric_rating_names_line_and_field(capsys, tmp_path):
  path = write(tmp_path, "r.csv", "user_id,item_id,rating\nu1,i1,4\nu1,i2,abc\n")
  line = error_line(capsys, "--ratings", path)
  assert "r.csv line 3" in line and "'rating'" in line and "'abc'" in line


@pytest.mark.parametrize("value", ["", "NaN", "inf"])
def test_missing_or_nan_rating(capsys, tmp_path, value):
  path = write(tmp_path, "r.csv", f"user_id,item_id,rating\nu1,i1,{value}\nu1,i2,3\n")
  line = error_line(capsys, "--ratings", path)
  assert "line 2" in line and "'rating'" in line


def test_empty_file(capsys, tmp_path):
  path = write(tmp_path, "r.csv", "")
  assert "is empty" in error_line(capsys, "--ratings", path)


def test_header_only(capsys, tmp_path):
  path = write(tmp_path, "r.csv", "user_id,item_id\n")
  assert "no data rows" in error_line(capsys, "--ratings", path)


def test_empty_id(capsys, tmp_path):
  path = write(tmp_path, "r.csv", "user_id,item_id\nu1,i1\n,i2\n")
  line = error_line(capsys, "--ratings", path)
  assert "line 3" in line and "'user_id' is empty" in line


def test_bad_timestamp(capsys, tmp_path):
  path = write(tmp_path, "r.csv", "user_id,item_id,timestamp\nu1,i1,10\nu1,i2,yesterday\n")
  line = error_line(capsys, "--ratings", path)
  assert "line 3" in line and "'timestamp'" in line


def test_iso_timestamps_accepted(tmp_path):
  path = write(tmp_path, "r.csv", "user_id,item_id,timestamp\nu1,i1,2024-01-02\nu1,i2,2024-01-01T10:00:00\n")
  ratings = csv_logs.read_ratings(path)
  assert list(ratings["item_id"]) == ["i2", "i1"]


def test_duplicates_deduplicated_with_warning(tmp_path, caplog):
  path = write(tmp_path, "r.csv", "user_id,item_id,rating,timestamp\n"
               "u1,i1,2,10\nu1,i1,5,20\nu1,i2,3,11\nu1,i1,5,20\n")
  ratings = csv_logs.read_ratings(path)
  assert len(ratings) == 2
  assert ratings.set_index("item_id").loc["i1", "rating"] == 5.0
  assert "2 repeated (user_id, item_id) rows" in caplog.text


def test_duplicate_feature_rows(capsys, tmp_path):
  ratings = write(tmp_path, "r.csv", GOOD)
  users = write(tmp_path, "u.csv", "user_id,age\nu1,20\nu2,30\nu1,40\n")
  line = error_line(capsys, "--ratings", ratings, "--users", users)
  assert "u.csv line 4" in line and "'u1' appears more than once" in line


def test_feature_rows_for_unknown_ids_kept_as_cold(tmp_path, caplog):
  ratings = csv_logs.read_ratings(write(tmp_path, "r.csv", GOOD))
  items = csv_logs.read_features(
      write(tmp_path, "i.csv", "item_id,genres\ni1,a|b\ni2,b\ni9,c\n"),
      "item_id", "--items")
  extra = csv_logs.check_feature_ids(items, ratings["item_id"], "i.csv",
                                     "item_id", "item")
  assert extra == ["i9"]


def test_feature_file_with_no_known_ids(capsys, tmp_path):
  ratings = write(tmp_path, "r.csv", GOOD)
  items = write(tmp_path, "i.csv", "item_id,genres\nx1,a\nx2,b\n")
  line = error_line(capsys, "--ratings", ratings, "--items", items)
  assert "i.csv" in line and "none of its item_id values" in line


def test_bad_yaml_config(capsys, tmp_path):
  config = write(tmp_path, "c.yaml", "train:\n  epochs: [1\n")
  assert "c.yaml line" in error_line(capsys, "--config", config)


def test_unknown_config_key(capsys, tmp_path):
  config = write(tmp_path, "c.yaml", "train:\n  epoch: 3\n")
  assert "train: epoch: unknown setting" in error_line(capsys, "--config", config)


@pytest.mark.parametrize("flags, name", [
    (["--test-fraction", "1.5"], "data.test_fraction"),
    (["--epochs", "0"], "train.epochs"),
    (["--dataset", "netflix"], "data.dataset"),
    (["--batch-size", "ten"], None)])
def test_settings_out_of_range(capsys, flags, name):
  if name is None:  # argparse's own type error, also exit 2
    with pytest.raises(SystemExit) as exit_info:
      train.main(flags)
    assert exit_info.value.code == 2
    assert "--batch-size" in capsys.readouterr().err
    return
  assert name in error_line(capsys, *flags)


def test_input_files_are_never_modified(capsys, tmp_path):
  path = write(tmp_path, "r.csv", "user_id,item_id,rating\nu1,i1,x\n")
  before = (os.path.getmtime(path), open(path).read())
  error_line(capsys, "--ratings", path)
  assert (os.path.getmtime(path), open(path).read()) == before
  assert os.listdir(tmp_path) == ["r.csv"]


def test_subprocess_exit_code_and_single_line(tmp_path):
  path = write(tmp_path, "r.csv", "user_id,item_id,rating\nu1,i1,x\n")
  result = subprocess.run(
      [sys.executable, "-m", "tfgan_rec.train", "--ratings", path,
       "--run-dir", str(tmp_path / "run")],
      capture_output=True, text=True, check=False)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith("error: ")
  assert "Traceback" not in result.stderr
  assert not (tmp_path / "run").exists()


def test_input_error_is_exit_code_two():
  assert InputError.exit_code == 2
