r"""SN-GAN on Fashion-MNIST for this CPU: stage 1 of the refinement chain.

  python -m hatebm_jax.main --config=configs/fashion_mnist_sngan.py \
      --workdir=/tmp/hatebm_fmnist_sngan

The recipe of configs/cifar10_sngan.py (hinge loss, Adam 2e-4 β = (0, 0.9),
batch 64, linear decay to 0) with narrow grayscale networks, a short
schedule and one discriminator step per generator step instead of
Mimicry's five: for the same compute (about 17 minutes on 2 cores), five
gave FCD 163 after 1,000 generator steps (mode collapse), one gave 47-55
after 2,700 (5,000 samples; settings compared on a GPU).
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
  c.n_dis = 1
  c.num_training_steps = 2700
  c.gan_lr = 2e-4
  c.gan_beta1, c.gan_beta2 = 0.0, 0.9
  c.info_freq = 50
  c.plot_freq = 900
  c.checkpoint_freq = 900
  c.eval_freq = 900
  c.eval_num_samples = 2000
  return c
