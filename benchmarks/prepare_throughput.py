"""`remi prepare` throughput from TFRecord event logs (the production input), on real data sets.

    python benchmarks/prepare_throughput.py [--datasets ../shared/datasets] [--repeats 3]

For amazon-cds (472 k events) and ml-1m (1 M events): convert the CSV to 4 GZIP event-log shards once
(not timed), then time `prepare` end to end (read, group, sort, filter, split, write) with the in-process
path (what `--runner auto` picks for inputs this size) and with Beam's DirectRunner, alternating runs.
Prints every run's wall time and events/s, and the median per runner.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import remi_tf  # noqa: E402,F401
from remi import cli  # noqa: E402
from remi_tf.pipelines import beam, local  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared",
                                                           "datasets"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus")
    with tempfile.TemporaryDirectory() as work:
        for name in ("amazon-cds", "ml-1m"):
            events_dir = os.path.join(work, f"{name}-events")
            local.convert([os.path.join(args.datasets, name, "interactions.csv.gz")], events_dir, num_shards=4,
                          compress=True, progress=False)
            shards = [os.path.join(events_dir, "events-*.tfrecord.gz")]
            print(f"{name}: --runner auto picks {cli.choose_runner('auto', shards, [])}")
            runners = {
                "in-process": lambda out: local.prepare(shards, out, num_shards=4, progress=False, overwrite=True),
                "beam DirectRunner": lambda out: beam.prepare(shards, out, num_shards=4, progress=False,
                                                              overwrite=True, pipeline_args=["--runner=DirectRunner"]),
            }
            rates: dict[str, list[float]] = {runner: [] for runner in runners}
            for _ in range(args.repeats):
                for runner, run in runners.items():
                    start = time.perf_counter()
                    manifest = run(os.path.join(work, f"{name}-out"))
                    seconds = time.perf_counter() - start
                    events = manifest["input_events"]
                    rates[runner].append(events / seconds)
                    print(f"{name} ({runner}): {events:,} events in {seconds:.2f} s = {events / seconds:,.0f} events/s",
                          flush=True)
            for runner, values in rates.items():
                print(f"{name} ({runner}): median {statistics.median(values):,.0f} events/s "
                      f"(min {min(values):,.0f}, max {max(values):,.0f}, {len(values)} runs)")


if __name__ == "__main__":
    main()
