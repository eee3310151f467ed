"""`remi` commands in fresh processes, as a user runs them: the benchmarks' shared runner."""

from __future__ import annotations

import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": REPO}


def remi(*args: str, timeout: float = 7200) -> float:
    """Runs `remi ARGS`; returns its wall seconds (raises with the output's tail on failure)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "remi", *args], capture_output=True, text=True, env=ENV,
                          timeout=timeout)
    if done.returncode:
        raise RuntimeError(f"remi {' '.join(args)} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
    return time.perf_counter() - start
