r"""Synthesis Hat EBM on CIFAR-10 32x32, the official settings (docs/official_release.md §9.1).

  python -m hatebm_jax.main --config=configs/cifar10_synth.py \
      --workdir=gs://BUCKET/hatebm/cifar10_synth \
      --config.data_dir=gs://BUCKET/tensorflow_datasets

50k iterations at batch 128, K = 50; about 31 TFLOP per iteration (facts
§7.2). Paper FID 19.30 (docs/official_release.md §6.5).
"""

from hatebm_jax import config_base


def get_config():
  return config_base.get_base_config()  # the base is this experiment
