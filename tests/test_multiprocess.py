"""A 2-process job (jax.distributed on localhost, CPU collectives)
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

from hatebm_jax.infra import checkpoint
from hatebm_jax import modes
from conftest import DATA_DIR, ROOT, device_env, norm_error, tiny_config

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
      eval_freq=0,
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


def _process_command(workdir, port, process_id, *flags):
  """argv of process `process_id` of a 2-process job on localhost:`port`."""
  return _main_command(
      workdir,
      f'--coordinator_address=localhost:{port}',
      '--num_processes=2',
      f'--process_id={process_id}',
      *flags,
  )


def _run_two_processes(workdir, devices, *flags):
  """`main` as 2 processes of `devices` CPU devices each (jax.distributed on
  localhost); asserts both exit 0 and returns their logs."""
  port = _free_port()
  procs = [
      subprocess.Popen(
          _process_command(workdir, port, i, *flags),
          env=device_env(devices),
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
  return logs


def _state(workdir):
  config = tiny_config(num_training_steps=3)
  model = modes.build(config)
  ckpt = checkpoint.Checkpointer(str(workdir))
  try:
    return ckpt.latest_step(), ckpt.restore(model.abstract_state(config.seed))
  finally:
    ckpt.close()


def _run_main(workdir, *flags):
  """`main` in one process on 1 CPU device; returns its stderr."""
  proc = subprocess.run(
      _main_command(workdir, '--config.num_devices=1', *flags),
      env=device_env(1),
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-5000:]
  return proc.stderr


def test_two_processes_then_one(tmp_path):
  """From a fresh start, 2 processes x 4 CPU devices (jax.distributed on
  localhost) train 3 steps and write a checkpoint together; it equals a
  1-process run's, and a single 1-device process continues from it."""
  multi, single = tmp_path / 'multi', tmp_path / 'single'
  logs = _run_two_processes(multi, 4, '--config.num_training_steps=3')
  assert 'Process 0 of 2; 4 local and 8 global devices.' in logs[0]
  assert 'Process 1 of 2; 4 local and 8 global devices.' in logs[1]
  assert 'New synthesis run' in logs[1] and 'on 8 devices' in logs[1]
  # Only process 0 writes images and event files.
  assert (multi / 'samples' / 'step_000003.png').exists()
  assert 'Trained steps 0-3' in logs[1]

  _run_main(single, '--config.num_training_steps=3')
  (step_m, state_m), (step_s, state_s) = _state(multi), _state(single)
  assert step_m == step_s == 3
  for a, b in zip(jax.tree.leaves(state_m), jax.tree.leaves(state_s)):
    # The bound of 1 vs 8 devices in one process (STATE_BOUND in
    # tests/test_parallel.py, sized there): the cross-process all-reduce
    # sums the batch in another order.
    assert norm_error(a, b) < 1e-3

  # 2 processes saved (and fingerprinted) it; 1 process restores and
  # checks it.
  log = _run_main(multi, '--config.num_training_steps=5')
  assert 'Resumed from' in log and 'at step 3 on 1 devices' in log
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
              _process_command(
                  workdir,
                  port,
                  i,
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


def test_two_processes_read_arrayrecord_through_grain(tmp_path):
  """A cifar10 run on ArrayRecord data, 2 processes x 1 device: each saves
  its own grain iterator state at the checkpoint's step, and 1 process
  continues from that checkpoint (from the step: the global batches do not
  depend on the process count)."""
  import json  # pylint: disable=g-import-not-at-top

  import tfds_fixture  # pylint: disable=g-import-not-at-top

  data_dir = tmp_path / 'tfds'
  tfds_fixture.prepare(str(data_dir), 64, 3, 'array_record', names=('cifar10',))
  workdir = tmp_path / 'run'
  cifar = [
      f'--config.data_dir={data_dir}',
      '--config.data_type=cifar10',
      '--config.image_dims=(32, 32, 3)',
      '--config.data_threads=2',
      '--config.num_training_steps=2',
      '--config.checkpoint_freq=2',
  ]
  _run_two_processes(workdir, 1, *cifar)
  saved = workdir / 'checkpoints' / '2' / 'data'
  states = sorted(n for n in os.listdir(saved) if n.startswith('process_'))
  assert states == ['process_0-of-2.json', 'process_1-of-2.json']
  for name in states:
    assert json.loads((saved / name).read_text()) == {'next_index': 2}
  # cifar10's networks take 3 channels: the rest of _main_command applies.
  proc = subprocess.run(
      _main_command(workdir, *cifar[:-2], '--config.num_training_steps=3'),
      env=device_env(1),
      cwd=ROOT,
      capture_output=True,
      text=True,
  )
  assert proc.returncode == 0, proc.stderr[-5000:]
  assert 'at step 2 on 1 devices' in proc.stderr
  assert json.loads(
      (
          workdir / 'checkpoints' / '3' / 'data' / 'process_0-of-1.json'
      ).read_text()
  ) == {'next_index': 3}
