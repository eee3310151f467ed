"""The exact and query models load in stock TF Serving: every op of their graphs (and of their function
libraries) is registered by core TensorFlow alone, checked in a fresh process that imports neither scann
nor remi_tf. The ScaNN model is the control: its custom ops are not."""

import json
import os
import subprocess
import sys

PROBE = """
import json, sys
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import op_def_registry

result = {}
for name, path in json.loads(sys.argv[1]).items():
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString(open(path, "rb").read())
    ops = set()
    for graph in saved.meta_graphs:
        ops.update(node.op for node in graph.graph_def.node)
        for function in graph.graph_def.library.function:
            ops.update(node.op for node in function.node_def)
    result[name] = sorted(op for op in ops if op_def_registry.get(op) is None)
print(json.dumps({"unregistered": result, "scann_loaded": "scann" in sys.modules or "remi_tf" in sys.modules}))
"""


def test_exact_and_query_models_use_only_core_ops(export_dir):
    paths = {name: os.path.join(export_dir, name, "1", "saved_model.pb")
             for name in ("remi", "remi-exact", "remi-query")}
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(paths)], capture_output=True, text=True,
                          timeout=120, env={**env, "TF_CPP_MIN_LOG_LEVEL": "3"}, cwd="/")
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert not report["scann_loaded"]
    unregistered = report["unregistered"]
    assert unregistered["remi-exact"] == [] and unregistered["remi-query"] == [], unregistered
    assert any(op.startswith("Scann>") for op in unregistered["remi"]), unregistered  # the control
