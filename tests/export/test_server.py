"""`remi serve` on 127.0.0.1: REST and gRPC round trips through the client, errors, new versions."""

import http.client
import json
import logging
import os
import shutil
import socket
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import tensorflow as tf

from remi_tf.export import client as client_lib
from remi_tf.export import exporter, rest, serving_layout
from remi_tf.export.server import Server

REQUEST_TIMEOUT_S = 30


def serve_copy(export_dir, tmp_path_factory, **options) -> Server:
    """A server on a private copy of the export (a test may publish versions into it)."""
    directory = str(tmp_path_factory.mktemp("served") / "export")
    shutil.copytree(export_dir, directory)
    return Server(directory, port=0, grpc_port=0, poll_seconds=3600, max_batch_size=8, **options).start()


@pytest.fixture(scope="module")
def server(export_dir, tmp_path_factory):
    """Shared by the tests that only read from it."""
    running = serve_copy(export_dir, tmp_path_factory)
    yield running
    running.stop()


@pytest.fixture
def own_server(export_dir, tmp_path_factory):
    """For a test that changes what is served."""
    running = serve_copy(export_dir, tmp_path_factory)
    yield running
    running.stop()


def post(server, path, body):
    request = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


HISTORIES = [["item2", "item3", "item4"], ["item500"]]


def test_rest_and_grpc_round_trips_agree_with_the_saved_model(server, export_dir):
    rest = client_lib.RemiClient(f"http://127.0.0.1:{server.port}", model="remi-exact").lookup(HISTORIES)
    grpc_results = client_lib.RemiClient(f"127.0.0.1:{server.grpc_port}", model="remi-exact",
                                         use_grpc=True).lookup(HISTORIES)
    direct = tf.saved_model.load(f"{export_dir}/remi-exact/1").signatures["serving_default"](
        history=tf.constant([["item2", "item3", "item4"], ["item500", "", ""]]))
    for results in (rest, grpc_results):
        assert [r.item_ids for r in results] == direct["item_ids"].numpy().astype(str).tolist()
        np.testing.assert_allclose([r.scores for r in results], direct["scores"].numpy(), rtol=1e-5)
        assert [r.interest for r in results] == direct["interest"].numpy().tolist()
        assert len(results[0].interest_item_ids) == 4


def test_a_rest_connection_serves_several_requests(server):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=REQUEST_TIMEOUT_S)
    try:
        sockets = []
        for history in HISTORIES:
            connection.request("POST", "/v1/models/remi-exact:predict", json.dumps({"instances": [history]}))
            response = connection.getresponse()
            assert response.status == 200 and len(json.loads(response.read())["predictions"]) == 1
            sockets.append(connection.sock)
        assert sockets[0] is sockets[1] is not None  # HTTP/1.1 keep-alive: no reconnect
    finally:
        connection.close()


def test_replies_larger_than_the_write_buffer_arrive_whole_on_a_kept_alive_connection(own_server):
    """A reply leaves in one write when it fits the handler's buffer and in two when it does not (headers
    first): both arrive whole, in order, on one connection."""
    own_server.http.RequestHandlerClass.wbufsize = 1024  # this server's handler class: a lookup's reply exceeds it
    connection = http.client.HTTPConnection("127.0.0.1", own_server.port, timeout=REQUEST_TIMEOUT_S)
    try:
        replies = []
        for body in (json.dumps({"instances": HISTORIES}), "{not json", json.dumps({"instances": HISTORIES[:1]})):
            connection.request("POST", "/v1/models/remi-exact:predict", body)
            response = connection.getresponse()
            replies.append((response.status, response.read()))
    finally:
        connection.close()
    (first_status, first), (error_status, error), (last_status, last) = replies
    assert (first_status, error_status, last_status) == (200, 400, 200)
    assert len(first) > 1024 > len(error) and b"JSON Parse error" in error
    first_row, last_row = json.loads(first)["predictions"][0], json.loads(last)["predictions"][0]
    assert first_row.keys() == last_row.keys()
    for key in first_row:  # row 0 of a batch and alone: the same answer, scores to float rounding (other shapes)
        if "scores" in key:
            np.testing.assert_allclose(first_row[key], last_row[key], rtol=1e-5)
        else:
            assert first_row[key] == last_row[key], key


