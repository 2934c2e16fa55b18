r"""Synthesis Hat EBM on Fashion-MNIST: the CPU quick start (default job).

  python -m hatebm_jax.main --config=configs/fashion_mnist_synth.py \
      --workdir=/tmp/hatebm_fmnist

Narrow grayscale networks with the official block structure, a short chain
and a small replay bank, sized to finish on a 2-core CPU in about 15
minutes with samples recognisable as clothing.
"""

from hatebm_jax import config_base


def get_config():
  c = config_base.get_base_config()
  c.exp_name = 'fashion_mnist_synth'
  c.data_type = 'fashion_mnist'
  c.image_dims = (32, 32, 1)
  # Narrow networks with the official 32x32 block structure.
  c.ebm_ngf = 32
  c.gen_ngf = 32
  c.batch_size = 32
  c.persistent_size = 1024
  c.num_training_steps = 2500
  # A short chain whose noise matches the data noise: K steps of std ε leave
  # negatives with noise ε√K ≈ 0.03, and positives get data_epsilon = 0.03,
  # so the hat network cannot separate them by noise level. T is set so the
  # drift coefficient ε²/2T stays the official 12.5.
  c.mcmc_steps = 10
  c.epsilon = 1e-2
  c.mcmc_temp = 4e-6
  c.data_epsilon = 3e-2
  # The hat network's rate drops after 1,500 updates, before the energy gap
  # of such short runs starts to grow; the generator learns 3x faster.
  c.ebm_lr_info = ((1e-4, 0), (2e-5, 1500))
  c.gen_lr_info = ((3e-4, 0),)
  c.info_freq = 50
  c.plot_freq = 250
  c.checkpoint_freq = 250
  return c
