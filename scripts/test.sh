#!/usr/bin/env bash
# Installs everything, then runs the whole suite once per Keras backend, each
# in its own process. Extra arguments are passed to pytest. Ends with one
# line per backend: exit status, time, and the counts of passed, skipped,
# failed, errors and xfailed tests, read from pytest's JUnit XML report; then
# the total as a plain "N passed, N failed, N skipped" line (errors counted
# as failed, xfailed as skipped). Exits non-zero if any backend failed.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
export TF_CPP_MIN_LOG_LEVEL=3
reports=$(mktemp -d)
trap 'rm -rf "$reports"' EXIT
status=0
summary=()
files=()
for backend in tensorflow jax torch; do
  echo "=== KERAS_BACKEND=$backend ==="
  start=$(date +%s)
  files+=("$reports/$backend.xml")
  # Two workers (pytest-xdist) use both cores of a CI machine; a test file
  # stays on one worker, in order, as the docs' notebooks need. `-n 0` in
  # "$@" runs in one process. The report path comes last, so that it wins
  # over one given in "$@".
  KERAS_BACKEND=$backend .venv/bin/python -m pytest tests -p no:cacheprovider \
    -n "${LAYERWISE_TEST_WORKERS:-2}" --dist loadfile "$@" \
    --junitxml="$reports/$backend.xml"
  rc=$?
  seconds=$(( $(date +%s) - start ))
  # No readable report fails the run, whatever pytest's exit status.
  counts=$(.venv/bin/python scripts/summarize_junit.py "$reports/$backend.xml") || status=1
  summary+=("$backend: exit $rc in ${seconds}s: $counts")
  [ $rc -eq 0 ] || status=1
done
printf '%s\n' "${summary[@]}"
# Missing reports were named above; the total adds up the others.
.venv/bin/python scripts/summarize_junit.py --total "${files[@]}" | tail -n 1
exit $status
