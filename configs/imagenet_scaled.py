r"""Synthesis Hat EBM on ImageNet 128x128 with doubled width, ngf 2048.

  python -m hatebm_jax.main --config=configs/imagenet_scaled.py \
      --workdir=gs://BUCKET/hatebm/imagenet_scaled \
      --config.data_dir=gs://BUCKET/tensorflow_datasets

The official `imagenet_synth_large_net` run (docs/official_release.md §9.1):
imagenet_synth with a 153.7M-parameter hat network and a 124.3M-parameter
generator, trained on a TPU-v3-32 pod. About 545 TFLOP per iteration. Paper FID
29.37.
"""

from hatebm_jax import config_base


def get_config():
  c = config_base.load_config_file(__file__, 'imagenet_synth')
  c.exp_name = 'imagenet2012_synth_large'
  c.ebm_ngf = 2048
  c.gen_ngf = 2048
  return c
