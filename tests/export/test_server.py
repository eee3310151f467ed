"""`remi serve` on 127.0.0.1: REST and gRPC round trips through the client, errors, new versions."""

import json
import shutil
import urllib.error
import urllib.request

import numpy as np
import pytest
import tensorflow as tf

from export import client as client_lib
from export import exporter
from export.server import Server


REQUEST_TIMEOUT_S = 30


def serve_copy(export_dir, tmp_path_factory) -> Server:
    """A server on a private copy of the export (a test may publish versions into it)."""
    directory = str(tmp_path_factory.mktemp("served") / "export")
    shutil.copytree(export_dir, directory)
    return Server(directory, port=0, grpc_port=0, poll_seconds=3600, max_batch_size=8).start()


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
