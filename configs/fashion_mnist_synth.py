r"""Synthesis Hat EBM on Fashion-MNIST: the CPU quick start (default job).

  python -m hatebm_jax.main --config=configs/fashion_mnist_synth.py \
      --workdir=/tmp/hatebm_fmnist

Narrow grayscale networks with the official block structure, a short chain
and a small replay bank: 2,200 iterations in about 12.5 minutes on a 2-core
CPU (0.33 s per iteration), ending with samples recognisable as trousers,
shirts, pullovers, shoes and bags. Last logged metrics of the reference run:
ebm_loss ≈ 4e3 (a raw energy gap of ≈ 0.02), gen_loss ≈ 9, residual drift
norm ≈ 0.3, no clipped drift steps.
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
  c.num_training_steps = 2200
  # A short chain whose noise matches the data noise: K steps of std ε leave
  # negatives with noise ε√K ≈ 0.03, and positives get data_epsilon = 0.03,
  # so the hat network cannot separate them by noise level. T is set so the
  # drift coefficient ε²/2T stays the official 12.5.
  c.mcmc_steps = 10
  c.epsilon = 1e-2
  c.mcmc_temp = 4e-6
  c.data_epsilon = 3e-2
  # The hat network's rate drops 5x after 1,400 updates, before the energy
  # gap of such short runs starts to grow (at constant 1e-4 the energies
  # diverged between 1,000 and 2,500 updates); the generator learns 10x
  # faster than officially, so that G(z) carries the shapes within minutes.
  c.ebm_lr_info = ((1e-4, 0), (2e-5, 1400))
  c.gen_lr_info = ((1e-3, 0),)
  c.info_freq = 50
  c.plot_freq = 250
  c.checkpoint_freq = 250
  c.fcd_freq = 1100  # FCD of 2,000 samples to Fashion-MNIST test, ~15 s each
  return c
