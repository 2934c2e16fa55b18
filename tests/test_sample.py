"""Sampling a checkpoint with evaluation-time settings."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from hatebm_jax import sample
from hatebm_jax.serving import draw
from hatebm_jax import train
from conftest import ROOT, tensorboard_images, tiny_config


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('run')
  train.train_and_evaluate(tiny_config(num_training_steps=2), str(workdir))
  return workdir


def test_uint8_conversion_is_the_official_one():
  x = np.array([-1.5, -1.0, 0.0, 0.5, 1.0, 2.0])
  np.testing.assert_array_equal(draw.to_uint8(x), [0, 0, 128, 191, 255, 255])


def test_samples_grids_and_settings(run_dir, tmp_path):
  settings = sample.sample_checkpoint(
      str(run_dir),
      num_samples=10,
      batch_size=4,
      output_dir=str(tmp_path),
      mcmc_steps=4,
      mcmc_temp=1e-3,
      init_scale_res=0.01,
      clip_langevin_grad_res=False,
  )
  images = np.load(tmp_path / 'samples.npz')['images']
  assert images.shape == (10, 32, 32, 1) and images.dtype == np.uint8
  assert len(np.unique(images)) > 10
  files = sorted(os.listdir(tmp_path))
  assert [f for f in files if not f.startswith('events.out')] == [
      'grid.png',
      'path.png',
      'samples.npz',
      'settings.json',
  ]
  # The same pictures for TensorBoard, at the checkpoint's step.
  assert tensorboard_images(tmp_path) == {'grid': [2], 'path': [2]}
  saved = json.loads((tmp_path / 'settings.json').read_text())
  assert saved == json.loads(json.dumps(settings))
  assert saved['step'] == 2
  assert saved['sampler']['num_steps'] == 4
  assert saved['sampler']['temperature'] == 1e-3
  assert saved['sampler']['max_drift_norm'] is None  # clip off
  assert saved['init_scale_res'] == 0.01
  # Unset settings keep the training values (fashion_mnist_synth: ε 1e-2).
  assert saved['sampler']['step_size'] == 1e-2


@pytest.mark.slow
def test_same_seed_same_samples(run_dir, tmp_path):
  for name in ('a', 'b'):
    sample.sample_checkpoint(
        str(run_dir), 4, 4, seed=3, output_dir=str(tmp_path / name)
    )
  a = np.load(tmp_path / 'a' / 'samples.npz')['images']
  b = np.load(tmp_path / 'b' / 'samples.npz')['images']
  np.testing.assert_array_equal(a, b)


def test_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match='No checkpoint'):
    sample.sample_checkpoint(str(tmp_path), 4, 4)
  with pytest.raises(ValueError, match='num_samples=0'):
    sample.sample_checkpoint(str(tmp_path), 0, 4)


@pytest.mark.slow
def test_command_line(run_dir, tmp_path):
  result = subprocess.run(
      [
          sys.executable,
          '-m',
          'hatebm_jax.sample',
          f'--workdir={run_dir}',
          '--num_samples=3',
          '--batch_size=3',
          '--mcmc_steps=2',
          f'--output_dir={tmp_path}',
      ],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert result.returncode == 0, result.stderr
  assert np.load(tmp_path / 'samples.npz')['images'].shape[0] == 3


def test_bad_sampler_settings_name_the_key(run_dir, tmp_path):
  with pytest.raises(ValueError, match='config.init_scale_res=-1.0'):
    sample.sample_checkpoint(
        str(run_dir), 4, 4, output_dir=str(tmp_path), init_scale_res=-1.0
    )


# The 64 images `python -m hatebm_jax.sample` draws from the shipped model
# with seed 0 (batch 64, the model's own K, T, ε), recorded when the model was
# exported (tests/data/README.md). They are uint8 after rounding; XLA:CPU's
# float32 kernels differ between CPU families (Intel Xeon and AMD EPYC hosts
# gave different bytes for the previous model) by round-off, so a pixel near a
# rounding boundary may land one level the other way. Measured on one host:
# other XLA fusions (HATEBM_XLA_DEFAULTS=0, with or without Eigen threads)
# changed 0.09% of the pixels, each by 1 level. Allowed: at most 1 level, in
# under 1% of the pixels; a wrong key, sampler setting or network changes
# most pixels by many levels.
SHIPPED_SAMPLES = os.path.join(ROOT, 'tests', 'data', 'shipped_samples.npz')


SHIPPED_MODEL = os.path.join(
    ROOT, 'hatebm_jax', 'assets', 'fashion_mnist_synth.hatebm'
)


@pytest.fixture(scope='module')
def shipped_cli_samples(tmp_path_factory):
  """`python -m hatebm_jax.sample` of the shipped model, seed 0, batch 64."""
  out = tmp_path_factory.mktemp('shipped')
  subprocess.run(
      [
          sys.executable,
          '-m',
          'hatebm_jax.sample',
          f'--workdir={SHIPPED_MODEL}',
          '--num_samples=64',
          '--seed=0',
          f'--output_dir={out}',
      ],
      cwd=ROOT,
      check=True,
      capture_output=True,
  )
  with open(out / 'samples.npz', 'rb') as f:
    return np.load(f)['images']


@pytest.mark.slow
def test_shipped_model_samples_are_those_recorded(shipped_cli_samples):
  images = shipped_cli_samples
  with open(SHIPPED_SAMPLES, 'rb') as f:
    recorded = np.load(f)['images']
  assert images.shape == recorded.shape == (64, 32, 32, 1)
  assert images.dtype == recorded.dtype == np.uint8
  diff = np.abs(images.astype(int) - recorded)
  assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (
      diff.max(),
      (diff > 0).mean(),
  )


_API = """
import sys
import numpy as np
{before}
import hatebm_jax
model = hatebm_jax.load_pretrained({model!r})
np.save(sys.argv[1], model.sample(64, seed=0, batch_size=64))
"""


def _api_samples(tmp_path, before=''):
  """`Pretrained.sample` in a plain Python process (no entry point): its
  images and stderr."""
  out = tmp_path / 'api.npy'
  result = subprocess.run(
      [
          sys.executable,
          '-c',
          _API.format(before=before, model=SHIPPED_MODEL),
          str(out),
      ],
      cwd=str(tmp_path),
      # A user's environment: no XLA_FLAGS (this test process has set them).
      env={k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'},
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  return np.load(out), result.stderr


@pytest.mark.slow
def test_api_draws_the_command_lines_images(shipped_cli_samples, tmp_path):
  """`import hatebm_jax` applies the entry points' XLA:CPU settings, so the
  API and `python -m hatebm_jax.sample` compute alike: the same bytes. A
  program that ran JAX first is warned that they may differ."""
  images, stderr = _api_samples(tmp_path)
  np.testing.assert_array_equal(images, shipped_cli_samples)
  assert 'may differ by round-off' not in stderr
  late, stderr = _api_samples(
      tmp_path, before='import jax; jax.numpy.ones(1).block_until_ready()'
  )
  assert 'JAX started its CPU backend before hatebm_jax was imported' in stderr
  # Round-off only: a few pixels by a level or two.
  diff = np.abs(late.astype(int) - shipped_cli_samples)
  assert diff.max() <= 2 and (diff > 0).mean() < 0.01


@pytest.mark.slow
def test_sampling_reports_progress_with_an_eta(run_dir, tmp_path, caplog):
  """A line at each tenth of the samples: 40 samples in batches of 4."""
  caplog.set_level('INFO')
  sample.sample_checkpoint(
      str(run_dir), num_samples=40, batch_size=4, output_dir=str(tmp_path)
  )
  lines = [
      r.getMessage() for r in caplog.records if 'drawing 40' in r.getMessage()
  ]
  assert len(lines) == 10, lines
  assert lines[0].startswith('drawing 40 samples (ebm): 4/40 (10%)')
  assert 'ETA' in lines[0]
  assert lines[-1].startswith('drawing 40 samples (ebm): 40/40 (100%)')


def test_outputs_are_staged_so_a_failure_leaves_nothing(tmp_path):
  """`storage.staged`: files land in the folder only when the block ends;
  a write that fails (as on a full disk) leaves the folder as it was and
  names it."""
  from hatebm_jax.serving import storage  # pylint: disable=g-import-not-at-top

  folder = tmp_path / 'eval'
  folder.mkdir()
  (folder / 'samples.npz').write_text('an earlier run')
  with pytest.raises(OSError, match=f'Writing to {folder} failed .*No space'):
    with storage.staged(folder) as staging:
      (staging / 'samples.npz').write_text('half')
      raise OSError(28, 'No space left on device')
  assert sorted(os.listdir(tmp_path)) == ['eval']  # no staging folder left
  assert (folder / 'samples.npz').read_text() == 'an earlier run'
  with storage.staged(folder) as staging:
    (staging / 'samples.npz').write_text('new')
    (staging / 'grid.png').write_text('grid')
  assert sorted(os.listdir(folder)) == ['grid.png', 'samples.npz']
  assert (folder / 'samples.npz').read_text() == 'new'
  assert sorted(os.listdir(tmp_path)) == ['eval']
