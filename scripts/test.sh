#!/usr/bin/env bash
# Installs everything, then runs the whole suite once per Keras backend, each
# in its own process. Extra arguments are passed to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
export TF_CPP_MIN_LOG_LEVEL=3
status=0
summary=()
for backend in tensorflow jax torch; do
  echo "=== KERAS_BACKEND=$backend ==="
  start=$(date +%s)
  KERAS_BACKEND=$backend .venv/bin/python -m pytest tests -p no:cacheprovider "$@"
  rc=$?
  summary+=("$backend: exit $rc in $(( $(date +%s) - start ))s")
  [ $rc -eq 0 ] || status=1
done
printf '%s\n' "${summary[@]}"
exit $status
