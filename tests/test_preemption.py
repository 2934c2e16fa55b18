"""Preemption and crashes through the real entry point, in subprocesses.

SIGTERM (what TPU VMs, GKE and SLURM send) saves the current step and exits
cleanly; `kill -9` while checkpoints are being written never leaves a
checkpoint that gets used; either way the rerun ends bit for bit where an
uninterrupted run ends.
"""

import os
import shutil
import signal
import subprocess
import time

import jax
import numpy as np
import pytest

from hatebm_jax.infra import checkpoint
from hatebm_jax.modes import synthesis
from hatebm_jax import train
from conftest import ROOT, main_command, tiny_config

pytestmark = pytest.mark.slow

ENV = dict(os.environ, PYTHONUNBUFFERED='1')
STEPS = 12  # length of the runs compared with an uninterrupted one


def _state(workdir):
  config = tiny_config()
  model = synthesis.SynthesisMode.from_config(config)
  ckpt = checkpoint.Checkpointer(str(workdir))
  try:
    return ckpt.latest_step(), ckpt.restore(
        jax.eval_shape(model.init, jax.random.PRNGKey(0))
    )
  finally:
    ckpt.close()


def _run(workdir, steps, *flags):
  result = subprocess.run(
      main_command(workdir, f'--config.num_training_steps={steps}', *flags),
      cwd=ROOT,
      env=ENV,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stderr


def _assert_same_state(a, b):
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b) > 10
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(x, y)


@pytest.fixture(scope='module')
def straight(tmp_path_factory):
  """Uninterrupted entry-point runs: workdir of each number of steps."""
  root = tmp_path_factory.mktemp('straight')

  def run(steps):
    workdir = root / str(steps)
    if not workdir.exists():
      _run(workdir, steps)
    return _state(workdir)

  return run


def test_sigterm_saves_exits_cleanly_and_resumes_exactly(tmp_path, straight):
  proc = subprocess.Popen(
      main_command(tmp_path, '--config.num_training_steps=100000'),
      cwd=ROOT,
      env=ENV,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
  )
  lines = []
  deadline = time.time() + 300
  for line in proc.stdout:  # until a few training steps are logged
    lines.append(line)
    if ('[3] ' in line and 'ebm_loss' in line) or time.time() > deadline:
      break
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=300)
  log = ''.join(lines) + out
  assert proc.returncode == 0, log[-3000:]
  assert 'Stopped by SIGTERM' in log, log[-3000:]
  step, _ = _state(tmp_path)
  assert 3 <= step < 100000
  assert (
      f'Stopped by SIGTERM at step {step}; checkpoint saved in '
      f'{tmp_path}/checkpoints. Rerun the same command to continue.' in log
  )
  end = max(STEPS, step + 2)  # STEPS: the straight run the kill test uses
  log = _run(tmp_path, end)
  assert f'Resumed from {tmp_path}/checkpoints at step {step}' in log
  final_step, state = _state(tmp_path)
  assert final_step == end
  _assert_same_state(state, straight(end)[1])


def _temporary(directory):
  """Orbax's unfinished checkpoint folders ('<step>.orbax-checkpoint-tmp-*')."""
  return [p for p in os.listdir(directory) if 'tmp' in p]


def test_kill_9_while_saving_never_leaves_a_used_checkpoint(tmp_path, straight):
  """SIGKILL while a checkpoint is half written (a save every step): the
  rerun resumes from the newest complete checkpoint and ends exactly where
  an uninterrupted run ends."""
  steps = STEPS
  workdir = tmp_path / 'run'
  for _ in range(5):  # until the kill lands in the middle of a save
    shutil.rmtree(workdir, ignore_errors=True)
    proc = subprocess.Popen(
        main_command(
            workdir,
            f'--config.num_training_steps={steps}',
            '--config.checkpoint_freq=1',
            '--config.max_to_keep=2',
        ),
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    directory = workdir / 'checkpoints'
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:
      if (
          directory.exists()
          and _temporary(directory)
          and any(p.isdigit() for p in os.listdir(directory))
      ):
        proc.kill()
        break
      time.sleep(0.005)
    proc.wait(timeout=60)
    if proc.returncode == -signal.SIGKILL and _temporary(directory):
      break
  else:
    pytest.fail('could not kill the run while it was saving')
  half_written = _temporary(directory)
  complete = sorted(int(p) for p in os.listdir(directory) if p.isdigit())
  killed_at, _ = _state(workdir)
  assert killed_at == complete[-1] < steps
  log = _run(
      workdir, steps, '--config.checkpoint_freq=1', '--config.max_to_keep=2'
  )
  assert f'at step {killed_at} on 1 devices' in log
  _assert_same_state(_state(workdir)[1], straight(steps)[1])
  assert not set(half_written) & set(os.listdir(directory))


def test_unreadable_checkpoint_names_older_ones_and_is_kept(tmp_path):
  config = tiny_config(num_training_steps=4)
  train.train_and_evaluate(config, str(tmp_path))  # checkpoints 2 and 4
  state_dir = tmp_path / 'checkpoints' / '4' / 'state'
  for path in state_dir.rglob('*'):
    if (
        path.is_file()
        and path.name.startswith('ocdbt') is False
        and (path.parent.name == 'd')
    ):
      path.write_bytes(b'\0' * 16)  # a disk error in the array data
  before = sorted(os.listdir(tmp_path / 'checkpoints'))
  with pytest.raises(
      IOError,
      match=r'checkpoints/4 cannot be read .*The newest intact checkpoint '
      r'is step 2 \(checked\): move .*checkpoints/4 out of the way',
  ):
    train.train_and_evaluate(tiny_config(num_training_steps=6), str(tmp_path))
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == before == ['2', '4']
