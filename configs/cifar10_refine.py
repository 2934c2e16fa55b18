r"""Joint Hat EBM refining a pretrained CIFAR-10 SN-GAN (docs/official_release.md §9.1, §4.2).

  python -m hatebm_jax.main --config=configs/cifar10_refine.py \
      --workdir=gs://BUCKET/hatebm/cifar10_refine \
      --config.gen_weights=gs://BUCKET/hatebm/cifar10_sngan \
      --config.data_dir=gs://BUCKET/tensorflow_datasets

The frozen generator (gen_factor 1) comes from a configs/cifar10_sngan.py run.
25k iterations of K = 250 joint (z then y) Langevin steps at T = 1e-3, ε = 1e-4,
ε_z = 5e-3; hat learning rate 1e-5. Paper FID 14.04 (SN-GAN 18.58). FID sampling
(docs/official_release.md §9.2): --mcmc_steps=350 --tau_res=8 --clip=false.
"""

from hatebm_jax import config_base


def get_config():
  c = config_base.get_base_config()
  c.exp_name = 'cifar10_refine'
  c.mode = 'joint'
  c.gen_factor = 1.0
  c.num_training_steps = 25_000
  c.ebm_lr_info = ((1e-5, 0),)
  c.epsilon = 1e-4
  c.epsilon_latent = 5e-3
  c.update_latents = True
  c.mcmc_steps = 250
  c.mcmc_temp = 1e-3
  return c