def test_row_format_and_status(server):
    status, body = post(server, "/v1/models/remi-exact:predict",
                        json.dumps({"instances": [{"history": ["item2"]}, {"history": ["item3", "item4"]}]}).encode())
    assert status == 200 and len(body["predictions"]) == 2 and len(body["predictions"][0]["item_ids"]) == 20
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/v1/models/remi-exact",
                                timeout=REQUEST_TIMEOUT_S) as response:
        assert json.loads(response.read())["model_version_status"][0]["state"] == "AVAILABLE"


@pytest.mark.parametrize("body, status, message", [
    (b"{not json", 400, "JSON Parse error"),
    (json.dumps({"instances": [[1, 2]]}).encode(), 400, "expects strings"),
    (json.dumps({"inputs": {"history": [["item2"]] * 9}}).encode(), 400, "exceeds the maximum batch size 8"),
    (json.dumps({"signature_name": "nope", "inputs": [["item2"]]}).encode(), 400, "not found in signature def"),
    (json.dumps({"instances": [["item2"]], "inputs": [["item2"]]}).encode(), 400, "exactly one"),
])
def test_bad_requests_get_errors_and_the_server_stays_up(server, body, status, message):
    got_status, got = post(server, "/v1/models/remi-exact:predict", body)
    assert got_status == status and message in got["error"]
    assert post(server, "/v1/models/remi-exact:predict", json.dumps({"inputs": [["item2"]]}).encode())[0] == 200


def test_unknown_model_over_both_protocols(server):
    assert post(server, "/v1/models/missing:predict", b'{"inputs": [["a"]]}')[0] == 404
    with pytest.raises(client_lib.LookupFailed, match="NOT_FOUND"):
        client_lib.RemiClient(f"127.0.0.1:{server.grpc_port}", model="missing", use_grpc=True).lookup([["a"]])


def test_a_new_version_is_picked_up(own_server, trained_model_dir):
    exporter.export(trained_model_dir, own_server.registry.export_dir, index="brute-force", k=5, version=2)
    assert "remi/2" in own_server.registry.refresh()
    (result,) = client_lib.RemiClient(f"http://127.0.0.1:{own_server.port}", model="remi").lookup([["item2"]])
    assert len(result.item_ids) == 5  # the new version was exported with k = 5
    assert own_server.registry.status("remi")[0]["version"] == "2"


