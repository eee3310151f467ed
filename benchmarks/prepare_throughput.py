"""`remi prepare` throughput from TFRecord event logs (the production input), on real data sets.

    python benchmarks/prepare_throughput.py [--datasets ../shared/datasets] [--beam]

For amazon-cds (472 k events) and ml-1m (1 M events): convert the CSV to 4 GZIP event-log shards once
(not timed), then time `prepare` end to end (read, group, sort, filter, split, write) with the default
in-process runner and, with --beam, Beam's DirectRunner. Prints wall time and events/s.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import remi_tf  # noqa: E402,F401

from pipelines import beam, local  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared",
                                                           "datasets"))
    parser.add_argument("--beam", action="store_true", help="also time Beam's DirectRunner")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus")
    with tempfile.TemporaryDirectory() as work:
        for name in ("amazon-cds", "ml-1m"):
            events_dir = os.path.join(work, f"{name}-events")
            local.convert([os.path.join(args.datasets, name, "interactions.csv.gz")], events_dir, num_shards=4,
                          compress=True, progress=False)
            shards = [os.path.join(events_dir, "events-*.tfrecord.gz")]
            runners = [("local", lambda out: local.prepare(shards, out, num_shards=4, progress=False))]
            if args.beam:
                runners.append(("beam DirectRunner", lambda out: beam.prepare(
                    shards, out, num_shards=4, pipeline_args=["--runner=DirectRunner", "--direct_num_workers=1"])))
            for runner, run in runners:
                start = time.perf_counter()
                manifest = run(os.path.join(work, f"{name}-{runner.split()[0]}"))
                seconds = time.perf_counter() - start
                events = manifest["input_events"]
                print(f"{name} ({runner}): {events:,} events in {seconds:.1f} s = {events / seconds:,.0f} events/s")


if __name__ == "__main__":
    main()
