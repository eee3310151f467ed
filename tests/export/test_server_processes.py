"""`remi serve --workers N`: processes sharing both ports answer as one server and stop together; without
--workers a port in use is refused (gRPC would share it silently by default)."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from remi_tf.export import client as client_lib
from remi_tf.export.server import Server
from remi_tf.process_output import read_lines

START_TIMEOUT_S = 300
HISTORIES = [["item2", "item3", "item4"], ["item500"]]


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = open(f"/proc/{pid}/stat").read().split()[2] if os.path.exists(f"/proc/{pid}/stat") else "X"
    return status != "Z"


def test_worker_processes_share_the_ports_and_stop_with_their_parent(export_dir):
    serve = ["serve", "--export-dir", export_dir, "--port", "0", "--grpc-port", "0", "--workers", "2",
             "--max-batch-size", "2"]
    parent = subprocess.Popen([sys.executable, "-m", "remi", *serve], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    pids = []
    try:
        lines = read_lines(parent.stdout, lambda seen: sum(line.startswith("serving") for line in seen) == 2,
                           START_TIMEOUT_S)
        announced = next(line for line in lines if "server processes" in line)
        pids = [int(pid) for pid in re.search(r"pids ([\d, ]+)\)", announced).group(1).split(", ")]
        port, grpc_port = re.search(r"http://127\.0\.0\.1:(\d+), gRPC 127\.0\.0\.1:(\d+)", announced).groups()
        assert len(pids) == 2 and all(alive(pid) for pid in pids)
        for pid in pids:  # the command line as given, its ports and --workers replaced by options after it
            command = open(f"/proc/{pid}/cmdline").read().split("\0")[:-1]
            assert command[1:] == ["-m", "remi", *serve, "--workers", "1", "--port", port, "--grpc-port", grpc_port,
                                   "--reuse-port"]
            environment = dict(entry.split("=", 1) for entry in open(f"/proc/{pid}/environ").read().split("\0")
                               if "=" in entry)
            share = str(max(1, (os.cpu_count() or 1) // 2))  # each process's pools: its half of the cores
            assert environment["TF_NUM_INTRAOP_THREADS"] == os.environ.get("TF_NUM_INTRAOP_THREADS", share)
            assert environment["TF_NUM_INTEROP_THREADS"] == os.environ.get("TF_NUM_INTEROP_THREADS", share)
        expected = tf.saved_model.load(os.path.join(export_dir, "remi-exact", "1")).signatures["serving_default"](
            history=tf.constant([["item2", "item3", "item4"], ["item500", "", ""]]))["item_ids"].numpy().astype(str)
        for _ in range(4):  # new connections each time: the kernel may hand them to either process
            for client in (client_lib.RemiClient(f"http://127.0.0.1:{port}", model="remi-exact"),
                           client_lib.RemiClient(f"127.0.0.1:{grpc_port}", model="remi-exact", use_grpc=True)):
                found = client.lookup(HISTORIES)
                assert [list(row.item_ids) for row in found] == expected.tolist()
                with pytest.raises(client_lib.LookupFailed, match="exceeds the maximum batch size 2"):
                    client.lookup(HISTORIES * 2)  # each process got --max-batch-size 2
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=60) == 0
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(alive(pid) for pid in pids)
    finally:
        for pid in [parent.pid, *pids]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        parent.wait(timeout=30)


def test_a_grpc_port_another_server_uses_is_refused(export_dir):
    first = Server(export_dir, port=0, grpc_port=0, poll_seconds=3600).start()
    try:  # gRPC binds with SO_REUSEPORT by default on Linux: a second server would share the port unnoticed
        with pytest.raises(OSError, match="gRPC port .*--grpc-port"):
            Server(export_dir, port=0, grpc_port=first.grpc_port, poll_seconds=3600)
    finally:
        first.stop()
