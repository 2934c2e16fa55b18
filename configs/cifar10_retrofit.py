r"""Joint Hat EBM retrofitting the CIFAR-10 autoencoder's decoder (docs/official_release.md §9.1).

  python -m hatebm_jax.main --config=configs/cifar10_retrofit.py \
      --workdir=gs://BUCKET/hatebm/cifar10_retrofit \
      --config.gen_weights=gs://BUCKET/hatebm/cifar10_ae \
      --config.data_dir=gs://BUCKET/tensorflow_datasets

The frozen decoder comes from a configs/cifar10_ae.py run; z ~ N(0, I_256)
starts at the encoder's sphere radius and is not re-projected. 25k iterations of
K = 100 joint steps at T = 1e-3, ε = 5e-4, ε_z = 1e-3, residual prior τ = 50,
data noise 1e-2. Paper FID 26.01. FID sampling (docs/official_release.md §9.2):
--mcmc_steps=125 --init_scale_res=0.01 --clip=false.
"""

from hatebm_jax import config_base


def get_config():
  c = config_base.get_base_config()
  c.exp_name = 'cifar10_retrofit'
  c.mode = 'joint'
  c.gen_type = 'gen_decoder'
  c.state_dims = (16, 16, 1)
  c.gen_factor = 2.0
  c.data_epsilon = 1e-2
  c.num_training_steps = 25_000
  c.ebm_lr_info = ((1e-4, 0),)
  c.epsilon = 5e-4
  c.epsilon_latent = 1e-3
  c.update_latents = True
  c.mcmc_steps = 100
  c.mcmc_temp = 1e-3
  c.tau_res = 50.0  # 1 / (2 · 0.1²)
  return c
