#!/usr/bin/env bash
# Runs the fit-overhead benchmark on every backend (jit on and off where it
# applies). Usage: bash benchmarks/run.sh [extra args for fit_overhead.py]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
for backend in tensorflow jax torch; do
  modes=("" "--jit")
  [ "$backend" = torch ] && modes=("")
  for mode in "${modes[@]}"; do
    KERAS_BACKEND=$backend "$PY" benchmarks/fit_overhead.py $mode "$@"
  done
done
