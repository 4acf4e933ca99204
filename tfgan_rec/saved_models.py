"""Versioned SavedModels in the layout TF Serving loads.

    <export_dir>/retrieval/<version>/   serving_default(user_id) ->
                                        item_ids [batch, K], scores [batch, K]
    <export_dir>/ranking/<version>/     serving_default(user_id, item_id) ->
                                        score [batch]
    <export_dir>/recommend/<version>/   two-stage: serving_default(user_id, k),
                                        recommend_for_features(...),
                                        recommend_group(member_ids, strategy, k)

(signatures documented in `tfgan_rec.signatures`). Each version carries
`assets.extra/tf_serving_warmup_requests`: real PredictionLog records, one
per signature, that TF Serving replays before it reports the model ready.

Versions are increasing integers shared by both models of one run. Each
version is written to a hidden temporary folder beside it and renamed into
place only when complete, so TF Serving (which only loads all-digit folder
names) never sees a half-written model; an existing version is never
overwritten, and only the newest `keep_versions` are kept.
"""
import os
import re
import shutil
from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from tfgan_rec import signatures
from tfgan_rec.recommender.model import TwoStageModel

MODEL_NAMES = ("retrieval", "ranking", "recommend")
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")


def versions(model_dir: str) -> List[int]:
  """The complete versions in `model_dir`, oldest first."""
  if not os.path.isdir(model_dir):
    return []
  return sorted(int(name) for name in os.listdir(model_dir) if name.isdigit())


def next_version(export_dir: str) -> int:
  latest = [max(versions(os.path.join(export_dir, name)), default=0)
            for name in MODEL_NAMES]
  return max(latest) + 1


def save_version(module: tf.Module, signatures: Dict[str, object],
                 model_dir: str, version: int,
                 warmup: Optional[Dict[str, dict]] = None) -> str:
  """Writes `module` as `model_dir/version`, atomically, with warmup
  requests ({signature: {input: value}}) when given."""
  os.makedirs(model_dir, exist_ok=True)
  remove_abandoned_staging(model_dir)
  final = os.path.join(model_dir, str(version))
  if os.path.exists(final):
    raise FileExistsError(f"{final} already exists; versions are never "
                          f"overwritten.")
  staging = os.path.join(model_dir, f".tmp-{version}-{os.getpid()}")
  shutil.rmtree(staging, ignore_errors=True)
  try:
    tf.saved_model.save(module, staging, signatures=signatures)
    if warmup:
      write_warmup(os.path.join(staging, WARMUP_FILE),
                   os.path.basename(model_dir), warmup)
    os.rename(staging, final)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return final


def _process_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def remove_abandoned_staging(model_dir: str) -> None:
  """Deletes staging folders left by exports that were killed (SIGKILL,
  power loss); those of exports still running are left alone."""
  for name in os.listdir(model_dir):
    match = re.fullmatch(r"\.tmp-\d+-(\d+)", name)
    if match and not _process_alive(int(match.group(1))):
      shutil.rmtree(os.path.join(model_dir, name), ignore_errors=True)


def write_warmup(path: str, model_name: str,
                 requests: Dict[str, dict]) -> None:
  """TFRecord of PredictionLog(PredictLog(PredictRequest)) per signature."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with tf.io.TFRecordWriter(path) as writer:
    for signature, inputs in requests.items():
      request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(
          name=model_name, signature_name=signature))
      for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
      log_record = prediction_log_pb2.PredictionLog(
          predict_log=prediction_log_pb2.PredictLog(request=request))
      writer.write(log_record.SerializeToString())


def prune(model_dir: str, keep: int) -> None:
  for old in versions(model_dir)[:-keep] if keep > 0 else []:
    shutil.rmtree(os.path.join(model_dir, str(old)))


def warmup_requests(user_ids: np.ndarray, item_ids: np.ndarray,
                    user_columns) -> Dict[str, Dict[str, dict]]:
  """Small real requests for every signature of every model."""
  users = np.asarray(user_ids[:2], dtype=object).astype(bytes)
  items = np.asarray(item_ids[:2], dtype=object).astype(bytes)
  k = np.array([5, 5], np.int32)
  features = {name: np.array([b"", b""]) for name in user_columns}
  return {
      "retrieval": {"serving_default": {"user_id": users}},
      "ranking": {"serving_default": {"user_id": users, "item_id": items}},
      "recommend": {
          "serving_default": {"user_id": users, "k": k},
          # The second row likes nothing: the new-user scorer's path too.
          "recommend_for_features": {
              **features, "liked_item_ids": np.array([[items[0]], [b""]]),
              "k": k},
          "recommend_group": {
              "member_ids": np.array([users, users[::-1]]),
              "strategy": np.array([b"average", b"least_misery"]), "k": k}},
  }


def export_models(model: TwoStageModel, user_ids: np.ndarray,
                  item_ids: np.ndarray, train_user: np.ndarray,
                  train_item: np.ndarray, export_dir: str, top_k: int = 20,
                  keep_versions: int = 3,
                  candidates: Optional[np.ndarray] = None,
                  user_columns=(), index: str = "exact",
                  shortlist_factor: int = 10) -> Dict[str, str]:
  """Exports retrieval, ranking and recommend as the next version; returns
  their paths.

  `candidates` ([num_items + 1, dim]) replaces the retrieval index's item
  embeddings, e.g. with generated ones for items nobody has rated;
  `user_columns` (the names of the raw user feature columns, the model's)
  are the feature inputs of `recommend_for_features`; `index` and
  `shortlist_factor` choose how retrieval and recommend search the catalogue
  (see `tfgan_rec.signatures`).
  """
  version = next_version(export_dir)
  catalogue = (model, user_ids, item_ids, train_user, train_item)
  search = {"candidates": candidates, "index": index,
            "shortlist_factor": shortlist_factor}
  retrieval = signatures.RetrievalModule(*catalogue, top_k=top_k, **search)
  ranking = signatures.RankingModule(model, user_ids, item_ids)
  recommend = signatures.RecommendModule(*catalogue, user_columns=user_columns,
                                         **search)
  exported = {
      "retrieval": (retrieval, {"serving_default": retrieval.recommend}),
      "ranking": (ranking, {"serving_default": ranking.score}),
      "recommend": (recommend, {
          "serving_default": recommend.recommend,
          "recommend_for_features": recommend.recommend_for_features,
          "recommend_group": recommend.recommend_group})}
  warmup = warmup_requests(user_ids, item_ids, user_columns)
  paths = {name: save_version(module, sigs, os.path.join(export_dir, name),
                              version, warmup[name])
           for name, (module, sigs) in exported.items()}
  for name in MODEL_NAMES:
    prune(os.path.join(export_dir, name), keep_versions)
  return paths