def raw_http(server, request: bytes, timeout: float = 20.0) -> tuple[int, dict]:
    """Sends raw bytes, returns (status, JSON body) of the reply (read up to its Content-Length: the
    server keeps HTTP/1.1 connections open)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as connection:
        connection.sendall(request)
        reply = b""
        while b"\r\n\r\n" not in reply and (chunk := connection.recv(65536)):
            reply += chunk
        head, _, body = reply.partition(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        while len(body) < length and (chunk := connection.recv(65536)):
            body += chunk
    return int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize("request_bytes, status, message", [
    (b"POST /v1/models/remi-exact:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"[" * 100_000,
     400, "nested too deeply"),
    (b"POST /v1/models/remi-exact:predict HTTP/1.1\r\nHost: x\r\n\r\n", 411, "Content-Length"),
    (b"POST /v1/models/remi-exact:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     411, "chunked"),
    (b"POST /v1/models/remi-exact:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n", 413, "exceeds"),
    (b"DELETE /v1/models/remi-exact HTTP/1.1\r\nHost: x\r\n\r\n", 405, "not allowed"),
    (b"OPTIONS /v1/models/remi-exact HTTP/1.1\r\nHost: x\r\n\r\n", 405, "not allowed"),
    (b"GARBAGE\r\n\r\n", 400, "Bad request"),
])
def test_http_level_bad_requests_get_json_errors(server, request_bytes, status, message):
    got_status, body = raw_http(server, request_bytes)
    assert got_status == status and message.lower() in body["error"].lower(), body


def test_a_body_shorter_than_its_content_length_is_answered_in_bounded_time(export_dir, tmp_path_factory):
    running = serve_copy(export_dir, tmp_path_factory, request_timeout_s=1.0)
    try:
        start = time.monotonic()
        status, body = raw_http(running, b"POST /v1/models/remi-exact:predict HTTP/1.1\r\nHost: x\r\n"
                                         b"Content-Length: 500\r\n\r\n{\"inputs\": ")
        assert status == 400 and "ended after 11 of the 500 bytes" in body["error"]
        assert time.monotonic() - start < 10
    finally:
        running.stop()


@pytest.mark.parametrize("body, message", [
    ({"inputs": [["item2", 2]]}, "expects strings, got 2 (int) in row 0"),
    ({"inputs": []}, "non-empty list of lists"),
    ({"instances": [["item2"]], "signature_name": "serving_default", "inputs": None}, "exactly one"),
])
def test_inputs_must_be_lists_of_strings(server, body, message):
    status, got = post(server, "/v1/models/remi-exact:predict", json.dumps(body).encode())
    assert status == 400 and message in got["error"], got


def test_a_query_string_is_not_part_of_the_model_name(server):
    status, body = post(server, "/v1/models/remi-exact:predict?x=1", json.dumps({"inputs": [["item2"]]}).encode())
    assert status == 200 and len(body["outputs"]["item_ids"][0]) == 20


def grpc_predict(server, proto):
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "remi-exact"
    request.inputs["history"].CopyFrom(proto)
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        return prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)


@pytest.mark.parametrize("shape, values, message", [
    ([100000, 100000], [b"item2"], "declares shape [100000, 100000]"),
    ([8, 4000], [b"item2"], "(32000 values) but holds 1"),  # TF would broadcast the one value
    ([0, 3], [], "empty batch"),
])
def test_grpc_tensors_are_checked_before_they_are_built(server, shape, values, message):
    import grpc
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=values, tensor_shape=(
        tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in shape])))
    start = time.monotonic()
    with pytest.raises(grpc.RpcError) as raised:
        grpc_predict(server, proto)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in raised.value.details()
    assert time.monotonic() - start < 5
    good = grpc_predict(server, tf.make_tensor_proto([["item2"]], dtype=tf.string))
    assert len(tf.make_ndarray(good.outputs["item_ids"])[0]) == 20


def test_a_broken_version_is_reported_and_skipped_and_polling_goes_on(own_server, trained_model_dir):
    export = own_server.registry.export_dir
    for name in ("remi", "remi-exact", "remi-query"):
        os.makedirs(os.path.join(export, name, "3"))  # an empty (broken) version of the whole export set
    assert own_server.registry.refresh() == []
    statuses = own_server.registry.status("remi-exact")
    assert statuses[0] == {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    assert statuses[1]["version"] == "3" and statuses[1]["state"] == "END" and statuses[1]["status"]["error_message"]
    exporter.export(trained_model_dir, export, index="both", k=7, version=4)  # a good one after the bad one
    assert "remi-exact/4" in own_server.registry.refresh()
    status, body = post(own_server, "/v1/models/remi-exact:predict", json.dumps({"inputs": [["item2"]]}).encode())
    assert status == 200 and len(body["outputs"]["item_ids"][0]) == 7


def test_a_server_starts_on_the_newest_good_version(export_dir, tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("broken") / "export")
    shutil.copytree(export_dir, directory)
    for name in ("remi", "remi-exact", "remi-query"):
        os.makedirs(os.path.join(directory, name, "2"))  # the newest is broken
    running = Server(directory, port=0, grpc_port=0, poll_seconds=3600).start()
    try:
        assert running.registry.served()["remi-exact"] == 1
        assert [s["state"] for s in running.registry.status("remi-exact")] == ["AVAILABLE", "END"]
    finally:
        running.stop()


def test_client_errors_say_what_to_do(server, capsys):
    from remi import cli

    rest = f"http://127.0.0.1:{server.port}"
    for k in ("0", "-3"):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["lookup", "--server", rest, "--model", "remi-exact", "--history", "item2", "--k", k])
        assert exit_info.value.code == 2 and f"argument --k: expected an integer >= 1, got {k}" in capsys.readouterr().err
    assert cli.main(["lookup", "--server", rest, "--model", "remi-exact", "--history", "item2", "--k", "100",
                     "--json"]) == 0
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)["item_ids"]) == 20 and "returns 20 candidates per history" in captured.err
    with pytest.raises(client_lib.LookupFailed, match="not candidates: look up a retrieval model"):
        client_lib.RemiClient(rest, model="remi-query").lookup([["item2"]])
    with pytest.raises(client_lib.LookupFailed, match="is it a gRPC port"):
        client_lib.RemiClient(f"http://127.0.0.1:{server.grpc_port}", model="remi-exact", timeout=10).lookup([["item2"]])


def test_model_metadata_over_rest_and_grpc_lists_the_signatures(server, export_dir):
    import grpc
    from tensorflow_serving.apis import get_model_metadata_pb2, prediction_service_pb2_grpc

    loaded = tf.saved_model.load(f"{export_dir}/remi-exact/1")
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/v1/models/remi-exact/versions/1/metadata",
                                timeout=REQUEST_TIMEOUT_S) as response:
        rest = json.loads(response.read())
    assert rest["model_spec"] == {"name": "remi-exact", "signature_name": "", "version": "1"}
    signatures = rest["metadata"]["signature_def"]["signature_def"]
    assert set(loaded.signatures) <= set(signatures)
    assert signatures["serving_default"]["inputs"]["history"]["dtype"] == "DT_STRING"
    assert set(signatures["serving_default"]["outputs"]) == set(
        loaded.signatures["serving_default"].structured_outputs)

    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "remi-exact"
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.GetModelMetadata(request, timeout=30)
        unpacked = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(unpacked)
        assert response.model_spec.version.value == 1 and set(unpacked.signature_def) == set(signatures)
        request.model_spec.name = "missing"
        with pytest.raises(grpc.RpcError) as raised:
            stub.GetModelMetadata(request, timeout=30)
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_classify_regress_and_version_labels_are_answered_in_tf_servings_words(server):
    import grpc
    from tensorflow_serving.apis import (
        classification_pb2,
        inference_pb2,
        predict_pb2,
        prediction_service_pb2_grpc,
        regression_pb2,
    )

    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        classify = classification_pb2.ClassificationRequest()
        classify.model_spec.name = "remi-exact"
        regress = regression_pb2.RegressionRequest()
        regress.model_spec.name = "remi-exact"
        multi = inference_pb2.MultiInferenceRequest()
        multi.tasks.add().model_spec.name = "remi-exact"
        labelled = predict_pb2.PredictRequest()
        labelled.model_spec.name = "remi-exact"
        labelled.model_spec.version_label = "stable"
        labelled.inputs["history"].CopyFrom(tf.make_tensor_proto([["item2"]], dtype=tf.string))
        for call, request, message in (
                (stub.Classify, classify, "Expected classification signature method_name to be "
                                          "tensorflow/serving/classify. Was: tensorflow/serving/predict"),
                (stub.Regress, regress, "Expected regression signature method_name to be tensorflow/serving/regress"),
                (stub.MultiInference, multi, "Expected classification signature method_name"),
                (stub.Predict, labelled, "version_label 'stable': remi serve has no version labels")):
            with pytest.raises(grpc.RpcError) as raised:
                call(request, timeout=30)
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in raised.value.details()


def test_a_half_published_export_is_not_served_and_an_existing_version_is_refused_first(
        own_server, trained_model_dir, monkeypatch):
    export = own_server.registry.export_dir
    assert sorted(serving_layout.export_sets(export)[0]) == ["remi", "remi-exact", "remi-query"]
    shutil.copytree(os.path.join(export, "remi", "1"), os.path.join(export, "remi", "2"))  # killed after remi/2
    assert own_server.registry.refresh() == [] and own_server.registry.served()["remi"] == 1
    for name in ("remi-exact", "remi-query"):  # the rest of the set appears
        shutil.copytree(os.path.join(export, name, "1"), os.path.join(export, name, "2"))
    assert sorted(own_server.registry.refresh()) == ["remi-exact/2", "remi-query/2", "remi/2"]

    def no_index_build(*args, **kwargs):
        raise AssertionError("the index was built before the version was checked")

    monkeypatch.setattr(exporter.saved_model, "RetrievalModule", no_index_build)
    with pytest.raises(FileExistsError, match="already exist"):
        exporter.export(trained_model_dir, export, index="both", version=2)


def test_outputs_become_the_tensor_protos_tensorflow_makes():
    from remi_tf.export.grpc_services import tensor_proto

    rng = np.random.default_rng(0)
    for array in (np.array([[b"a", b"bc"], [b"", b"\xff"]], dtype=object), np.array([[[b"x"], [b"y"]]], dtype=object),
                  np.array([[1.5, 2.0]], np.float32), np.array([[3, -1]], np.int32),
                  rng.normal(size=(2, 4, 50)).astype(np.float32), np.array([[-np.inf, 0.0, -0.0]], np.float32),
                  np.array([[7, 1 << 40]], np.int64), np.zeros((0, 50), np.float32),
                  rng.normal(size=(3, 5)).astype(np.float32)[:, ::2]):  # not contiguous
        assert tensor_proto(array) == tf.make_tensor_proto(array), array
        np.testing.assert_array_equal(tf.make_ndarray(tensor_proto(array)), array)


def test_rest_bodies_are_the_json_of_the_outputs():
    """json_body (orjson) writes what json.loads reads back to the outputs' own values: float32 scores exactly
    (as float32), ids, interest numbers; with a non-finite score the body is json's, with -Infinity, as TF
    Serving writes it."""
    from remi_tf.export.rest import format_rest_response, json_body

    rng = np.random.default_rng(1)
    outputs = {"item_ids": np.array([[b"a", "é".encode()], [b"c", b"d"]], dtype=object),
               "scores": rng.normal(size=(2, 2)).astype(np.float32), "interest": np.array([[0, 3], [1, 2]], np.int32),
               "interest_scores": rng.normal(size=(2, 4, 2)).astype(np.float32)}
    for row_format in (True, False):
        read = json.loads(json_body(format_rest_response(outputs, row_format)))
        columns = read["outputs"] if not row_format else {key: [row[key] for row in read["predictions"]]
                                                          for key in outputs}
        assert columns["item_ids"] == [["a", "é"], ["c", "d"]]
        assert columns["interest"] == outputs["interest"].tolist()
        for key in ("scores", "interest_scores"):
            np.testing.assert_array_equal(np.array(columns[key], np.float32), outputs[key])
    outputs["scores"][1, 1] = -np.inf
    body = json_body(format_rest_response(outputs, True))
    assert b"-Infinity" in body and json.loads(body)["predictions"][1]["scores"][1] == -np.inf


def test_the_server_follows_models_config_and_logs_each_change(own_server, caplog):
    """A model taken out of models.config is unloaded, one put back is loaded again, each with a log line
    naming the version (issue 25, item 12)."""
    export = own_server.registry.export_dir
    config_path = serving_layout.served_config_path(export)  # models.scann.config: the export has ScaNN
    assert config_path == os.path.join(export, serving_layout.SCANN_MODELS_CONFIG)
    assert sorted(serving_layout.configured_models(export)) == sorted(own_server.registry.served())
    original = open(config_path).read()
    caplog.set_level(logging.INFO, logger="remi_tf.export")
    serving_layout.write_models_config(export, ["remi", "remi-query"], "/models", os.path.basename(config_path))
    assert own_server.registry.refresh() == []
    assert "unloaded remi-exact/1: no longer in " + config_path in caplog.text
    assert sorted(own_server.registry.served()) == ["remi", "remi-query"]
    status, body = post(own_server, "/v1/models/remi-exact:predict", json.dumps({"instances": [["item2"]]}).encode())
    assert status == 404 and "Servable not found" in body["error"]
    with open(config_path, "w") as stream:
        stream.write(original)
    assert own_server.registry.refresh() == ["remi-exact/1"]
    assert caplog.records[-1].getMessage() == "loaded remi-exact/1" and own_server.registry.served()["remi-exact"] == 1


PREDICT = ("POST", "/v1/models/remi-exact:predict", json.dumps({"instances": [["item2", "item3"]]}))
BODY = json.dumps({"examples": [{"history": ["item2"]}]})


@pytest.mark.parametrize("method, path, body, status", [
    ("POST", "/v1/models/remi-exact:classify", BODY, 404),
    ("POST", "/v1/models/remi-exact:regress", BODY, 404),
    ("POST", "/v1/foo", BODY, 404),
    ("POST", "/v1/models/remi-exact/labels/stable:predict", BODY, 404),
    ("POST", "/v1/models/remi-exact/metadata", BODY, 404),
    ("POST", "/v1/models/remi-exact", BODY, 404),
    ("PUT", "/v1/models/remi-exact", BODY, 405),
    ("DELETE", "/v1/models/remi-exact", BODY, 405),
    ("PATCH", "/v1/models/remi-exact:predict", BODY, 405),
    ("OPTIONS", "/v1/models/remi-exact", BODY, 405),
    ("HEAD", "/v1/models/remi-exact", None, 405),
    ("GET", "/v1/models/missing", BODY, 404),
    ("GET", "/v1/models/remi-exact/versions/9/metadata", BODY, 404),
    ("GET", "/v1/models/remi-exact", BODY, 200),  # a GET with a body: the body is read and dropped
    ("POST", "/v1/models/missing:predict", json.dumps({"instances": [["item2"]]}), 404),
    ("POST", "/v1/models/remi-exact:predict", BODY, 400),
    ("POST", "/v1/models/remi-exact:predict", "{not json", 400),
    ("POST", "/v1/models/remi-exact:predict", json.dumps({"inputs": [["item2"]] * 9}), 400),
    ("POST", "/v1/models/remi-exact:predict", json.dumps({"signature_name": "nope", "inputs": [["a"]]}), 400),
])
def test_a_kept_alive_connection_serves_a_predict_after_every_error_reply(server, method, path, body, status):
    """The body of a request answered with an error is read (or dropped), so the next request on the kept-alive
    connection (as pooled clients send it) starts where it should: no reconnect, and the predict answers."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=REQUEST_TIMEOUT_S)
    try:
        sockets = []
        for request, expected in (((method, path, body), status), (PREDICT, 200), (PREDICT, 200)):
            connection.request(*request)
            response = connection.getresponse()
            payload = response.read()
            assert (response.status, response.getheader("Connection")) == (expected, None), (request, payload)
            if request is PREDICT:
                assert len(json.loads(payload)["predictions"][0]["item_ids"]) == 20
            sockets.append(connection.sock)
        assert sockets[0] is sockets[1] is sockets[2] is not None  # one connection throughout, no reconnect
    finally:
        connection.close()


