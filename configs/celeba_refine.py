r"""Joint Hat EBM refining a pretrained CelebA 64x64 SN-GAN (docs/official_release.md §9.1).

  python -m hatebm_jax.main --config=configs/celeba_refine.py \
      --workdir=gs://BUCKET/hatebm/celeba_refine \
      --config.gen_weights=gs://BUCKET/hatebm/celeba_sngan \
      --config.data_dir=gs://BUCKET/tensorflow_datasets

The frozen generator (ngf 1024, gen_factor 1) comes from an SN-GAN run on
CelebA 64 (configs/cifar10_sngan.py with --config.data_type=celeb_a
--config.image_dims="(64, 64, 3)" --config.gen_ngf=1024
--config.disc_ndf=1024, Mimicry's 64x64 SN-GAN). 25k iterations of K = 100
joint steps at T = 1e-6, ε = 1e-4, ε_z = 5e-3. Paper FID 5.98 (SN-GAN 6.13).
"""

from hatebm_jax import config_base


def get_config():
  c = config_base.get_base_config()
  c.exp_name = 'celeba_refine'
  c.mode = 'joint'
  c.data_type = 'celeb_a'
  c.image_dims = (64, 64, 3)
  c.ebm_ngf = 1024
  c.gen_ngf = 1024
  c.gen_factor = 1.0
  c.num_training_steps = 25_000
  c.ebm_lr_info = ((1e-5, 0),)
  c.epsilon = 1e-4
  c.epsilon_latent = 5e-3
  c.update_latents = True
  c.mcmc_steps = 100
  c.mcmc_temp = 1e-6
  return c
