"""Native log lines (absl's, as ScaNN's index build writes them straight to file descriptor 2) kept out of
a command's default output.

TF_CPP_MIN_LOG_LEVEL silences TensorFlow's own C++ logging, but ScaNN links its own absl logging, which no
environment variable reaches. `absl_lines_dropped` sends descriptor 2 to a temporary file while a block
runs and then writes its lines back to stderr, less the absl ones; when the block raises, every line
comes back (they may say why).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator

# "I0000 00:00:1796281157.897152     652 partitioner_factory_base.cc:58] Size of ..." and absl's preamble
ABSL_LINE = re.compile(r"[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\] "
                       r"|WARNING: All log messages before absl::InitializeLog\(\) is called")


@contextlib.contextmanager
def absl_lines_dropped(enabled: bool = True) -> Iterator[None]:
    """Runs the block with descriptor 2 captured; then its non-absl lines (all lines on an error) on stderr."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    failed = True
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if failed or not ABSL_LINE.match(line):
                    sys.stderr.write(line)
            sys.stderr.flush()
