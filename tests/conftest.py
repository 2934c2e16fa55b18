"""Shared fixtures: the committed Fashion-MNIST slice and tiny configs."""

import os

import pytest

from hatebm_jax import config_base

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.path.join(ROOT, 'tests', 'data', 'fashion-mnist')
CONFIG_DIR = os.path.join(ROOT, 'configs')


def load_config(name):
  """`get_config()` of configs/<name>.py."""
  return config_base.load_config_file(os.path.join(CONFIG_DIR, 'x'), name)


def tiny_config(**overrides):
  """A seconds-long synthesis config on the committed Fashion-MNIST slice."""
  c = load_config('fashion_mnist_synth')
  c.data_dir = DATA_DIR
  c.ebm_ngf = 8
  c.gen_ngf = 8
  c.state_dims = (16,)
  c.batch_size = 8
  c.mcmc_steps = 2
  c.persistent_size = 32
  c.num_training_steps = 4
  c.info_freq = 2
  c.plot_freq = 2
  c.checkpoint_freq = 2
  c.num_plot = 4
  for key, value in overrides.items():
    c[key] = value
  return c


@pytest.fixture
def tiny():
  return tiny_config
