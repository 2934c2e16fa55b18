r"""Synthesis Hat EBM on ImageNet 128x128, ngf 1024 (docs/official_release.md §9.1).

  python -m hatebm_jax.main --config=configs/imagenet_synth.py \
      --workdir=gs://BUCKET/hatebm/imagenet_synth \
      --config.data_dir=gs://BUCKET/tensorflow_datasets

300k iterations at batch 128, K = 50, random 128 crops after a short-side
resize, per-tensor hat-gradient clip at 50, learning rates divided by 10 at 230k
and again at 260k updates (docs/official_release.md §8 #6). About 137 TFLOP per
iteration; the paper used 8 GPUs for about 2.5 days. Paper FID 40.24.
"""

from hatebm_jax import config_base


def get_config():
  c = config_base.get_base_config()
  c.exp_name = 'imagenet2012_synth'
  c.data_type = 'imagenet2012'
  c.image_dims = (128, 128, 3)
  c.random_crop = True
  c.ebm_ngf = 1024
  c.gen_ngf = 1024
  c.num_training_steps = 300_000
  c.ebm_lr_info = ((1e-4, 0), (1e-5, 230_000), (1e-6, 260_000))
  c.gen_lr_info = ((5e-5, 0), (1e-5, 230_000), (1e-6, 260_000))
  c.clip_ebm_grad = True
  return c
