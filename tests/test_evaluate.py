"""The evaluation entry point end to end on a tiny run."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from hatebm_jax import evaluate
from hatebm_jax.evaluators import common
from hatebm_jax.serving import draw
from hatebm_jax.serving import run as run_lib
from hatebm_jax import train
from conftest import DATA_DIR, ROOT, tiny_config

SMALL = dict(
    num_samples=200,
    batch_size=100,
    num_reference=500,
    num_ood=300,
    data_dir=DATA_DIR,
)


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('run')
  train.train_and_evaluate(tiny_config(num_training_steps=2), str(workdir))
  return workdir


def test_every_metric_with_its_settings(run_dir, tmp_path):
  out = tmp_path / 'metrics.json'
  result = evaluate.evaluate(
      str(run_dir),
      metrics='fcd,kid,ood',
      sources='ebm,generator,initial',
      output=str(out),
      ood_sets=('mnist', 'uniform_noise', 'constant'),
      overrides={'mcmc_steps': 3},
      **SMALL,
  )
  assert json.loads(out.read_text()) == json.loads(json.dumps(result))
  assert result['step'] == 2 and result['num_samples'] == 200
  assert result['sampler']['num_steps'] == 3
  assert result['overrides'] == {'mcmc_steps': 3}
  assert result['reference'] == {'split': 'test', 'num': 500}
  net = result['feature_nets']['fcd']
  assert net['name'].startswith('fashion-mnist-lenet-v1:')
  assert net['test_accuracy'] == pytest.approx(0.904)
  assert net['num_reference'] == 500
  assert result['feature_nets']['kid']['name'] == net['name']
  for source in ('ebm', 'generator', 'initial'):
    numbers = result['samples'][source]
    assert numbers['fcd'] > 0 and np.isfinite(numbers['kid'])
    assert numbers['kid_std'] > 0
  ood = result['ood']
  assert ood['in_distribution'] == 'fashion_mnist test'
  assert ood['num_in'] == 300 and ood['num_ood']['mnist'] == 300
  assert set(ood['auroc']) == {'mnist', 'uniform_noise', 'constant'}
  assert all(0.0 <= v <= 1.0 for v in ood['auroc'].values())


def test_evaluation_is_deterministic(run_dir, tmp_path):
  kwargs = dict(SMALL, metrics='fcd', sources='ebm', num_samples=150)
  a = evaluate.evaluate(str(run_dir), output=str(tmp_path / 'a.json'), **kwargs)
  b = evaluate.evaluate(str(run_dir), output=str(tmp_path / 'b.json'), **kwargs)
  assert a['samples']['ebm']['fcd'] == b['samples']['ebm']['fcd']


def test_generator_source_is_g_of_z(run_dir):
  run = run_lib.load_run(str(run_dir))
  images, (z, x_gen, y) = draw.draw_images(
      run, 5, 5, 0, 'generator', return_first=True
  )
  assert np.all(y == 0)
  np.testing.assert_array_equal(images, draw.to_uint8(x_gen))
  initial = draw.draw_images(run, 5, 5, 0, 'initial')
  assert not np.array_equal(initial, images)  # the generator has trained


def test_reference_cache_is_keyed_by_the_images(run_dir, tmp_path):
  net = common.lenet()
  a_stats, a_feats = common.reference_features(
      net, 'fashion_mnist', DATA_DIR, 'test', 32, 100
  )
  b_stats, _ = common.reference_features(
      net, 'fashion_mnist', DATA_DIR, 'test', 32, 200
  )
  assert (a_stats.num_samples, b_stats.num_samples) == (100, 200)
  again_stats, again_feats = common.reference_features(
      net, 'fashion_mnist', DATA_DIR, 'test', 32, 100
  )
  np.testing.assert_array_equal(again_feats, a_feats)
  np.testing.assert_array_equal(again_stats.cov, a_stats.cov)


def test_bad_requests_fail_before_sampling(run_dir, tmp_path):
  with pytest.raises(ValueError, match=r"metrics='fcd,is'.*\['is'\]"):
    evaluate.evaluate(str(run_dir), metrics='fcd,is')
  with pytest.raises(ValueError, match="sources='gan'"):
    evaluate.evaluate(str(run_dir), metrics='fcd', sources='gan')
  with pytest.raises(ValueError, match='num_samples=1 must be >= 2'):
    evaluate.evaluate(str(run_dir), metrics='fcd', num_samples=1)
  with pytest.raises(ValueError, match="ood_sets='mnist,lsun'"):
    evaluate.evaluate(
        str(run_dir), metrics='ood', ood_sets=('mnist', 'lsun'), **SMALL
    )
  with pytest.raises(FileNotFoundError, match='pt_inception-2015-12-05'):
    evaluate.evaluate(str(run_dir), metrics='fid', **SMALL)
  with pytest.raises(ValueError, match="a 'synthesis' run has no test loss"):
    evaluate.evaluate(str(run_dir), metrics='test_loss', **SMALL)
  with pytest.raises(TypeError, match='positional'):
    evaluate.evaluate(str(run_dir), 'fcd')  # pylint: disable=too-many-function-args
  with pytest.raises(TypeError, match='num_refrence'):
    evaluate.evaluate(str(run_dir), metrics='fcd', num_refrence=5)
  with pytest.raises(FileNotFoundError, match='No checkpoint'):
    evaluate.evaluate(str(tmp_path), metrics='fcd')


@pytest.mark.slow
def test_command_line(run_dir, tmp_path):
  out = tmp_path / 'cli.json'
  proc = subprocess.run(
      [
          sys.executable,
          '-m',
          'hatebm_jax.evaluate',
          f'--workdir={run_dir}',
          '--metrics=fcd,kid',
          '--num_samples=150',
          '--batch_size=50',
          '--num_reference=500',
          f'--data_dir={DATA_DIR}',
          f'--output={out}',
          '--mcmc_steps=2',
      ],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=600,
      env=dict(os.environ),
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  saved = json.loads(out.read_text())
  assert saved['samples']['ebm']['fcd'] > 0
  assert saved['sampler']['num_steps'] == 2
  printed = json.loads(proc.stdout)
  assert printed['samples'] == saved['samples']


def test_checkpoints_saved_before_a_key_existed_still_load(
    run_dir, monkeypatch
):
  original = run_lib.checkpoint.Checkpointer.restore_config

  def without_new_keys(self, step=None):
    saved = original(self, step)
    del saved['eval_metrics'], saved['inception_weights']
    saved['fcd_freq'] = saved.pop('eval_freq')  # the key's former name
    del saved['eval_num_samples']
    saved['fcd_num_samples'] = 1234
    return saved

  monkeypatch.setattr(
      run_lib.checkpoint.Checkpointer, 'restore_config', without_new_keys
  )
  run = run_lib.load_run(str(run_dir))
  assert run.config.eval_freq == 0 and run.config.eval_num_samples == 1234
  assert (
      run.config.eval_metrics == 'auto' and run.config.inception_weights == ''
  )
  assert 'fcd_freq' not in run.config


def test_reference_cache_survives_a_run_writing_the_same_entry(
    monkeypatch, tmp_path
):
  # Two runs starting at once both miss the cache: here the other one
  # finishes the same entry while this one computes its features.
  monkeypatch.setenv('HATEBM_CACHE_DIR', str(tmp_path))
  net = common.lenet()
  args = ('fashion_mnist', DATA_DIR, 'test', 32, 100)

  class RacedNet:
    name, preprocessing = net.name, net.preprocessing

    def features(self, images, batch_size, progress=''):
      common.reference_features(net, *args)
      return net.features(images, batch_size, progress)

  raced_stats, _ = common.reference_features(RacedNet(), *args)
  stats, _ = common.reference_features(net, *args)
  np.testing.assert_array_equal(raced_stats.cov, stats.cov)
  entries = sorted(p.name for p in (tmp_path / 'reference').iterdir())
  assert len(entries) == 1 and entries[0].endswith('.npz'), entries


def test_evaluation_reports_progress_at_every_tenth(run_dir, caplog, tmp_path):
  """Sampling and the features of the samples each log a line per tenth of
  their images (1,000 samples in batches of 100), with an ETA; each OOD set
  one line."""
  caplog.set_level('INFO')
  evaluate.evaluate(
      str(run_dir),
      metrics='fcd,ood',
      sources='ebm',
      output=str(tmp_path / 'm.json'),
      ood_sets=('uniform_noise',),
      **{**SMALL, 'num_samples': 1000},
  )
  messages = [r.getMessage() for r in caplog.records]
  for what in ('drawing 1,000 samples (ebm)', 'classifier features of the ebm'):
    lines = [m for m in messages if m.startswith(what)]
    assert len(lines) == 10, (what, lines)
    assert [int(m.split('(')[-1].split('%')[0]) for m in lines] == list(
        range(10, 101, 10)
    )
    assert all('ETA' in m for m in lines)
  assert any(m.startswith('OOD uniform_noise: AUROC') for m in messages)
