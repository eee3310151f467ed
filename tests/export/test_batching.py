"""Server-side batching: concurrent requests run together, each gets exactly its own rows back."""

import shutil
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

from remi_tf.export import client as client_lib
from remi_tf.export.batching import Batcher
from remi_tf.export.server import Server

WAIT_S = 30


def row_summary(feeds):
    """A row-wise signature: per history, its non-padding items joined, and how many there are."""
    history = feeds["history"]
    joined = np.array([" ".join(item for item in row if item) for row in history], dtype=object)
    return {"joined": joined, "count": (history != "").sum(axis=1)}


def run_concurrently(batcher, requests, run):
    """Submits every (key, feeds) at once from its own thread; returns their outputs or errors, in order."""
    results = [None] * len(requests)
    start = threading.Barrier(len(requests))

    def submit(index, key, feeds):
        start.wait(timeout=WAIT_S)
        try:
            results[index] = batcher.run(key, run, feeds)
        except Exception as error:  # noqa: BLE001 (the test inspects it)
            results[index] = error

    threads = [threading.Thread(target=submit, args=(i, key, feeds)) for i, (key, feeds) in enumerate(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=WAIT_S)
    assert not any(thread.is_alive() for thread in threads)
    return results


def history(*rows):
    width = max(len(row) for row in rows)
    return {"history": np.array([list(row) + [""] * (width - len(row)) for row in rows], dtype=object)}


def test_concurrent_requests_share_batches_and_get_their_own_rows():
    calls = []

    def run(feeds):
        calls.append(len(feeds["history"]))
        return row_summary(feeds)

    batcher = Batcher(max_batch_rows=8, batch_timeout_s=0.2)
    try:
        requests = [("m", history(*[[f"i{n}-{j}" for j in range(n % 4 + 1)] for _ in range(n % 2 + 1)]))
                    for n in range(12)]  # 1 or 2 rows each, histories of 1-4 items: widths differ
        results = run_concurrently(batcher, requests, run)
    finally:
        batcher.stop()
    for (_, feeds), result in zip(requests, results):
        expected = row_summary(feeds)
        assert result["joined"].tolist() == expected["joined"].tolist()
        assert result["count"].tolist() == expected["count"].tolist()
    assert sum(calls) == sum(len(feeds["history"]) for _, feeds in requests) == 18
    assert max(calls) <= 8 and len(calls) < 12, calls  # batched, never above max_batch_rows


def test_requests_of_different_keys_are_never_mixed():
    seen = []

    def run_for(key):
        def run(feeds):
            seen.append((key, [row[0] for row in feeds["history"]]))
            return row_summary(feeds)
        return run

    batcher = Batcher(max_batch_rows=64, batch_timeout_s=0.2)
    try:
        keys = ["a", "b"] * 5
        results = [None] * len(keys)
        start = threading.Barrier(len(keys))

        def submit(index, key):
            start.wait(timeout=WAIT_S)
            results[index] = batcher.run(key, run_for(key), history([f"{key}{index}"]))

        threads = [threading.Thread(target=submit, args=(i, key)) for i, key in enumerate(keys)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=WAIT_S)
    finally:
        batcher.stop()
    assert [result["joined"].tolist() for result in results] == [[f"{key}{i}"] for i, key in enumerate(keys)]
    for key, firsts in seen:
        assert all(first.startswith(key) for first in firsts), seen
    assert len(seen) < len(keys)


def test_an_error_reaches_only_the_request_that_caused_it():
    def run(feeds):
        if (feeds["history"] == "bad").any():
            raise ValueError("bad item")
        return row_summary(feeds)

    batcher = Batcher(max_batch_rows=16, batch_timeout_s=0.2)
    try:
        requests = [("m", history(["bad"] if i == 3 else [f"good{i}"])) for i in range(6)]
        results = run_concurrently(batcher, requests, run)
    finally:
        batcher.stop()
    assert isinstance(results[3], ValueError)
    assert [results[i]["joined"].tolist() for i in (0, 1, 2, 4, 5)] == [[f"good{i}"] for i in (0, 1, 2, 4, 5)]


def test_a_lone_request_does_not_wait_and_bad_settings_are_refused():
    batcher = Batcher(max_batch_rows=64, batch_timeout_s=0.0)
    try:
        assert batcher.run("m", row_summary, history(["x", "y"]))["count"].tolist() == [2]
        assert batcher.batches_run == 1
    finally:
        batcher.stop()
    with pytest.raises(ValueError, match="max_batch_rows >= 1"):
        Batcher(max_batch_rows=0)


def test_the_server_batches_concurrent_rest_and_grpc_lookups(export_dir, tmp_path_factory, vocabulary):
    directory = str(tmp_path_factory.mktemp("batched") / "export")
    shutil.copytree(export_dir, directory)
    batcher = Batcher(max_batch_rows=32, batch_timeout_s=0.2)
    server = Server(directory, port=0, grpc_port=0, poll_seconds=3600, batcher=batcher).start()
    try:
        rng = np.random.default_rng(0)
        histories = [[vocabulary[i] for i in rng.choice(len(vocabulary), size=n % 7 + 1, replace=False)]
                     for n in range(16)]
        results = [None] * len(histories)
        start = threading.Barrier(len(histories))

        def lookup(index):
            client = client_lib.RemiClient(f"127.0.0.1:{server.grpc_port}", model="remi-exact", use_grpc=True) \
                if index % 2 else client_lib.RemiClient(f"http://127.0.0.1:{server.port}", model="remi-exact")
            start.wait(timeout=WAIT_S)
            results[index] = client.lookup([histories[index]])[0]

        threads = [threading.Thread(target=lookup, args=(i,)) for i in range(len(histories))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=WAIT_S)
        assert batcher.batches_run < len(histories)
    finally:
        server.stop()
    signature = tf.saved_model.load(f"{export_dir}/remi-exact/1").signatures["serving_default"]
    for one, result in zip(histories, results):
        alone = signature(history=tf.constant([one]))  # unpadded, in a batch of its own
        assert result.item_ids == alone["item_ids"].numpy()[0].astype(str).tolist()
        np.testing.assert_allclose(result.scores, alone["scores"].numpy()[0], rtol=1e-5)


@pytest.mark.parametrize("num_batch_threads", [1, 2])
def test_many_requests_with_slots_handed_on_each_get_their_rows_and_batches_stay_within_the_slots(num_batch_threads):
    running, most_running, lock = [0], [0], threading.Lock()

    def run(feeds):
        with lock:
            running[0] += 1
            most_running[0] = max(most_running[0], running[0])
        try:
            threading.Event().wait(0.002)  # long enough for requests to pile up behind a batch
            return row_summary(feeds)
        finally:
            with lock:
                running[0] -= 1

    batcher = Batcher(max_batch_rows=5, batch_timeout_s=0.0, num_batch_threads=num_batch_threads)
    try:
        requests = [("ab"[n % 3 == 0], history(*[[f"r{n}-{j}"] * (j + 1) for j in range(n % 3 + 1)]))
                    for n in range(60)]  # two keys, 1-3 rows each
        results = run_concurrently(batcher, requests, run)
    finally:
        batcher.stop()
    for (_, feeds), result in zip(requests, results):
        assert result["joined"].tolist() == row_summary(feeds)["joined"].tolist()
    assert most_running[0] <= num_batch_threads
    assert batcher.batches_run < len(requests)
    assert batcher._free_slots == num_batch_threads  # every slot handed back: none lost on the way


def test_stop_fails_the_waiting_requests_and_the_running_batch_finishes():
    started, release = threading.Event(), threading.Event()

    def run(feeds):
        started.set()
        release.wait(WAIT_S)
        return row_summary(feeds)

    batcher = Batcher(max_batch_rows=1)
    results = [None, None]

    def submit(index):
        try:
            results[index] = batcher.run("m", run, history([f"h{index}"]))
        except RuntimeError as error:
            results[index] = error

    first = threading.Thread(target=submit, args=(0,))
    first.start()
    assert started.wait(WAIT_S)
    second = threading.Thread(target=submit, args=(1,))
    second.start()
    deadline = time.monotonic() + WAIT_S
    while not batcher._waiting and time.monotonic() < deadline:  # the second request waits behind the batch
        time.sleep(0.001)
    assert batcher._waiting
    batcher.stop()
    release.set()
    for thread in (first, second):
        thread.join(WAIT_S)
    assert results[0]["joined"].tolist() == ["h0"]
    assert isinstance(results[1], RuntimeError) and "stopping" in str(results[1])
    with pytest.raises(RuntimeError, match="stopped"):
        batcher.run("m", run, history(["late"]))
