r"""Synthesis Hat EBM on Fashion-MNIST: the CPU quick start (default job).

  python -m hatebm_jax.main --config=configs/fashion_mnist_synth.py \
      --workdir=/tmp/hatebm_fmnist

Narrow grayscale networks with the official block structure, a short chain,
a small replay bank and batch 8: 8,800 iterations, the compute of 2,200 at
batch 32 (docs/quality.md: four times the updates for the same FLOPs took
the FCD of X from 47.8 to 27.8). About 11 minutes on a fast 2-core CPU, 22 on
a slow one (README, docs/training.md).
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
  # The hat network's rate drops 5x after 5,600 updates (at batch 32 and a
  # constant 1e-4 the energies diverged between 1,000 and 2,500 updates;
  # batch 8 stays stable longer and learns faster per update); the generator
  # learns 10x faster than officially, so that G(z) carries the shapes
  # within minutes.
  c.ebm_lr_info = ((1e-4, 0), (2e-5, 5600))
  c.gen_lr_info = ((1e-3, 0),)
  c.info_freq = 100
  c.plot_freq = 1100
  c.checkpoint_freq = 1100
  c.eval_freq = 2200  # FCD of 2,000 samples to Fashion-MNIST test, ~15 s each
  c.eval_num_samples = 2000
  return c
