#!/usr/bin/env bash
# Train one experiment on a single host: CPU, all GPUs of one machine, or a
# single-host Cloud TPU VM (e.g. v4-8).
#
#   bash launch/single_host.sh configs/cifar10_synth.py /path/or/gs/workdir \
#       --config.data_dir=gs://YOUR_BUCKET/tensorflow_datasets
#
# Finds the accelerator (nvidia-smi: CUDA; /dev/accel* or /dev/vfio/<n>: TPU),
# installs the pinned requirements and the package with the matching extra
# (`.[cuda12]` or `.[tpu]`, JAX's accelerator build pinned to the tested jax)
# unless SKIP_INSTALL=1, warns when JAX would still train on the CPU, then
# runs the entry point: one process over all local devices. Rerunning resumes
# from the workdir. HATEBM_ACCELERATOR=cpu|cuda12|tpu overrides the detection.
set -euo pipefail
config=${1:?usage: launch/single_host.sh CONFIG WORKDIR [--config.key=value ...]}
workdir=${2:?usage: launch/single_host.sh CONFIG WORKDIR [--config.key=value ...]}
shift 2
# Relative paths are the caller's, before the script moves to the checkout.
config=$(realpath -m "$config")
case "$workdir" in gs://*) ;; *) workdir=$(realpath -m "$workdir") ;; esac
cd "$(dirname "$0")/.."
detect() {
  if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    echo cuda12
  elif compgen -G '/dev/accel*' >/dev/null || compgen -G '/dev/vfio/[0-9]*' >/dev/null; then
    echo tpu
  else
    echo cpu
  fi
}
accelerator=${HATEBM_ACCELERATOR:-$(detect)}
case "$accelerator" in
  cpu) package="." ;;
  cuda12|tpu) package=".[$accelerator]" ;;
  *) echo "HATEBM_ACCELERATOR=$accelerator: choose cpu, cuda12 or tpu" >&2; exit 2 ;;
esac
if [[ "${SKIP_INSTALL:-0}" != 1 ]]; then
  pip install -q -r requirements.txt -e "$package"
fi
backend=$(python -c 'import jax; print(jax.default_backend())' 2>/dev/null || echo none)
if [[ "$accelerator" != cpu && "$backend" != gpu && "$backend" != tpu ]]; then
  echo "WARNING: expected a $accelerator accelerator, but JAX's backend is" \
       "'$backend': training would run on the CPU. Install JAX's build for it" \
       "(pip install -e '.[$accelerator]') or set HATEBM_ACCELERATOR=cpu." >&2
fi
exec python -m hatebm_jax.main --config="$config" --workdir="$workdir" "$@"
