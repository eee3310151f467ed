"""The README's "your own logs" walkthrough and Python example run as written (the text is read from
README.md), on a CSV with its own column names and ISO 8601 timestamps; the server they start binds free
127.0.0.1 ports and is stopped by its pid."""

import datetime
import os
import re
import signal
import subprocess
import sys

from remi_tf import local_cluster
from tests import synthetic

REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT_S = 600


def readme_block(name):
    """The fenced block after `<!-- readme-test: NAME -->` in README.md."""
    text = open(os.path.join(REPOSITORY, "README.md"), encoding="utf-8").read()
    match = re.search(rf"<!-- readme-test: {name} -->\n```\w+\n(.*?)\n```", text, flags=re.DOTALL)
    assert match, f"README.md has no block marked readme-test: {name}"
    return match.group(1)


def write_own_log(path):
    """Planted clusters as `sku,uid,ts` (columns in another order, other names) with ISO 8601 times."""
    sequences, _ = synthetic.clustered_sequences(num_users=400, num_clusters=8, items_per_cluster=10,
                                                 clusters_per_user=2, length=16, seed=7)
    start = datetime.datetime(2024, 5, 1, tzinfo=datetime.timezone.utc)
    with open(path, "w") as stream:
        stream.write("sku,uid,ts\n")
        for user, items in enumerate(sequences):
            for minute, item in enumerate(items):
                moment = (start + datetime.timedelta(minutes=minute)).isoformat().replace("+00:00", "Z")
                stream.write(f"B{item:04d},u{user},{moment}\n")


def test_the_walkthrough_and_the_python_example_run_as_written(tmp_path):
    write_own_log(tmp_path / "my_log.csv")
    port, grpc_port = local_cluster.free_ports(2)
    script = readme_block("walkthrough").replace("8501", str(port)).replace("8500", str(grpc_port))
    environment = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}",
                   "PYTHONPATH": REPOSITORY}
    process = subprocess.Popen(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=environment, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT_S)
    finally:  # the server too, if the script stopped before its `kill`
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=30)
    assert process.returncode == 0, stdout[-3000:] + stderr[-3000:]
    assert "test split, " in stdout and "recall" in stdout  # evaluate's table
    grouped = [line for line in stdout.splitlines() if line.startswith("interest #")]
    assert grouped, stdout[-3000:]  # lookup's results grouped by interest
    served = served_lookup(stdout)
    assert sorted(served) == list(range(1, 11))  # ten candidates, each once
    example = subprocess.run([sys.executable, "-c", readme_block("python")], cwd=tmp_path, capture_output=True,
                             text=True, timeout=TIMEOUT_S, env={**environment, "TF_CPP_MIN_LOG_LEVEL": "0"})
    assert example.returncode == 0, example.stderr[-3000:]
    assert "" not in example.stdout.splitlines(), example.stdout  # verbose=0: no blank line before "step 300: ..."
    # TensorFlow's INFO lines on, as a user has them: no "Local rendezvous is aborting with status: OUT_OF_RANGE"
    assert "rendezvous" not in example.stderr, example.stderr[-3000:]  # (a dataset read past its end)
    printed = example.stdout.strip().splitlines()[-1]
    # the library's answer is the served one: the same ten items in the same order, each from the same interest
    items, interests = re.fullmatch(r"\[(.*)\] \[(.*)\]", printed).groups()
    assert list(zip(re.findall(r"'(B\d{4})'", items), map(int, interests.split()), strict=True)) == \
        [served[rank] for rank in range(1, 11)], (printed, served)
    training = subprocess.run([sys.executable, "-c", readme_block("python-train")], cwd=tmp_path,
                              capture_output=True, text=True, timeout=TIMEOUT_S, env=environment)
    assert training.returncode == 0, training.stderr[-3000:]
    assert training.stdout.strip().splitlines()[-1].count("'B") == 10  # ten item ids of the log, then interests


def served_lookup(stdout):
    """rank -> (item id, interest #) from `remi lookup`'s table: rows under their interest's heading."""
    served, interest = {}, None
    for line in stdout.splitlines():
        if heading := re.match(r"^interest #(\d+): ", line):
            interest = int(heading.group(1))
        elif row := re.match(r"^\s+(\d+)\s+(B\d{4})\s", line):
            served[int(row.group(1))] = (row.group(2), interest)
    return served
