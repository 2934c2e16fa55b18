"""Issue 5: a 2-process job (jax.distributed on localhost, CPU collectives)
through the real entry point, its checkpoint continued by 1 process, and
SIGTERM to one of its processes."""

import pytest
import os
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np

from hatebm_jax.infra import checkpoint
from hatebm_jax import modes
from conftest import DATA_DIR, ROOT, device_env, tiny_config

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _main_command(workdir, *extra):
  overrides = dict(
      data_dir=DATA_DIR,
      ebm_ngf=8,
      gen_ngf=8,
      state_dims='(16,)',
      batch_size=8,
      mcmc_steps=2,
      persistent_size=32,
      num_plot=4,
      num_training_steps=3,
      info_freq=1,
      plot_freq=100,
      checkpoint_freq=3,
      fcd_freq=0,
  )
  return (
      [
          sys.executable,
          '-m',
          'hatebm_jax.main',
          '--config=' + os.path.join(ROOT, 'configs', 'fashion_mnist_synth.py'),
          f'--workdir={workdir}',
      ]
      + [f'--config.{k}={v}' for k, v in overrides.items()]
      + list(extra)
  )


def _state(workdir):
  config = tiny_config(num_training_steps=3)
  model = modes.build(config)
  ckpt = checkpoint.Checkpointer(str(workdir))
  try:
    return ckpt.latest_step(), ckpt.restore(model.abstract_state(config.seed))
  finally:
    ckpt.close()


def test_two_processes_then_one(tmp_path):
  """2 processes x 4 CPU devices (jax.distributed on localhost) train 3
  steps and write a checkpoint together; it equals a 1-process run's, and
  a single 1-device process continues from it."""
  multi, single = tmp_path / 'multi', tmp_path / 'single'
  port = _free_port()
  procs = [
      subprocess.Popen(
          _main_command(
              multi,
              f'--coordinator_address=localhost:{port}',
              '--num_processes=2',
              f'--process_id={i}',
          ),
          env=device_env(4),
          cwd=ROOT,
          stdout=subprocess.PIPE,
          stderr=subprocess.STDOUT,
          text=True,
      )
      for i in range(2)
  ]
  logs = [p.communicate(timeout=600)[0] for p in procs]
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-5000:]
  assert 'Process 0 of 2; 4 local and 8 global devices.' in logs[0]
  assert 'Process 1 of 2; 4 local and 8 global devices.' in logs[1]
  # Only process 0 writes images and event files.
  assert (multi / 'samples' / 'step_000003.png').exists()
  assert 'Trained steps 0-3' in logs[1]

  proc = subprocess.run(
      _main_command(single, '--config.num_devices=1'),
      env=device_env(1),
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-5000:]
  (step_m, state_m), (step_s, state_s) = _state(multi), _state(single)
  assert step_m == step_s == 3
  for a, b in zip(jax.tree.leaves(state_m), jax.tree.leaves(state_s)):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    # The same bound as 1 vs 8 devices in one process (tests/test_parallel.py):
    # the cross-process all-reduce sums the batch in another order.
    assert np.abs(a - b).max() <= 1e-4 * max(np.abs(b).max(), 1e-30)

  proc = subprocess.run(
      _main_command(
          multi, '--config.num_devices=1', '--config.num_training_steps=5'
      ),
      env=device_env(1),
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-5000:]
  assert 'Resumed from' in proc.stderr and 'at step 3 on 1 devices' in (
      proc.stderr
  )
  assert _state(multi)[0] == 5


def test_sigterm_to_one_process_stops_every_process_at_one_step(tmp_path):
  """SIGTERM to one process of a 2-process job (what a preempted host
  gets): both agree on a step, save one checkpoint together and exit 0."""
  workdir, port = tmp_path / 'run', _free_port()
  logs = [tmp_path / f'process_{i}.log' for i in range(2)]
  procs = []
  for i, log in enumerate(logs):
    with open(log, 'w') as f:
      procs.append(
          subprocess.Popen(
              _main_command(
                  workdir,
                  f'--coordinator_address=localhost:{port}',
                  '--num_processes=2',
                  f'--process_id={i}',
                  '--config.num_training_steps=100000',
                  '--config.checkpoint_freq=100000',
              ),
              env=device_env(4),
              cwd=ROOT,
              stdout=f,
              stderr=subprocess.STDOUT,
          )
      )
  try:
    deadline = time.time() + 300
    while '[1] ebm_loss' not in logs[1].read_text():  # training is under way
      assert time.time() < deadline and procs[1].poll() is None, logs[
          1
      ].read_text()[-3000:]
      time.sleep(0.5)
    time.sleep(2)
    procs[1].send_signal(signal.SIGTERM)
    codes = [p.wait(timeout=300) for p in procs]
  finally:
    for p in procs:
      p.kill()
  texts = [log.read_text() for log in logs]
  assert codes == [0, 0], texts[0][-3000:]
  stops = [re.search(r'Stopped by SIGTERM at step (\d+)', t) for t in texts]
  assert all(stops), texts[0][-3000:]
  step = int(stops[0].group(1))
  assert int(stops[1].group(1)) == step > 1
  assert _state(workdir)[0] == step
