r"""Synthesis Hat EBM on Fashion-MNIST: the CPU quick start (default job).

  python -m hatebm_jax.main --config=configs/fashion_mnist_synth.py \
      --workdir=/tmp/hatebm_fmnist

Narrow grayscale networks with the official block structure, a short chain,
a small replay bank and a batch of 8: 8,800 iterations, about 11 minutes of a
2-core CPU that runs numpy's float32 matrix product at 200 GFLOP/s (13.5
iterations/s; slower machines take longer in proportion), ending with
samples of every Fashion-MNIST class. docs/quality.md has the levers tried
and the numbers of this config.
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
  # At equal images seen, small batches learn most per CPU minute (an
  # iteration costs in proportion to its batch down to 8): 8,800 updates of
  # batch 8 reach FCD 26, 2,200 of batch 32 reach 47 (docs/quality.md).
  c.batch_size = 8
  c.persistent_size = 1024
  c.num_training_steps = 8800
  # A short chain whose noise matches the data noise: K steps of std ε leave
  # negatives with noise ε√K ≈ 0.03, and positives get data_epsilon = 0.03,
  # so the hat network cannot separate them by noise level. T is set so the
  # drift coefficient ε²/2T stays the official 12.5.
  c.mcmc_steps = 10
  c.epsilon = 1e-2
  c.mcmc_temp = 4e-6
  c.data_epsilon = 3e-2
  # The hat network's rate drops 5x after 5,600 updates, before the energy
  # gap of such short runs starts to grow (at batch 32 and a constant 1e-4
  # the energies diverged between 1,000 and 2,500 updates); the generator
  # learns 10x faster than officially, so that G(z) carries the shapes within
  # minutes.
  c.ebm_lr_info = ((1e-4, 0), (2e-5, 5600))
  c.gen_lr_info = ((1e-3, 0),)
  # One chain in eight starts from uniform noise, and a weak energy penalty
  # keeps the energies those chains reach bounded: without them H(x) ranks
  # uniform noise and constant images as more probable than clothing.
  c.noise_init_fraction = 0.125
  c.energy_l2 = 0.1
  c.info_freq = 200
  c.plot_freq = 1100
  c.checkpoint_freq = 1100
  c.fcd_freq = 4400  # FCD of 2,000 samples to Fashion-MNIST test, ~15 s each
  return c
