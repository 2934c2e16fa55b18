"""The divergence guard: the step where values go bad, stop or roll back."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hatebm_jax import data
from hatebm_jax.infra import divergence
from hatebm_jax.modes import base
from hatebm_jax.modes import synthesis
from hatebm_jax import train
from conftest import DATA_DIR, tiny_config


def test_record_keeps_the_first_bad_step_and_its_values():
  state = synthesis.SynthesisState(
      step=jnp.array(3),
      rng=jnp.zeros(2, jnp.uint32),
      hat_params={'w': jnp.ones(2)},
      hat_opt_state=(),
      gen_params={},
      gen_frozen={},
      gen_opt_state=(),
      bank={'x': jnp.ones(3)},
  )
  good = {'energy_pos': 0.5, 'energy_neg': -2.0, 'ebm_loss': 1e9}
  guard = divergence.Guard(
      tuple(sorted(good)), base.checked_fields(state), 10.0
  )
  # The state's fields of floats, in the declared order (not step or rng).
  assert guard.fields == (
      'hat_params',
      'hat_opt_state',
      'gen_params',
      'gen_frozen',
      'gen_opt_state',
      'bank',
  )
  update = jax.jit(guard.update)
  health = update(guard.init(), state, good)
  assert guard.read(jax.device_get(health)) is None
  bad = dict(good, energy_neg=-11.0)
  health = update(health, state.replace(step=jnp.array(4)), bad)
  later = state.replace(step=jnp.array(5), bank={'x': jnp.full(3, jnp.nan)})
  health = update(health, later, dict(good, ebm_loss=jnp.inf))
  failure = guard.read(jax.device_get(health))
  assert failure.step == 4
  assert failure.problems == (
      'energy_neg=-11 (|energy_neg| > divergence_max_energy=10)',
  )
  fresh = guard.update(guard.init(), later, good)
  assert guard.read(jax.device_get(fresh)).problems == (
      'bank holds non-finite values',
  )


def _poisoned(bad_steps, poison_once=False):
  """train_batches stand-in: real Fashion-MNIST batches, but NaN images at
  the steps in `bad_steps` (only the first time when poison_once)."""
  served = set()

  def train_batches(config, start_step, batch_size=None, mesh=None, state=None):
    del mesh, state
    images, _ = data.load_fashion_mnist('train', DATA_DIR)
    source = data.ArrayBatches(
        images, batch_size or config.batch_size, config.seed
    )
    step = start_step
    while True:
      batch = source.batch(step)
      if step in bad_steps and not (poison_once and step in served):
        served.add(step)
        batch = np.full_like(batch, np.nan)
      yield batch
      step += 1

  return train_batches


def test_stops_at_the_step_where_values_go_bad(tmp_path, monkeypatch):
  # NaN images at step index 5: the 6th update; logged only at 10, saved
  # every 4 steps: the report still names step 6, the step-8 state (already
  # NaN) is never saved.
  monkeypatch.setattr(train.data, 'train_batches', _poisoned({5}))
  config = tiny_config(
      num_training_steps=12, info_freq=10, checkpoint_freq=4, plot_freq=100
  )
  with pytest.raises(FloatingPointError) as error:
    train.train_and_evaluate(config, str(tmp_path))
  message = str(error.value)
  # Which metrics turn NaN first depends on how XLA compiled the step
  # (NaN through max/clip): the gradient norm always does.
  assert message.startswith('Training diverged at step 6: ')
  assert 'hat_grad_norm=nan' in message
  assert 'hat_params holds non-finite values' in message
  assert f'Last good checkpoint: step 4 in {tmp_path}/checkpoints' in message
  assert 'on_divergence=rollback' in message
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['4']


@pytest.mark.slow
def test_exploding_energy_is_a_divergence(tmp_path):
  config = tiny_config(divergence_max_energy=1e-6)
  with pytest.raises(
      FloatingPointError,
      match=r'at step 1: energy_neg=.* \(\|energy_neg\| > '
      r'divergence_max_energy=1e-06\), energy_pos=',
  ):
    train.train_and_evaluate(config, str(tmp_path))


@pytest.mark.slow
def test_rollback_restores_lowers_lr_and_finishes(
    tmp_path, monkeypatch, caplog
):
  monkeypatch.setattr(
      train.data, 'train_batches', _poisoned({5}, poison_once=True)
  )
  config = tiny_config(
      num_training_steps=8,
      info_freq=10,
      checkpoint_freq=4,
      plot_freq=100,
      on_divergence='rollback',
      rollback_lr_factor=0.5,
  )
  metrics = train.train_and_evaluate(config, str(tmp_path))
  assert all(np.isfinite(v) for v in metrics.values())
  record = json.loads((tmp_path / 'rollbacks.json').read_text())
  assert [
      (r['detected_at'], r['restored_step'], r['lr_factor']) for r in record
  ] == [(6, 4, 0.5)]
  assert 'hat_grad_norm=nan' in record[0]['problems']
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['4', '8']
  # A restarted run keeps the lowered learning rates.
  with caplog.at_level('INFO'):  # (even without the flag)
    train.train_and_evaluate(
        tiny_config(
            num_training_steps=9, info_freq=10, checkpoint_freq=4, plot_freq=100
        ),
        str(tmp_path),
    )
  assert '1 earlier rollbacks' in caplog.text
  assert 'learning rates x0.5' in caplog.text
  # Same data and step count as a run without trouble, but fresh Langevin
  # randomness and halved learning rates after step 4: other parameters.
  monkeypatch.undo()
  straight = tmp_path / 'straight'
  train.train_and_evaluate(
      tiny_config(num_training_steps=8, info_freq=10, checkpoint_freq=4),
      str(straight),
  )
  a = _final(straight, config)
  b = _final(tmp_path, config, step=8)
  assert int(a.step) == int(b.step) == 8
  assert not np.array_equal(a.rng, b.rng)
  assert not all(
      np.array_equal(x, y)
      for x, y in zip(
          jax.tree.leaves(a.hat_params), jax.tree.leaves(b.hat_params)
      )
  )


def _final(workdir, config, step=None):
  from hatebm_jax.infra import checkpoint  # pylint: disable=g-import-not-at-top

  model = synthesis.SynthesisMode.from_config(config)
  ckpt = checkpoint.Checkpointer(str(workdir))
  try:
    return ckpt.restore(jax.eval_shape(model.init, jax.random.PRNGKey(0)), step)
  finally:
    ckpt.close()


def test_rollbacks_are_bounded(tmp_path, monkeypatch):
  monkeypatch.setattr(train.data, 'train_batches', _poisoned({5}))
  config = tiny_config(
      num_training_steps=8,
      info_freq=10,
      checkpoint_freq=4,
      plot_freq=100,
      on_divergence='rollback',
      max_rollbacks=2,
  )
  with pytest.raises(
      FloatingPointError,
      match=r'diverged at step 6: .* 2 rollbacks were made '
      r'\(max_rollbacks=2\)',
  ):
    train.train_and_evaluate(config, str(tmp_path))
  record = json.loads((tmp_path / 'rollbacks.json').read_text())
  assert [r['lr_factor'] for r in record] == [1.0, 1.0]
