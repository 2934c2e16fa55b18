#!/usr/bin/env bash
# Train on a Cloud TPU VM pod slice (e.g. v3-32: 4 hosts x 8 cores).
#
#   export TPU_NAME=hatebm ZONE=europe-west4-a ACCELERATOR=v3-32
#   bash launch/tpu_pod.sh create          # the slice
#   bash launch/tpu_pod.sh setup           # copy the committed code, install
#   bash launch/tpu_pod.sh train configs/imagenet_scaled.py \
#       gs://BUCKET/hatebm/imagenet_scaled \
#       --config.data_dir=gs://BUCKET/tensorflow_datasets
#   bash launch/tpu_pod.sh logs            # follow worker 0's log
#   bash launch/tpu_pod.sh stop            # SIGTERM: checkpoint and exit
#   bash launch/tpu_pod.sh delete
#
# `setup` copies the last commit (git archive HEAD: commit your config edits
# first) to every host and installs it in a Python 3.11 virtual environment
# (made with uv; the TPU images ship an older Python). `train` starts the
# same command on every host (--worker=all) in the background; the processes
# find each other (--distributed), each reads its own part of the data, and
# they write checkpoints to the gs:// workdir together. SIGTERM to any host
# (`stop`, a preemption) makes all of them stop at one step and save.
# Rerunning `train` resumes from the newest checkpoint. The workdir and
# data_dir must be on GCS: the hosts share nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."
ACCELERATOR=${ACCELERATOR:-v3-32}
VERSION=${VERSION:-tpu-ubuntu2204-base}
REMOTE_DIR=${REMOTE_DIR:-hatebm_jax}
VENV=${VENV:-hatebm_venv}
usage() { sed -n 2,12p "$0"; exit 2; }
tpu() {
  : "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
  gcloud compute tpus tpu-vm "$@" --zone="$ZONE"
}
on_all() { tpu ssh "$TPU_NAME" --worker=all --command="$1"; }

case "${1:-}" in
  create)
    tpu create "$TPU_NAME" --accelerator-type="$ACCELERATOR" \
        --version="$VERSION" ;;
  setup)
    tmp=$(mktemp -d)
    git archive --format=tar.gz -o "$tmp/hatebm_jax.tar.gz" HEAD
    tpu scp "$tmp/hatebm_jax.tar.gz" "$TPU_NAME:~/hatebm_jax.tar.gz" \
        --worker=all
    rm -rf "$tmp"
    on_all "set -e; rm -rf $REMOTE_DIR && mkdir -p $REMOTE_DIR \
        && tar xzf hatebm_jax.tar.gz -C $REMOTE_DIR \
        && pip install -q --user uv && ~/.local/bin/uv venv -q -p 3.11 ~/$VENV \
        && cd $REMOTE_DIR && ~/.local/bin/uv pip install -q -p ~/$VENV/bin/python \
           -r requirements.txt -e '.[tpu]'" ;;
  train)
    [[ $# -ge 3 ]] || usage
    # Quote every argument once more: the remote shell parses them again.
    config=$(printf '%q' "$2"); workdir=$(printf '%q' "$3"); shift 3
    extra=""
    if (($#)); then extra=$(printf ' %q' "$@"); fi
    on_all "cd $REMOTE_DIR && nohup ~/$VENV/bin/python -m hatebm_jax.main \
        --config=$config --workdir=$workdir --distributed$extra \
        > train.log 2>&1 < /dev/null &" ;;
  logs)
    tpu ssh "$TPU_NAME" --worker=0 --command="tail -f $REMOTE_DIR/train.log" ;;
  stop)
    on_all "pkill -TERM -f '[h]atebm_jax[.]main' || true" ;;
  delete)
    tpu delete "$TPU_NAME" --quiet ;;
  *)
    usage ;;
esac
