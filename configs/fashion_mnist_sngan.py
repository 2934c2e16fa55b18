r"""SN-GAN on Fashion-MNIST for this CPU: stage 1 of the refinement chain.

  python -m hatebm_jax.main --config=configs/fashion_mnist_sngan.py \
      --workdir=/tmp/hatebm_fmnist_sngan

The Mimicry recipe of configs/cifar10_sngan.py (hinge loss, Adam 2e-4
β = (0, 0.9), batch 64, 5 discriminator steps per generator step, linear
decay) with narrow grayscale networks and a short schedule.
"""

from hatebm_jax import config_base


def get_config():
  c = config_base.get_base_config()
  c.exp_name = 'fashion_mnist_sngan'
  c.mode = 'sngan'
  c.data_type = 'fashion_mnist'
  c.image_dims = (32, 32, 1)
  c.gen_ngf = 32
  c.gen_factor = 1.0
  c.disc_ndf = 32
  c.batch_size = 64
  c.n_dis = 5
  c.num_training_steps = 3000
  c.gan_lr = 2e-4
  c.gan_beta1, c.gan_beta2 = 0.0, 0.9
  c.info_freq = 50
  c.plot_freq = 500
  c.checkpoint_freq = 500
  c.fcd_freq = 1000
  return c
