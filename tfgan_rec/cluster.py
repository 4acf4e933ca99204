"""Which task of a `TF_CONFIG` cluster this process is, and where it writes.

Under `MultiWorkerMirroredStrategy` every worker runs the same program and
must take part in everything collective: the training steps, and saving (a
checkpoint or SavedModel reads synchronised variables through an
all-reduce). Only the chief's files are kept: as TensorFlow's multi-worker
guide prescribes, the other workers write theirs to a temporary folder that
is deleted when they are done.

>>> from unittest import mock
>>> two = ('{"cluster": {"worker": ["a:1", "b:1"]}, '
...        '"task": {"type": "worker", "index": 1}}')
>>> with mock.patch.dict(os.environ, {"TF_CONFIG": two}):
...   print(workers(), is_chief())
2 False
"""
import contextlib
import json
import os
import shutil
import tempfile
from typing import Iterator, Tuple


def _tf_config() -> dict:
  return json.loads(os.environ.get("TF_CONFIG") or "{}")


def workers() -> int:
  """The number of training tasks (chief and workers) in TF_CONFIG; 1
  without a cluster."""
  cluster = _tf_config().get("cluster", {})
  return max(1, len(cluster.get("chief", [])) + len(cluster.get("worker",
                                                                 [])))


def task() -> Tuple[str, int]:
  """This process's task type and index ("worker", 0 without a
  cluster)."""
  spec = _tf_config().get("task", {})
  return spec.get("type", "worker"), int(spec.get("index", 0))


def is_chief() -> bool:
  """Whether this process keeps the run's files: the `chief` task, or
  worker 0 of a cluster without one (TensorFlow's rule); True without a
  cluster."""
  kind, index = task()
  if "chief" in _tf_config().get("cluster", {}):
    return kind == "chief"
  return index == 0


@contextlib.contextmanager
def output_dir(directory: str) -> Iterator[str]:
  """`directory` on the chief; on any other worker a temporary folder,
  deleted at the end."""
  if is_chief():
    yield directory
    return
  scratch = tempfile.mkdtemp(prefix="tfgan_rec-worker-")
  try:
    yield scratch
  finally:
    shutil.rmtree(scratch, ignore_errors=True)


def checkpoint_path(directory: str) -> str:
  """Where this worker keeps its checkpoints of `directory`: the folder
  itself on the chief; on any other worker its own subfolder (saving is
  collective, so every worker saves, and each resumes from its own)."""
  if is_chief():
    return directory
  return os.path.join(directory, f".worker-{task()[1]}")
