"""End to end: the real training loop and entry point on a tiny config."""

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
from conftest import ROOT, main_command, tensorboard_images, tiny_config


def _restore(workdir, config):
  model = synthesis.SynthesisMode.from_config(config)
  abstract = jax.eval_shape(model.init, jax.random.PRNGKey(config.seed))
  ckpt = checkpoint.Checkpointer(str(workdir))
  try:
    return ckpt.latest_step(), ckpt.restore(abstract), ckpt.restore_config()
  finally:
    ckpt.close()


def test_run_writes_checkpoints_events_and_grids(tmp_path):
  config = tiny_config()
  metrics = train.train_and_evaluate(config, str(tmp_path))
  assert {
      'ebm_loss',
      'gen_loss',
      'energy_pos',
      'energy_neg',
      'residual_drift_norm',
  } <= set(metrics)
  assert all(np.isfinite(v) for v in metrics.values())
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['2', '4']
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(tmp_path))
  samples = sorted(os.listdir(tmp_path / 'samples'))
  assert samples == ['data.png', 'step_000002.png', 'step_000004.png']
  assert tensorboard_images(tmp_path) == {
      'training_data': [0],
      'samples': [2, 4],
  }
  step, state, saved_config = _restore(tmp_path, config)
  assert step == 4 and int(state.step) == 4
  assert saved_config['mcmc_steps'] == 2
  # Rerunning the finished run resumes and stops at once.
  assert train.train_and_evaluate(config, str(tmp_path)) is None


def test_resume_is_bitwise_identical(tmp_path):
  config = tiny_config(checkpoint_freq=100)
  straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
  train.train_and_evaluate(config, str(straight))
  train.train_and_evaluate(tiny_config(num_training_steps=2), str(resumed))
  train.train_and_evaluate(config, str(resumed))
  _, a, _ = _restore(straight, config)
  _, b, _ = _restore(resumed, config)
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b) > 10
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(x, y)


@pytest.mark.slow
def test_non_finite_metric_stops_with_step_and_quantity(tmp_path, monkeypatch):
  def nan_batches(config, start_step, batch_size=None, mesh=None, state=None):
    del start_step, batch_size, mesh, state
    while True:
      yield np.full((config.batch_size, 32, 32, 1), np.nan, np.float32)

  with pytest.raises(
      FloatingPointError,
      match=r'diverged at step 1: .*=nan.*No checkpoint was written',
  ):
    monkeypatch.setattr(train.data, 'train_batches', nan_batches)
    train.train_and_evaluate(tiny_config(), str(tmp_path / 'new'))
  monkeypatch.undo()
  train.train_and_evaluate(tiny_config(num_training_steps=2), str(tmp_path))
  monkeypatch.setattr(train.data, 'train_batches', nan_batches)
  with pytest.raises(
      FloatingPointError,
      match=r'diverged at step 3: .*Last good checkpoint: step 2',
  ):
    train.train_and_evaluate(tiny_config(), str(tmp_path))


