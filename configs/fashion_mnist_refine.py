r"""Joint Hat EBM refining the Fashion-MNIST SN-GAN: stage 2, for this CPU.

  python -m hatebm_jax.main --config=configs/fashion_mnist_refine.py \
      --workdir=/tmp/hatebm_fmnist_refine \
      --config.gen_weights=/tmp/hatebm_fmnist_sngan

A narrow hat network over the frozen generator of a
configs/fashion_mnist_sngan.py run, trained with short joint chains.
"""

from hatebm_jax import config_base


def get_config():
  c = config_base.get_base_config()
  c.exp_name = 'fashion_mnist_refine'
  c.mode = 'joint'
  c.data_type = 'fashion_mnist'
  c.image_dims = (32, 32, 1)
  c.ebm_ngf = 32
  c.gen_ngf = 32
  c.gen_factor = 1.0
  c.batch_size = 32
  c.num_training_steps = 1500
  c.ebm_lr_info = ((1e-4, 0),)
  c.update_latents = True
  c.mcmc_steps = 10
  c.epsilon = 1e-2
  c.epsilon_latent = 5e-2
  c.mcmc_temp = 4e-6
  c.data_epsilon = 3e-2
  c.plot_freq = 250
  c.checkpoint_freq = 250
  c.fcd_freq = 750
  return c
