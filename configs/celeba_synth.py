r"""Synthesis Hat EBM on CelebA 64x64, the official settings (docs/official_release.md §9.1).

  python -m hatebm_jax.main --config=configs/celeba_synth.py \
      --workdir=gs://BUCKET/hatebm/celeba_synth \
      --config.data_dir=gs://BUCKET/tensorflow_datasets

178x178 centre crop resized to 64 (docs/official_release.md §2); 50k iterations
at batch 128, K = 50. Paper FID 11.57 (docs/official_release.md §6.5).
"""

from hatebm_jax import config_base


def get_config():
  c = config_base.get_base_config()
  c.exp_name = 'celeb_a_synth'
  c.data_type = 'celeb_a'
  c.image_dims = (64, 64, 3)
  c.ebm_ngf = 1024
  c.gen_ngf = 1024
  return c
