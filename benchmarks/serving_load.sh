#!/usr/bin/env bash
# remi serve under wrk (REST) and h2load (gRPC) load: see benchmarks/serving_load.py for what it measures.
#   benchmarks/serving_load.sh --export-dir DIR [--name remi] [--seconds 10] [--connections 1 4 16 64]
set -euo pipefail
missing=()
command -v wrk > /dev/null || missing+=(wrk)
command -v h2load > /dev/null || missing+=(nghttp2-client)
if (( ${#missing[@]} )); then
  echo "serving_load.sh: install the load generators first: apt-get install ${missing[*]}" >&2
  exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-$here/../.venv/bin/python}
PYTHONPATH=$here/..${PYTHONPATH:+:$PYTHONPATH} TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-3} exec "$python" "$here/serving_load.py" "$@"
