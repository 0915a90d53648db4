#!/usr/bin/env bash
# Installs everything, then runs the demo. Arguments go to the demo
# (see `--help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Set before Python starts: `import layerwise` loads Keras, and with it
# TensorFlow (the default backend), before the demo reads its flags.
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
exec .venv/bin/python -m layerwise.demo "$@"