@pytest.mark.slow
def test_entry_point_ctrl_c_saves_and_rerun_continues(tmp_path):
  """SIGINT mid-run saves the current step; rerunning continues from it
  (tests/test_preemption.py: SIGTERM, and bitwise equality)."""
  env = dict(os.environ, PYTHONUNBUFFERED='1')
  proc = subprocess.Popen(
      main_command(tmp_path, '--config.num_training_steps=100000'),
      cwd=ROOT,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
  )
  lines = []
  deadline = time.time() + 300
  for line in proc.stdout:  # wait until training steps are logged
    lines.append(line)
    if '[3] ' in line and 'ebm_loss' in line or time.time() > deadline:
      break
  proc.send_signal(signal.SIGINT)
  out, _ = proc.communicate(timeout=300)
  log = ''.join(lines) + out
  assert proc.returncode == 0, log
  assert 'Stopped by SIGINT' in log
  step, _, _ = _restore(tmp_path, tiny_config())
  assert 3 <= step < 100000
  rerun = subprocess.run(
      main_command(tmp_path, f'--config.num_training_steps={step + 1}'),
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert rerun.returncode == 0, rerun.stderr
  assert 'Resumed from' in rerun.stderr and f'at step {step}' in rerun.stderr
  assert _restore(tmp_path, tiny_config())[0] == step + 1


def test_entry_point_rejects_bad_values_before_compute(tmp_path):
  result = subprocess.run(
      main_command(tmp_path, '--config.mcmc_steps=0'),
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=120,
  )
  assert result.returncode != 0
  assert 'config.mcmc_steps=0 is invalid' in result.stderr
  assert not (tmp_path / 'checkpoints').exists()
  result = subprocess.run(
      main_command(tmp_path, '--config.mcmc_stepz=3'),
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=120,
  )
  assert result.returncode != 0 and 'mcmc_stepz' in result.stderr
  assert 'Traceback' not in result.stderr  # one line: runtime.parse_flags
  # A config file that is not there, with an override after it (which made
  # ml_collections raise while parsing): one line naming the path.
  command = main_command(tmp_path, '--config.mcmc_steps=3')
  command[3] = '--config=configs/fashion_mnist_synht.py'
  result = subprocess.run(
      command, cwd=ROOT, capture_output=True, text=True, timeout=120
  )
  assert result.returncode != 0 and 'Traceback' not in result.stderr
  assert result.stderr.strip().splitlines()[-1] == (
      "FATAL Flags parsing error: --config='configs/fashion_mnist_synht.py' "
      'is not a file; the experiment configs are in configs/, e.g. '
      'configs/fashion_mnist_synth.py.'
  )


def test_resume_with_other_shapes_names_the_keys(tiny_run, tmp_path):
  shutil.copytree(tiny_run, tmp_path / 'run')
  with pytest.raises(ValueError, match=r'ebm_ngf: checkpoint 8, config 16'):
    train.train_and_evaluate(tiny_config(ebm_ngf=16), str(tmp_path / 'run'))
  # The run's checkpoints are untouched.
  assert sorted(os.listdir(tmp_path / 'run' / 'checkpoints')) == ['2', '4']


def test_checkpoint_of_another_structure_lists_the_entries(tiny_run, tmp_path):
  """A checkpoint whose arrays do not fit (here: its saved config claims
  ebm_ngf=16, its arrays are 8 wide) is an error listing the entries; the
  workdir is left as it was, never overwritten by a new initialisation."""
  import json  # pylint: disable=g-import-not-at-top

  from hatebm_jax.infra import integrity  # pylint: disable=g-import-not-at-top

  tmp_path = tmp_path / 'run'
  shutil.copytree(tiny_run, tmp_path)
  saved = tmp_path / 'checkpoints' / '4' / 'config' / 'metadata'
  config_json = json.loads(saved.read_text())
  config_json['ebm_ngf'] = 16
  saved.write_text(json.dumps(config_json))
  # The config alone edited: its fingerprint no longer matches.
  with pytest.raises(IOError, match='is damaged: its config'):
    train.train_and_evaluate(tiny_config(ebm_ngf=16), str(tmp_path))
  # Config and fingerprint written together, as a version that saved the
  # wrong arrays would have.
  prints = tmp_path / 'checkpoints' / '4' / 'fingerprints' / 'metadata'
  record = json.loads(prints.read_text())
  record['config_crc32'] = integrity.config_crc32(config_json)
  prints.write_text(json.dumps(record))
  before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob('*')}
  with pytest.raises(ValueError) as error:
    train.train_and_evaluate(tiny_config(ebm_ngf=16), str(tmp_path))
  message = str(error.value)
  assert 'Config keys that differ' not in message
  assert 'State entries that differ (' in message
  assert (
      'hat_params/block1/conv1/kernel: checkpoint float32[3, 3, 1, 8], '
      'config float32[3, 3, 1, 16]'
  ) in message
  assert 'nothing was changed in it' in message
  assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob('*')} == before


def test_relative_workdir_and_workdirs_that_are_files(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # Orbax needs absolute paths: made absolute
  train.train_and_evaluate(tiny_config(num_training_steps=4), 'runs/rel')
  assert sorted(os.listdir(tmp_path / 'runs' / 'rel' / 'checkpoints')) == [
      '2',
      '4',
  ]
  (tmp_path / 'afile').write_text('')
  with pytest.raises(
      ValueError,
      match=f'{tmp_path}/afile is a file, not a '
      'folder: --workdir must be a folder',
  ):
    train.train_and_evaluate(tiny_config(), 'afile')
  (tmp_path / 'w').mkdir()
  (tmp_path / 'w' / 'checkpoints').write_text('')
  with pytest.raises(ValueError, match='w/checkpoints is a file'):
    train.train_and_evaluate(tiny_config(), str(tmp_path / 'w'))
  with pytest.raises(ValueError, match="--workdir='' is empty"):
    train.train_and_evaluate(tiny_config(), '')


def test_checkpoint_without_metadata_is_unreadable_not_a_mismatch(
    tiny_run, tmp_path
):
  tmp_path = tmp_path / 'run'
  shutil.copytree(tiny_run, tmp_path)  # checkpoints 2, 4
  (tmp_path / 'checkpoints' / '4' / 'state' / '_METADATA').unlink()
  with pytest.raises(
      IOError,
      match=r'checkpoints/4 cannot be read .*The newest intact checkpoint '
      r'is step 2 \(checked\)',
  ):
    train.train_and_evaluate(tiny_config(num_training_steps=6), str(tmp_path))


def test_profile_steps_writes_a_trace(tmp_path):
  """profile_steps=2 on a 6-step run: a profiler trace for TensorBoard (of
  steps 4-5: 10 steps in would be past the end)."""
  config = tiny_config(
      num_training_steps=6, profile_steps=2, plot_freq=100, checkpoint_freq=100
  )
  train.train_and_evaluate(config, str(tmp_path))
  traces = [
      os.path.join(root, name)
      for root, _, names in os.walk(tmp_path / 'plugins' / 'profile')
      for name in names
      if name.endswith('.xplane.pb')
  ]
  assert len(traces) == 1 and os.path.getsize(traces[0]) > 1000
