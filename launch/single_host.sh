#!/usr/bin/env bash
# Train one experiment on a single host (CPU, or all GPUs of one machine).
#
#   bash launch/single_host.sh configs/cifar10_synth.py /path/or/gs/workdir \
#       --config.data_dir=gs://YOUR_BUCKET/tensorflow_datasets
#
# Installs the requirements (and the CUDA build of JAX, pinned to the jax of
# requirements.txt, when nvidia-smi finds a GPU) unless SKIP_INSTALL=1, then
# runs the entry point: one process over all local devices. Rerunning resumes
# from the workdir.
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:?usage: launch/single_host.sh CONFIG WORKDIR [--config.key=value ...]}
workdir=${2:?usage: launch/single_host.sh CONFIG WORKDIR [--config.key=value ...]}
shift 2
if [[ "${SKIP_INSTALL:-0}" != 1 ]]; then
  pip install -q -r requirements.txt -e .
  if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    pip install -q "jax[cuda12]==$(python -c 'import jax; print(jax.__version__)')"
  fi
fi
exec python -m hatebm_jax.main --config="$config" --workdir="$workdir" "$@"
