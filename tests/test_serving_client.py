"""serving/: the TF Serving configs parse with its protos; the client builds
correct REST and gRPC requests and works over both wire protocols; a real
TF Serving is tested when TFGAN_REC_SERVING_URL names one."""
import importlib.util
import json
import os
import urllib.request

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format

from helpers import fake_serving, serving_protos
from tfgan_rec import saved_models

SERVING = os.path.join(os.path.dirname(__file__), "..", "serving")
REAL_SERVER = os.environ.get("TFGAN_REC_SERVING_URL")


def _load_client():
  spec = importlib.util.spec_from_file_location(
      "serving_client", os.path.join(SERVING, "client.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


client = _load_client()


def _read(name):
  with open(os.path.join(SERVING, name), encoding="utf-8") as handle:
    return handle.read()


def test_models_config_names_every_exported_model():
  from tensorflow_serving.config import model_server_config_pb2
  config = text_format.Parse(_read("models.config"),
                             model_server_config_pb2.ModelServerConfig())
  models = config.model_config_list.config
  assert [m.name for m in models] == list(saved_models.MODEL_NAMES)
  for model in models:
    assert model.base_path == f"/models/export/{model.name}"
    assert model.model_platform == "tensorflow"


def test_batching_and_monitoring_configs_parse():
  messages = serving_protos.message_classes()
  batching = text_format.Parse(_read("batching.config"),
                               messages["BatchingParameters"]())
  assert batching.max_batch_size.value == 64
  assert batching.num_batch_threads.value >= 1
  assert not batching.pad_variable_length_inputs
  monitoring = text_format.Parse(_read("monitoring.config"),
                                 messages["MonitoringConfig"]())
  assert monitoring.prometheus_config.enable
  assert monitoring.prometheus_config.path.startswith("/")


def test_config_schema_rejects_a_misspelled_field():
  messages = serving_protos.message_classes()
  with pytest.raises(text_format.ParseError, match="max_batch_sise"):
    text_format.Parse("max_batch_sise { value: 8 }",
                      messages["BatchingParameters"]())


def _signature_inputs(loaded, signature):
  specs = loaded["recommend"].signatures[signature].structured_input_signature
  return {name: spec.dtype for name, spec in specs[1].items()}


def test_rest_bodies_are_columnar_and_name_the_signature_inputs(
    serving_export):
  _, _, loaded = serving_export
  body = json.loads(json.dumps(client.rest_body(
      "recommend_group", client.group_request(["1", "2"], "least_misery", 4))))
  assert body["signature_name"] == "recommend_group"
  assert body["inputs"]["member_ids"] == [
      ["1", "2"] + [""] * (client.GROUP_WIDTH - 2)]
  assert body["inputs"]["strategy"] == ["least_misery"]
  assert body["inputs"]["k"] == [4]
  assert set(body["inputs"]) == set(_signature_inputs(loaded,
                                                      "recommend_group"))
  assert (client.rest_url("http://h:8501/") ==
          "http://h:8501/v1/models/recommend:predict")
  assert (client.rest_url("http://h:8501", "ranking", 3) ==
          "http://h:8501/v1/models/ranking/versions/3:predict")


def test_grpc_requests_carry_typed_tensors(serving_export):
  _, _, loaded = serving_export
  features = {"age": "30", "gender": "F", "occupation": "student"}
  request = client.grpc_request("recommend_for_features",
                                client.features_request(features, ["7"], 5))
  assert request.model_spec.name == "recommend"
  assert request.model_spec.signature_name == "recommend_for_features"
  expected = _signature_inputs(loaded, "recommend_for_features")
  assert set(request.inputs) == set(expected)
  for name, proto in request.inputs.items():
    assert tf.dtypes.as_dtype(proto.dtype) == expected[name]
  liked = tf.make_ndarray(request.inputs["liked_item_ids"])
  assert liked.shape == (1, client.LIKED_WIDTH) and liked[0, 0] == b"7"


def test_padding_members_with_empty_ids_leaves_the_answer_unchanged(
    serving_export):
  ready, _, loaded = serving_export
  group = loaded["recommend"].signatures["recommend_group"]
  members = list(ready.data.user_ids[:3])
  answers = []
  for width in (3, client.GROUP_WIDTH):
    answers.append(group(
        member_ids=tf.constant([members + [""] * (width - 3)]),
        strategy=tf.constant(["least_misery"]),
        k=tf.constant([5], tf.int32))["item_ids"].numpy())
  np.testing.assert_array_equal(answers[0], answers[1])


@pytest.fixture(scope="module")
def fake_servers(serving_export):
  _, _, loaded = serving_export
  rest_url, rest = fake_serving.serve_rest(loaded)
  grpc_target, grpc_server = fake_serving.serve_grpc(loaded)
  yield rest_url, grpc_target
  rest.shutdown()
  grpc_server.stop(None)


def _printed_items(output):
  lines = output.strip().splitlines()
  assert lines[0] == "rank\titem_id\tscore"
  return [line.split("\t")[1] for line in lines[1:]]


def test_cli_gets_the_same_recommendations_over_rest_and_grpc(
    serving_export, fake_servers, capsys):
  ready, _, loaded = serving_export
  user = ready.data.user_ids[0]
  direct = loaded["recommend"].signatures["serving_default"](
      user_id=tf.constant([user]), k=tf.constant([5], tf.int32))
  expected = list(direct["item_ids"].numpy()[0].astype(str))
  rest_url, grpc_target = fake_servers
  for protocol, address in (("rest", rest_url), ("grpc", grpc_target)):
    host, port = address.replace("http://", "").rsplit(":", 1)
    assert client.main(["--user", user, "-k", "5", "--protocol", protocol,
                        "--host", host, "--port", port]) == 0
    assert _printed_items(capsys.readouterr().out) == expected


def test_cli_group_and_new_user_requests(serving_export, fake_servers, capsys):
  ready, _, _ = serving_export
  rest_url, _ = fake_servers
  host, port = rest_url.replace("http://", "").rsplit(":", 1)
  where = ["--host", host, "--port", port]
  members = ",".join(ready.data.user_ids[:3])
  assert client.main(["--group", members, "--strategy", "least_misery",
                      "-k", "4", *where]) == 0
  assert len(_printed_items(capsys.readouterr().out)) == 4
  liked = ready.data.item_ids[0]
  assert client.main(["--features", "age=30,gender=F,occupation=student",
                      "--liked", liked, "-k", "6", *where]) == 0
  items = _printed_items(capsys.readouterr().out)
  assert len(items) == 6 and liked not in items


def test_server_side_errors_reach_the_user_as_one_line(fake_servers, capsys):
  rest_url, grpc_target = fake_servers
  host, port = rest_url.replace("http://", "").rsplit(":", 1)
  assert client.main(["--user", "1", "-k", "0", "--host", host,
                      "--port", port]) == 1
  err = capsys.readouterr().err
  assert err.startswith("error: ") and "k must be between 1 and" in err
  assert len(err.strip().splitlines()) == 1
  with pytest.raises(client.ServingError, match="strategy must be one of"):
    client.predict_grpc(grpc_target, "recommend_group", {
        "member_ids": np.array([["1"]], dtype=object),
        "strategy": np.array(["dictator"], dtype=object),
        "k": np.array([3], np.int32)})
  assert client.main(["--user", "1", "--host", "127.0.0.1",
                      "--port", "9"]) == 1
  assert "cannot reach" in capsys.readouterr().err


# --- a real TF Serving -------------------------------------------------------

real_server = pytest.mark.skipif(
    not REAL_SERVER, reason="set TFGAN_REC_SERVING_URL (e.g. "
    "http://localhost:8501) to test against a running TF Serving")


def _metadata(model):
  url = f"{REAL_SERVER.rstrip('/')}/v1/models/{model}/metadata"
  with urllib.request.urlopen(url, timeout=10) as response:
    return json.load(response)["metadata"]["signature_def"]["signature_def"]


@real_server
def test_real_server_serves_every_model_and_signature():
  for model in saved_models.MODEL_NAMES:
    assert "serving_default" in _metadata(model)
  assert {"recommend_for_features", "recommend_group"} <= set(
      _metadata("recommend"))


@real_server
def test_real_server_recommends_and_rejects_bad_requests():
  outputs = client.predict_rest(REAL_SERVER, "serving_default",
                                client.user_request("1", 10))
  assert np.asarray(outputs["item_ids"]).shape == (1, 10)
  group = client.predict_rest(REAL_SERVER, "recommend_group",
                              client.group_request(["1", "2"], "average", 5))
  assert len(group["item_ids"][0]) == 5
  feature_inputs = _metadata("recommend")["recommend_for_features"]["inputs"]
  features = {name: "" for name in feature_inputs
              if name not in ("liked_item_ids", "k")}
  new_user = client.predict_rest(
      REAL_SERVER, "recommend_for_features",
      client.features_request(features, [], 3))
  assert len(new_user["item_ids"][0]) == 3
  with pytest.raises(client.ServingError, match="k must be between"):
    client.predict_rest(REAL_SERVER, "serving_default",
                        client.user_request("1", 0))
