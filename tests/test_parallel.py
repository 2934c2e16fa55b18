"""Issue 5: one program over a device mesh, device-count-independent
randomness, a bank that stays on its devices, multi-process training, and
checkpoints that move between device and process counts.

The 8-device checks run in a subprocess (tests/multidevice_worker.py), since
the device count is fixed when JAX starts; the multi-process check starts
two processes of the real entry point on localhost.
"""

import json
import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hatebm_jax import checkpoint
from hatebm_jax import modes
from hatebm_jax import parallel
from hatebm_jax import train
from conftest import DATA_DIR, ROOT, tiny_config

TESTS = os.path.join(ROOT, 'tests')


def _env(devices):
  env = dict(os.environ)
  env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  env['PYTHONPATH'] = os.pathsep.join([ROOT, TESTS,
                                       env.get('PYTHONPATH', '')])
  return env


@pytest.fixture(scope='module')
def eight_devices(tmp_path_factory):
  """What tests/multidevice_worker.py measured on 8 CPU devices."""
  out = tmp_path_factory.mktemp('eight_devices')
  proc = subprocess.run(
      [sys.executable, os.path.join(TESTS, 'multidevice_worker.py'),
       str(out)], env=_env(8), cwd=TESTS, capture_output=True, text=True,
      timeout=1200)
  assert proc.returncode == 0, proc.stderr[-5000:]
  with open(out / 'results.json') as f:
    return json.load(f)


def test_per_example_draws_ignore_batch_size_and_offset():
  key = jax.random.PRNGKey(3)
  small = parallel.per_example_normal(key, (3, 5))
  large = parallel.per_example_normal(key, (8, 5))
  np.testing.assert_array_equal(small, large[:3])
  np.testing.assert_array_equal(
      parallel.per_example_normal(key, (4, 5), offset=3), large[3:7])
  np.testing.assert_array_equal(
      large[6], jax.random.normal(jax.random.fold_in(key, 6), (5,)))
  assert abs(float(jnp.std(parallel.per_example_normal(
      key, (4000, 5))) - 1)) < 0.02


def test_interleave_pairs_rows():
  a, b = jnp.arange(3.0)[:, None], 10 + jnp.arange(3.0)[:, None]
  np.testing.assert_array_equal(parallel.interleave(a, b)[:, 0],
                                [0, 10, 1, 11, 2, 12])


@pytest.mark.parametrize('mode', ['synthesis', 'joint'])
def test_eight_devices_match_one(eight_devices, mode):
  """3 steps on 8 devices = 3 steps on 1 (same seed and global batch)."""
  result = eight_devices[mode]
  assert result['metrics_1'].keys() == result['metrics_8'].keys()
  for name, err in result['metric_rel'].items():
    assert err < 1e-4, (name, result['metrics_1'][name],
                        result['metrics_8'][name])
  assert result['metrics_1']['ebm_loss'] != 0
  # Every leaf of the state (networks, Adam moments, bank, key, step):
  # max |θ₈ − θ₁| / max |θ₁| per leaf.
  assert result['state_rel'] < 1e-4


@pytest.mark.parametrize('mode', ['synthesis', 'joint'])
def test_checkpoints_move_between_device_counts(eight_devices, mode):
  """The 8-device run resumed on 1 device and the 1-device run resumed on
  8 reach the same state at step 5."""
  result = eight_devices[mode]
  assert result['resumed_step'] == [5, 5]
  assert result['resume_rel'] < 1e-4


def test_compiled_step_keeps_the_bank_on_its_devices(eight_devices):
  """The synthesis step over 8 devices has one gradient all-reduce and no
  all-gather, all-to-all or permute: the bank (lanes split on 'data') is
  read and written where it lives."""
  hlo = eight_devices['hlo']
  assert hlo['bank_local_shapes'] == [[1, 4, 32, 32, 1], [1, 4, 16]]
  assert set(hlo['collectives']) == {'all-reduce'}, hlo['collectives']
  local_bank = 'f32[1,4,32,32,1]'
  assert not any(local_bank in s for s in hlo['collectives']['all-reduce'])


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _main_command(workdir, *extra):
  overrides = dict(data_dir=DATA_DIR, ebm_ngf=8, gen_ngf=8,
                   state_dims='(16,)', batch_size=8, mcmc_steps=2,
                   persistent_size=32, num_plot=4, num_training_steps=3,
                   info_freq=1, plot_freq=100, checkpoint_freq=3, fcd_freq=0)
  return ([sys.executable, '-m', 'hatebm_jax.main',
           '--config=' + os.path.join(ROOT, 'configs',
                                      'fashion_mnist_synth.py'),
           f'--workdir={workdir}'] +
          [f'--config.{k}={v}' for k, v in overrides.items()] + list(extra))


def _state(workdir):
  config = tiny_config(num_training_steps=3)
  model = modes.build_model(config)
  ckpt = checkpoint.Checkpointer(str(workdir))
  try:
    return ckpt.latest_step(), ckpt.restore(train.abstract_state(model,
                                                                 config))
  finally:
    ckpt.close()


def test_two_processes_then_one(tmp_path):
  """2 processes x 4 CPU devices (jax.distributed on localhost) train 3
  steps and write a checkpoint together; it equals a 1-process run's, and
  a single 1-device process continues from it."""
  multi, single = tmp_path / 'multi', tmp_path / 'single'
  port = _free_port()
  procs = [subprocess.Popen(
      _main_command(multi, f'--coordinator_address=localhost:{port}',
                    '--num_processes=2', f'--process_id={i}'),
      env=_env(4), cwd=ROOT, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True) for i in range(2)]
  logs = [p.communicate(timeout=600)[0] for p in procs]
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-5000:]
  assert 'Process 0 of 2; 4 local and 8 global devices.' in logs[0]
  assert 'Process 1 of 2; 4 local and 8 global devices.' in logs[1]
  # Only process 0 writes images and event files.
  assert (multi / 'samples' / 'step_000003.png').exists()
  assert 'Trained steps 0-3' in logs[1]

  proc = subprocess.run(_main_command(single, '--config.num_devices=1'),
                        env=_env(1), cwd=ROOT, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-5000:]
  (step_m, state_m), (step_s, state_s) = _state(multi), _state(single)
  assert step_m == step_s == 3
  for a, b in zip(jax.tree.leaves(state_m), jax.tree.leaves(state_s)):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert np.abs(a - b).max() <= 1e-4 * max(np.abs(b).max(), 1e-30)

  proc = subprocess.run(
      _main_command(multi, '--config.num_devices=1',
                    '--config.num_training_steps=5'),
      env=_env(1), cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-5000:]
  assert 'Resumed from' in proc.stderr and 'at step 3 on 1 devices' in (
      proc.stderr)
  assert _state(multi)[0] == 5
