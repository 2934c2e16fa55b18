#!/usr/bin/env bash
# Train on a Cloud TPU VM pod slice (e.g. v3-32: 4 hosts x 8 cores).
#
#   export TPU_NAME=hatebm ZONE=europe-west4-a ACCELERATOR=v3-32
#   bash launch/tpu_pod.sh create          # the slice (tpu-ubuntu2204-base)
#   bash launch/tpu_pod.sh setup           # copy this checkout, install
#   bash launch/tpu_pod.sh train configs/imagenet_scaled.py \
#       gs://BUCKET/hatebm/imagenet_scaled \
#       --config.data_dir=gs://BUCKET/tensorflow_datasets
#   bash launch/tpu_pod.sh logs            # follow worker 0's log
#   bash launch/tpu_pod.sh stop            # SIGTERM: checkpoint and exit
#   bash launch/tpu_pod.sh delete
#
# `train` starts the same command on every host (--worker=all) in the
# background; the processes find each other (--distributed), each reads its
# own part of the data, and they write checkpoints to the gs:// workdir
# together. Rerunning `train` resumes from the newest checkpoint. The
# workdir and data_dir must be on GCS: the hosts share nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
ACCELERATOR=${ACCELERATOR:-v3-32}
VERSION=${VERSION:-tpu-ubuntu2204-base}
REMOTE_DIR=${REMOTE_DIR:-hatebm_jax}
tpu() { gcloud compute tpus tpu-vm "$@" --zone="$ZONE"; }
on_all() { tpu ssh "$TPU_NAME" --worker=all --command="$1"; }

case "${1:-}" in
  create)
    tpu create "$TPU_NAME" --accelerator-type="$ACCELERATOR" \
        --version="$VERSION" ;;
  setup)
    archive=$(mktemp --suffix=.tar.gz)
    git archive --format=tar.gz -o "$archive" HEAD
    tpu scp "$archive" "$TPU_NAME:~/hatebm_jax.tar.gz" --worker=all
    rm -f "$archive"
    on_all "mkdir -p $REMOTE_DIR && tar xzf hatebm_jax.tar.gz -C $REMOTE_DIR \
        && cd $REMOTE_DIR && pip install -q -r requirements.txt -e . \
        && pip install -q -U 'jax[tpu]'" ;;
  train)
    config=${2:?usage: tpu_pod.sh train CONFIG WORKDIR [--config.key=value ...]}
    workdir=${3:?usage: tpu_pod.sh train CONFIG WORKDIR [--config.key=value ...]}
    shift 3
    on_all "cd $REMOTE_DIR && nohup python -m hatebm_jax.main \
        --config=$config --workdir=$workdir --distributed $* \
        > train.log 2>&1 < /dev/null &" ;;
  logs)
    tpu ssh "$TPU_NAME" --worker=0 --command="tail -f $REMOTE_DIR/train.log" ;;
  stop)
    on_all "pkill -TERM -f hatebm_jax.main || true" ;;
  delete)
    tpu delete "$TPU_NAME" --quiet ;;
  *)
    sed -n 2,20p "$0"; exit 2 ;;
esac
