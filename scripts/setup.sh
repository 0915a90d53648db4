#!/usr/bin/env bash
# Creates .venv and installs layerwise with all three backends and the test,
# demo and docs extras, and Chromium where it can. Safe to re-run: pip skips
# what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
# Prefer the CPU build of torch that this kind of machine keeps on disk;
# elsewhere fall back to PyPI's default build.
"${PIP[@]}" "torch==2.13.0" 2>/dev/null || "${PIP[@]}" torch
"${PIP[@]}" -e ".[tensorflow-cpu,jax,test,demo,docs]"
# keras-hub backbones (built from small configs, no weights) for the recipe
# tests. Its tensorflow-text requirement would pull the full TensorFlow build
# next to tensorflow-cpu; building a backbone needs only these.
# (Its dependencies first: pip's check after a later install would report
# the missing tensorflow-text.)
"${PIP[@]}" absl-py packaging regex rich tokenizers sentencepiece
"${PIP[@]}" --no-deps "keras-hub>=0.22"
# Chromium, for the documentation site's check in a headless browser
# (tests/test_site.py), from the system's packages where apt-get is there
# and this runs as root (as CI does); elsewhere that test skips, saying so.
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null \
    || echo "setup.sh: chromium did not install; tests/test_site.py will skip its browser check" >&2
fi
