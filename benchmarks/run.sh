#!/usr/bin/env bash
# The whole benchmark suite, every backend (TensorFlow graph and XLA, JAX
# jit, torch eager), in the configurations benchmarks/RESULTS.md reports.
# Usage: bash benchmarks/run.sh > results.txt   (hours on 2 cores: the two
# 1,002-variable TF XLA runs of many_groups.py alone take ~35 minutes)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export TF_CPP_MIN_LOG_LEVEL=3
modes=("jax --jit" "tensorflow " "tensorflow --jit" "torch ")
run() {
  echo "### KERAS_BACKEND=$1 python ${*:2}"
  KERAS_BACKEND=$1 "$PY" "${@:2}"
}
for mode in "${modes[@]}"; do
  set -- $mode
  run "$1" benchmarks/anchors.py ${2:-} --repeats 5 --steps 10
  run "$1" benchmarks/anchors.py ${2:-} --model cnn --repeats 5 --steps 30 --batch-size 32
  run "$1" benchmarks/group_optimizers.py ${2:-} --repeats 5 --steps 10
  run "$1" benchmarks/fit_overhead.py ${2:-} --repeats 9 --log
  run "$1" benchmarks/apply_only.py ${2:-} --repeats 9 --calls 5
  run "$1" benchmarks/apply_only.py ${2:-} --variables mlp --repeats 9 --calls 20
  run "$1" benchmarks/frozen.py ${2:-} --repeats 7
  run "$1" benchmarks/accumulation.py ${2:-} --repeats 7
  run "$1" benchmarks/many_groups.py ${2:-} --mode apply --repeats 5 --calls 3
done
run jax benchmarks/many_groups.py --jit --steps 10 --repeats 7
run tensorflow benchmarks/many_groups.py --jit --steps 10 --repeats 7 --instances 1
run tensorflow benchmarks/many_groups.py --jit --steps 10 --repeats 7 --instances 2 --kinds plain,groups_201
run jax benchmarks/many_groups.py --mode hlo
run torch benchmarks/fit_overhead.py --repeats 9 --clock cpu --threads 1
for variables in tiny mlp; do
  run torch benchmarks/apply_only.py --variables $variables --clock cpu --threads 1 \
    --kinds plain,groups_1,groups_13,keras_1,keras_13 --repeats 15 --calls 20
done
run jax benchmarks/accumulation.py --jit --repeats 7 --width 1024 --steps 20
run tensorflow benchmarks/accumulation.py --jit --repeats 5 --width 1024 --steps 20
run jax benchmarks/accumulation.py --jit --memory --width 1024
run tensorflow benchmarks/accumulation.py --jit --memory --width 1024
run jax benchmarks/jax_groups.py
for backend in jax tensorflow torch; do
  run $backend benchmarks/many_rules.py --rules 20000
done
run jax benchmarks/jax_cond_copy.py
run jax benchmarks/model_parallel_memory.py
for backend in jax tensorflow torch; do
  run "$backend" benchmarks/mup_coordinate_check.py
done
# Update transforms and projections (RESULTS §V): each vs none, optax side by side on JAX.
run jax benchmarks/update_transforms.py --mode apply --repeats 5 --calls 10
run jax benchmarks/update_transforms.py --mode memory
run jax benchmarks/update_transforms.py --mode fit --jit --repeats 5 --steps 20
run tensorflow benchmarks/update_transforms.py --mode fit --repeats 5 --steps 20
run torch benchmarks/update_transforms.py --mode apply --repeats 5 --calls 5
