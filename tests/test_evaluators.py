"""One evaluation path: the evaluators training logs are the ones `evaluate`
runs, and they give the same numbers for the same checkpoint."""

import logging
import os

import numpy as np
import pytest

from hatebm_jax import evaluate
from hatebm_jax import evaluators
from hatebm_jax import train
from hatebm_jax.evaluation import inception
from hatebm_jax.evaluators import common
from conftest import DATA_DIR, random_inception_weights, tiny_config


def logged_scalars(workdir, tags):
  """{(tag, step): value} of the TensorBoard scalars `tags` of a run."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  logged = {}
  for events in workdir.glob('events.out.tfevents.*'):
    for event in tf.compat.v1.train.summary_iterator(str(events)):
      for value in event.summary.value:
        if value.tag in tags:
          logged[(value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
  return logged


def training_settings(num_samples):
  """`evaluate` keyword arguments that repeat evaluation during training
  (`common.Settings.for_training`)."""
  return dict(
      seed=common.TRAINING_SEED,
      num_samples=num_samples,
      batch_size=min(500, num_samples),
      num_reference=10_000,
  )


def test_training_logs_fcd_and_evaluate_repeats_it(tmp_path):
  """FCD and KID at steps 2 and 4 of a Fashion-MNIST run; `evaluate` on the
  step-4 checkpoint with the training settings gives the same values: the
  same evaluator objects on the same parameters, latents, chain noise and
  feature batches, so the same float operations (exact equality)."""
  workdir = tmp_path / 'run'
  train.train_and_evaluate(
      tiny_config(eval_freq=2, eval_num_samples=150), str(workdir)
  )
  logged = logged_scalars(workdir, ('fcd', 'kid', 'kid_std'))
  assert sorted(logged) == [('fcd', 2), ('fcd', 4), ('kid', 2), ('kid', 4)]
  assert logged[('fcd', 2)] > 0 and np.isfinite(logged[('kid', 4)])
  result = evaluate.evaluate(
      str(workdir),
      metrics='fcd,kid',
      output=str(tmp_path / 'm.json'),
      data_dir=DATA_DIR,
      **training_settings(150),
  )
  numbers = result['samples']['ebm']
  assert result['step'] == 4
  # The log holds float32 scalars: compare at that precision.
  assert np.float32(numbers['fcd']) == np.float32(logged[('fcd', 4)])
  assert np.float32(numbers['kid']) == np.float32(logged[('kid', 4)])


def test_auto_metrics_by_data_set_and_mode():
  synth = tiny_config(eval_freq=10)
  caps = train.modes.lookup('synthesis').capabilities
  assert evaluators.for_training(synth, caps) == (['fcd', 'kid'], None)
  cifar = tiny_config(eval_freq=10, data_type='cifar10', image_dims=(32, 32, 3))
  names, note = evaluators.for_training(cifar, caps)
  assert names == [] and '--config.inception_weights=PATH' in note
  assert inception.WEIGHTS_FILE in note
  cifar.inception_weights = '/weights.npz'
  assert evaluators.for_training(cifar, caps) == (['fid', 'kid'], None)
  ae_caps = train.modes.lookup('autoencoder').capabilities
  assert evaluators.for_training(cifar, ae_caps)[0] == [
      'test_loss',
      'fid',
      'kid',
  ]
  assert evaluators.for_training(tiny_config(eval_freq=0), caps) == ([], None)


@pytest.mark.parametrize(
    'overrides,match',
    [
        (dict(eval_metrics='fcd,bleu'), r"eval_metrics='fcd,bleu'.*\['bleu'\]"),
        (dict(eval_metrics='test_loss'), 'has no test loss'),
        (
            dict(
                eval_metrics='fcd',
                data_type='cifar10',
                image_dims=(32, 32, 3),
            ),
            'fcd uses a classifier trained on Fashion-MNIST',
        ),
        (dict(eval_metrics='fid'), 'need Inception weights.*pt_inception'),
        (
            dict(
                data_type='cifar10',
                image_dims=(32, 32, 3),
                inception_weights='/no/such/weights.pth',
            ),
            "inception_weights='/no/such/weights.pth' is invalid: no such file",
        ),
        (dict(eval_freq=-1), 'eval_freq=-1 is invalid'),
        (dict(eval_num_samples=1), 'eval_num_samples=1 is invalid'),
    ],
)
def test_bad_evaluation_settings_fail_before_compute(overrides, match):
  """The workdir is never created: the error comes first."""
  with pytest.raises(ValueError, match=match):
    train.train_and_evaluate(
        tiny_config(**{'eval_freq': 2, **overrides}),
        '/nonexistent/never/created',
    )
  assert not os.path.exists('/nonexistent')


@pytest.mark.slow
def test_cifar10_run_logs_fid_and_evaluate_repeats_it(tmp_path, caplog):
  """A tiny CIFAR-10 run (tfds.testing.mock_data) given Inception weights
  logs FID and KID at its interval (steps 2 and 4); `evaluate` gives the
  same FID for the step-4 checkpoint (exact, as for FCD above)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  weights = random_inception_weights(tmp_path / 'inception.npz')
  config = tiny_config(
      data_type='cifar10',
      image_dims=(32, 32, 3),
      data_dir='',
      data_loader='tf_data',
      eval_freq=2,
      eval_num_samples=6,
      inception_weights=weights,
  )
  workdir = tmp_path / 'run'
  with tfds.testing.mock_data(num_examples=12):
    train.train_and_evaluate(config, str(workdir))
    logged = logged_scalars(workdir, ('fid', 'kid'))
    assert sorted(logged) == [('fid', 2), ('fid', 4), ('kid', 2), ('kid', 4)]
    assert logged[('fid', 2)] > 0 and logged[('fid', 2)] != logged[('fid', 4)]
    result = evaluate.evaluate(
        str(workdir),
        metrics='fid,kid',
        output=str(tmp_path / 'm.json'),
        inception_weights=weights,
        **training_settings(6),
    )
  assert result['feature_nets']['fid']['num_reference'] == 12
  numbers = result['samples']['ebm']
  assert np.float32(numbers['fid']) == np.float32(logged[('fid', 4)])
  assert np.float32(numbers['kid']) == np.float32(logged[('kid', 4)])


