#!/usr/bin/env bash
# Installs everything, then runs the demo. Arguments go to the demo
# (see `--help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m layerwise.demo "$@"
