"""Shared fixtures: the committed Fashion-MNIST slice and tiny configs."""

import os
import sys

import tempfile

# The test environment has the `[aot]` extra (libtpu, JAX's CUDA plugin) so
# that tests can compile for TPUs and GPUs; JAX must still run on the CPU and
# not look for those devices at start-up (tests and their subprocesses).
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hatebm_jax import config_base

# Many tests (and their subprocesses, which inherit the environment) compile
# the same tiny programs: a persistent XLA cache compiles each once.
os.environ.setdefault(
    'JAX_COMPILATION_CACHE_DIR',
    os.path.join(tempfile.gettempdir(), 'hatebm_jax_tests_xla_cache'),
)
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.1')
jax.config.update(
    'jax_compilation_cache_dir', os.environ['JAX_COMPILATION_CACHE_DIR']
)
jax.config.update(
    'jax_persistent_cache_min_compile_time_secs',
    float(os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS']),
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.path.join(ROOT, 'tests', 'data', 'fashion-mnist')
CONFIG_DIR = os.path.join(ROOT, 'configs')
TESTS = os.path.join(ROOT, 'tests')


def device_env(devices):
  """Environment of a subprocess with `devices` CPU devices that imports
  this checkout and the test helpers."""
  env = dict(os.environ)
  env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  env['PYTHONPATH'] = os.pathsep.join([ROOT, TESTS, env.get('PYTHONPATH', '')])
  return env


def load_config(name):
  """`get_config()` of configs/<name>.py."""
  return config_base.load_config_file(os.path.join(CONFIG_DIR, 'x'), name)


def norm_error(a, b):
  """‖a − b‖₂ / ‖b‖₂ over one array (‖a − b‖₂ where b is all 0): the
  relative error of a state leaf. Unlike a max-abs error, one entry whose
  exact gradient is near 0 (Adam moves it by ~lr in a round-off direction)
  or one chain near a clipping threshold does not decide it; a lost shard,
  a missing all-reduce or a mis-restored leaf moves the whole tensor."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  scale, diff = np.linalg.norm(b), np.linalg.norm(a - b)
  return float(diff / scale) if scale else float(diff)


def tensorboard_images(folder) -> dict[str, list[int]]:
  """Image tags -> steps in the TensorBoard event files of `folder`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  found = {}
  for name in sorted(os.listdir(folder)):
    if not name.startswith('events.out.tfevents'):
      continue
    for event in tf.compat.v1.train.summary_iterator(
        os.path.join(folder, name)
    ):
      for value in event.summary.value:
        if value.metadata.plugin_data.plugin_name == 'images':
          found.setdefault(value.tag, []).append(event.step)
  return found


# Overrides of fashion_mnist_synth that make a run take seconds.
TINY = dict(
    data_dir=DATA_DIR,
    ebm_ngf=8,
    gen_ngf=8,
    state_dims=(16,),
    batch_size=8,
    mcmc_steps=2,
    persistent_size=32,
    num_plot=4,
    num_training_steps=4,
    info_freq=2,
    plot_freq=2,
    checkpoint_freq=2,
    eval_freq=0,  # evaluation during training: tests/test_evaluators.py
)


def tiny_config(**overrides):
  """A seconds-long synthesis config on the committed Fashion-MNIST slice."""
  c = load_config('fashion_mnist_synth')
  for key, value in {**TINY, **overrides}.items():
    c[key] = value
  return c


# The same run through the entry point: fashion_mnist_synth with TINY as
# flags, metrics logged every step, no grids or checkpoints on the way.
TINY_FLAGS = [
    f'--config.{k}={v if isinstance(v, str) else repr(v)}'
    for k, v in {
        **TINY,
        'info_freq': 1,
        'plot_freq': 1000,
        'checkpoint_freq': 1000,
    }.items()
    if k != 'num_training_steps'
]


def main_command(workdir, *flags):
  """argv of `python -m hatebm_jax.main` on the tiny config (+ flags)."""
  return [
      sys.executable,
      '-m',
      'hatebm_jax.main',
      f'--config={os.path.join(CONFIG_DIR, "fashion_mnist_synth.py")}',
      f'--workdir={workdir}',
      *TINY_FLAGS,
      *flags,
  ]


@pytest.fixture
def tiny():
  return tiny_config


@pytest.fixture(scope='session')
def tiny_run(tmp_path_factory):
  """A finished run of `tiny_config()` (4 steps, checkpoints 2 and 4),
  trained once per test process. Tests copy it before changing anything."""
  from hatebm_jax import train  # pylint: disable=g-import-not-at-top

  workdir = tmp_path_factory.mktemp('tiny_run')
  train.train_and_evaluate(tiny_config(), str(workdir))
  return workdir


@pytest.fixture(autouse=True, scope='session')
def _cache_dir(tmp_path_factory):
  """Feature caches of the tests go to a temporary folder, never ~/.cache."""
  path = tmp_path_factory.mktemp('hatebm_cache')
  old = os.environ.get('HATEBM_CACHE_DIR')
  os.environ['HATEBM_CACHE_DIR'] = str(path)
  yield path
  if old is None:
    os.environ.pop('HATEBM_CACHE_DIR', None)
  else:
    os.environ['HATEBM_CACHE_DIR'] = old


# Overrides of the generator stages (fashion_mnist_sngan / _ae) that make a
# run take seconds.
STAGE = dict(
    data_dir=DATA_DIR,
    num_training_steps=2,
    info_freq=1,
    plot_freq=2,
    checkpoint_freq=2,
    num_plot=4,
    eval_freq=0,
)


def stage_config(name, **overrides):
  c = load_config(name)
  for key, value in {**STAGE, **overrides}.items():
    c[key] = value
  return c


SNGAN = dict(gen_ngf=16, disc_ndf=16, batch_size=8, n_dis=2, ddls_steps=3)
AE = dict(gen_ngf=8, inf_ngf=8, batch_size=8)


@pytest.fixture(scope='module')
def generator_runs(tmp_path_factory):
  """Tiny trained SN-GAN and autoencoder runs: the generators of joint
  runs (module scope: trained once per test module that asks)."""
  from hatebm_jax import train  # pylint: disable=g-import-not-at-top

  root = tmp_path_factory.mktemp('stages')
  train.train_and_evaluate(
      stage_config('fashion_mnist_sngan', **SNGAN), str(root / 'sngan')
  )
  train.train_and_evaluate(
      stage_config('fashion_mnist_ae', **AE), str(root / 'ae')
  )
  return root


def assert_stage_resumes_bitwise(tmp_path, name, sizes):
  """A generator stage (sngan / autoencoder) of 3 steps equals 2 steps,
  stopped, and one more, bit for bit."""
  import shutil  # pylint: disable=g-import-not-at-top

  from hatebm_jax import train  # pylint: disable=g-import-not-at-top
  from hatebm_jax.serving import run as run_lib  # pylint: disable=g-import-not-at-top

  config = stage_config(name, **dict(sizes, num_training_steps=3))
  straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
  train.train_and_evaluate(config, str(straight))  # checkpoints 2 and 3
  # A run stopped after step 2: the same workdir without checkpoint 3.
  shutil.copytree(straight, resumed)
  shutil.rmtree(resumed / 'checkpoints' / '3')
  assert run_lib.load_run(str(resumed)).step == 2
  train.train_and_evaluate(config, str(resumed))  # the rerun: step 3
  a, b = (run_lib.load_run(str(d)) for d in (straight, resumed))
  assert a.step == b.step == 3
  as_array = lambda x: np.asarray(
      jax.random.key_data(x)
      if jnp.issubdtype(x.dtype, jax.dtypes.prng_key)
      else x
  )
  for u, v in zip(jax.tree.leaves(a.state), jax.tree.leaves(b.state)):
    np.testing.assert_array_equal(as_array(u), as_array(v))


# Test files by the time they took (`pytest -n 2 --dist=loadfile
# --durations=0`, summed per file, 2026-12-03), slowest first. `-n 2
# --dist=loadfile` hands whole files to the two workers in collection order:
# starting with the slowest (longest-processing-time-first) keeps one
# worker from running a long file alone at the end. Files not listed follow
# in their usual order.
SLOWEST_FIRST = (
    'test_train.py',
    'test_multiprocess.py',
    'test_preemption.py',
    'test_packaging.py',
    'test_pretrained.py',
    'test_inception.py',
    'test_gcs.py',
    'test_failures.py',
    'test_integrity.py',
    'test_parallel.py',
    'test_joint.py',
    'test_notebook.py',
    'test_divergence.py',
    'test_fcd.py',
    'test_data.py',
    'test_sngan.py',
)


def pytest_collection_modifyitems(config, items):
  del config
  rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def random_inception_weights(path):
  """An .npz of the FID Inception with random weights (seeded numpy draws of
  every parameter's shape: He-scaled kernels, batch-norm scales and variances near 1):
  the real network's every operation, so FID runs end to end without the
  real file."""
  from hatebm_jax.evaluation import inception  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  arrays = {}
  for key, shape in sorted(inception._expected_shapes().items()):
    if key.endswith(('var', 'scale')):
      arrays[key] = rng.uniform(0.5, 1.5, shape)
    elif key.endswith('kernel'):
      fan_in = int(np.prod(shape[:-1]))
      arrays[key] = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
    else:
      arrays[key] = rng.normal(0.0, 0.1, shape)
  np.savez(path, **{k: v.astype(np.float32) for k, v in arrays.items()})
  return str(path)
