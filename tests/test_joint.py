"""Joint Hat EBM over a frozen pretrained generator (refinement and
retrofit): training never changes the generator, loading it, resuming, and
evaluating the generator runs it builds on."""

import jax
import numpy as np
import pytest

from hatebm_jax.modes import joint
from hatebm_jax.serving import run as run_lib
from hatebm_jax import train
from hatebm_jax import validation
from conftest import DATA_DIR, stage_config

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    'name,source,gen',
    [
        ('fashion_mnist_refine', 'sngan', dict(gen_ngf=16)),
        ('fashion_mnist_retrofit', 'ae', dict(gen_ngf=8)),
    ],
)
def test_joint_training_never_changes_the_generator(
    generator_runs, tmp_path, name, source, gen
):
  """Through the real loop, stopped after 2 steps and resumed to 3: the hat
  network moves every step, z moves in the chain, the generator's
  parameters and statistics stay bit for bit those of its run."""
  config = stage_config(
      name,
      ebm_ngf=8,
      batch_size=8,
      mcmc_steps=2,
      checkpoint_freq=1,
      max_to_keep=3,
      gen_weights=str(generator_runs / source),
      **gen,
  )
  gen_params, gen_frozen = joint.load_generator(config)
  metrics = train.train_and_evaluate(config, str(tmp_path))
  assert metrics['latent_drift_norm'] > 0
  config.num_training_steps = 3
  train.train_and_evaluate(config, str(tmp_path))
  runs = [run_lib.load_run(str(tmp_path), step) for step in (1, 2, 3)]
  for before, after in zip(runs, runs[1:]):
    for a, b in zip(
        jax.tree.leaves(before.state.hat_params),
        jax.tree.leaves(after.state.hat_params),
    ):
      assert not np.array_equal(a, b)
  for run in runs:
    for a, b in zip(
        jax.tree.leaves((gen_params, gen_frozen)),
        jax.tree.leaves((run.state.gen_params, run.state.gen_frozen)),
    ):
      np.testing.assert_array_equal(a, b)  # bitwise


def test_generator_loading_errors(generator_runs, tmp_path):
  config = stage_config('fashion_mnist_refine', gen_weights=str(tmp_path))
  with pytest.raises(FileNotFoundError, match='holds no checkpoint.*sngan'):
    joint.load_generator(config)
  config.gen_weights = str(generator_runs / 'sngan')  # gen_ngf 16
  assert config.gen_ngf != 16
  with pytest.raises(
      ValueError,
      match=f'gen_ngf: generator 16, this config {config.gen_ngf}',
  ):
    joint.load_generator(config)
  retro = stage_config(
      'fashion_mnist_retrofit',
      gen_ngf=16,
      gen_weights=str(generator_runs / 'sngan'),
  )
  with pytest.raises(ValueError, match='gen_type'):
    joint.load_generator(retro)


def test_missing_generator_path_fails_before_any_compute(tmp_path):
  missing = tmp_path / 'no_such_run'
  config = stage_config('fashion_mnist_refine', gen_weights=str(missing))
  with pytest.raises(
      FileNotFoundError,
      match=f"gen_weights='{missing}' "
      'holds no checkpoint. Train the generator first',
  ):
    train.train_and_evaluate(config, str(tmp_path / 'refine'))
  assert not missing.exists()  # nothing created at the bad path
  assert not (tmp_path / 'refine').exists()  # nor in the workdir


def test_joint_config_checks():
  c = stage_config('fashion_mnist_refine')
  c.gen_weights = ''
  with pytest.raises(ValueError, match="config.gen_weights=''"):
    validation.validate(c)
  c.gen_weights = '/x'
  c.update_latents = False
  with pytest.raises(ValueError, match='update_latents=False'):
    validation.validate(c)
  ae = stage_config('fashion_mnist_ae')
  ae.state_dims = (128,)
  with pytest.raises(ValueError, match='gen_decoder'):
    validation.validate(ae)


def test_joint_resume_bitwise(generator_runs, tmp_path):
  """A refine run of 4 steps equals 2 steps, stopped, and 2 more."""
  from hatebm_jax.serving import run as run_lib  # pylint: disable=g-import-not-at-top

  config = stage_config(
      'fashion_mnist_refine',
      ebm_ngf=8,
      batch_size=8,
      mcmc_steps=2,
      gen_ngf=16,
      num_training_steps=4,
      checkpoint_freq=100,
      gen_weights=str(generator_runs / 'sngan'),
  )
  train.train_and_evaluate(config, str(tmp_path / 'straight'))
  config.num_training_steps = 2
  train.train_and_evaluate(config, str(tmp_path / 'resumed'))
  config.num_training_steps = 4
  train.train_and_evaluate(config, str(tmp_path / 'resumed'))
  a, b = (run_lib.load_run(str(tmp_path / d)) for d in ('straight', 'resumed'))
  assert a.step == b.step == 4
  leaves_a, leaves_b = jax.tree.leaves(a.state), jax.tree.leaves(b.state)
  assert len(leaves_a) == len(leaves_b) > 10
  for u, v in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize(
    'source_run,sources,sampler_key',
    [('sngan', 'generator,ddls', 'num_steps'), ('ae', 'generator', None)],
)
def test_evaluation_of_generator_runs(
    generator_runs, tmp_path, source_run, sources, sampler_key
):
  from hatebm_jax import evaluate  # pylint: disable=g-import-not-at-top

  result = evaluate.evaluate(
      str(generator_runs / source_run),
      metrics='fcd,kid',
      sources=sources,
      output=str(tmp_path / 'm.json'),
      num_samples=100,
      batch_size=50,
      num_reference=500,
      data_dir=DATA_DIR,
      overrides={'ddls_steps': 2} if source_run == 'sngan' else None,
  )
  assert set(result['samples']) == set(sources.split(','))
  for numbers in result['samples'].values():
    assert numbers['fcd'] > 0 and np.isfinite(numbers['kid'])
  if sampler_key:
    assert result['sampler'][sampler_key] == 2  # the override
  else:
    assert result['sampler'] is None