def test_a_cifar10_run_without_weights_says_fid_is_off(caplog, tmp_path):
  caplog.set_level(logging.WARNING)
  config = tiny_config(data_type='cifar10', image_dims=(32, 32, 3), eval_freq=2)
  mode = train.modes.build(config)
  train.Outputs(config, train.epath.Path(tmp_path), mode, start=1).close()
  notes = [
      r.getMessage() for r in caplog.records if 'FID is off' in r.getMessage()
  ]
  assert len(notes) == 1
  assert '--config.inception_weights=PATH' in notes[0]
  assert 'every 2 steps' in notes[0]


class MeanPixel(common.Evaluator):
  """A toy metric registered from test code: the mean pixel of samples."""

  name = 'mean_pixel'

  def __init__(self, *, config, settings):
    del config, settings

  def __call__(self, *, samples, source=None):
    return {'mean_pixel': float(samples.images(source).mean())}


@pytest.mark.slow
def test_a_new_metric_is_one_registry_line(tmp_path, monkeypatch):
  """Registered in `EVALUATORS` alone, a metric is valid in the config,
  logged during training and computed by `evaluate`, with equal values."""
  monkeypatch.setitem(evaluators.EVALUATORS, 'mean_pixel', MeanPixel)
  workdir = tmp_path / 'run'
  train.train_and_evaluate(
      tiny_config(eval_freq=4, eval_metrics='mean_pixel', eval_num_samples=20),
      str(workdir),
  )
  logged = logged_scalars(workdir, ('mean_pixel',))
  assert list(logged) == [('mean_pixel', 4)]
  result = evaluate.evaluate(
      str(workdir),
      metrics='mean_pixel',
      output=str(tmp_path / 'm.json'),
      **training_settings(20),
  )
  assert np.float32(result['samples']['ebm']['mean_pixel']) == np.float32(
      logged[('mean_pixel', 4)]
  )