def reply_then_end(server, request: bytes, more: bytes = b"") -> tuple[int, dict, dict, bool]:
    """Sends raw `request` (then `more`, unread by a server that refuses it), reads the reply: (status, headers,
    JSON body, whether the server then closed the connection within 10 s)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        connection.sendall(request)
        try:
            connection.sendall(more)
        except OSError:  # the server stopped reading: the reply is still to be read
            pass
        stream = connection.makefile("rb")
        status = int(stream.readline().split()[1])
        headers = {}
        while (line := stream.readline().strip()):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        body = json.loads(stream.read(int(headers["content-length"])))
        try:
            closed = stream.read(1) == b""
        except TimeoutError:
            closed = False
    return status, headers, body, closed


START = b"POST /v1/models/remi-exact:predict HTTP/1.1\r\nHost: x\r\n"


@pytest.mark.parametrize("request_bytes, more, status, message", [
    pytest.param(START + b"Content-Length: %d\r\n\r\n" % (64 << 20 | 1), b"[" * (4 << 20), 413, "exceeds",
                 id="over-the-size-limit"),
    pytest.param(START + b"\r\n" + PREDICT[2].encode(), b"", 411, "needs a Content-Length", id="no-length"),
    pytest.param(START + b"Content-Length: 12abc\r\n\r\n" + PREDICT[2].encode(), b"", 400, "expected one byte count",
                 id="invalid-length"),
    pytest.param(START + b"Content-Length: -5\r\n\r\n" + PREDICT[2].encode(), b"", 400, "expected one byte count",
                 id="negative-length"),
    pytest.param(START + b"Content-Length: \xb2\r\n\r\n" + PREDICT[2].encode(), b"", 400, "expected one byte count",
                 id="superscript-length"),  # "²".isdigit(), but int("²") fails
    pytest.param(b"PUT /v1/models/remi-exact HTTP/1.1\r\nHost: x\r\nContent-Length: \xb2\r\n\r\n", b"", 400,
                 "expected one byte count", id="superscript-length-put"),
    pytest.param(START + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\n" + PREDICT[2].encode(), b"", 400,
                 "one byte count", id="two-lengths"),
    pytest.param(START + b"Transfer-Encoding: chunked\r\n\r\n10\r\n" + b"x" * 16 + b"\r\n0\r\n\r\n", b"", 411,
                 "chunked", id="chunked"),
    pytest.param(START + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", b"", 411, "transfer coding",
                 id="transfer-coding"),
    pytest.param(START + b"Content-Length: 10\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n", b"", 400,
                 "one byte", id="expect-100-two-lengths"),
    pytest.param(b"GARBAGE\r\n\r\n" + PREDICT[2].encode(), b"", 400, "Bad request", id="bad-request-line"),
])
def test_a_request_whose_body_is_not_read_gets_connection_close(server, request_bytes, more, status, message):
    """A body the server will not read (over the size limit, of an unknown or invalid length, chunked) or a
    request it cannot parse: the reply says `Connection: close` and the server closes; a new connection serves."""
    got_status, headers, body, closed = reply_then_end(server, request_bytes, more)
    assert (got_status, headers.get("connection")) == (status, "close") and message in body["error"], body
    assert closed
    assert post(server, *PREDICT[1:2], PREDICT[2].encode())[0] == 200


def test_a_body_over_the_limit_is_refused_before_it_is_sent_when_the_client_expects_100_continue(server):
    status, headers, body, closed = reply_then_end(
        server, START + b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % (64 << 20 | 1))
    assert (status, headers.get("connection"), closed) == (413, "close", True) and "exceeds" in body["error"]


def test_an_idle_kept_alive_connection_timing_out_logs_nothing_and_an_error_reply_one_line(capsys):
    """http.server reports a timed-out idle connection with log_error(format, error): one argument, which
    log_message read as a request's status (args[1]) and raised IndexError on, a traceback per idle pooled
    connection."""
    handler = rest.RestHandler.__new__(rest.RestHandler)
    handler.client_address, handler.requestline = ("127.0.0.1", 1), "GET / HTTP/1.1"
    handler.log_error("Request timed out: %r", TimeoutError("timed out"))
    handler.log_message('"%s" %s %s', "GET /v1/models/x HTTP/1.1", "404", "-")
    handler.log_message('"%s" %s %s', "GET /v1/models/remi HTTP/1.1", "200", "-")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and '" 404 -' in lines[0], lines
