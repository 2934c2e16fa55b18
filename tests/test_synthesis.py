"""The tandem synthesis training step."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hatebm_jax.modes import synthesis
from hatebm_jax.models import layers
from conftest import tiny_config


def _setup(**overrides):
  config = tiny_config(**overrides)
  model = synthesis.SynthesisMode.from_config(config)
  state = jax.jit(model.init)(jax.random.PRNGKey(0))
  x = jax.random.uniform(jax.random.PRNGKey(9), (8, 32, 32, 1), minval=-1)
  return model, state, x


def _changed(a, b):
  return any(
      bool(jnp.any(u != v))
      for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b))
  )


def test_initial_bank_is_the_initial_generator():
  model, state, _ = _setup()
  assert model.bank_size == 32
  assert state.bank.images.shape == (8, 4, 32, 32, 1)  # 8 lanes of 4
  # G run on batches of 8 (the bank's fill) and of 32 here: float32
  # convolutions of other batch shapes may fuse and round differently.
  np.testing.assert_allclose(
      state.bank.images.reshape(32, 32, 32, 1),
      model.generate(
          state.gen_params, state.gen_frozen, state.bank.latents.reshape(32, 16)
      ),
      rtol=1e-5,
      atol=1e-6,
  )


def test_one_step_updates_everything_and_overwrites_b_bank_slots():
  model, state, x = _setup()
  step = jax.jit(model.train_step)
  new, metrics = step(state, x)
  assert int(new.step) == 1
  assert _changed(state.hat_params, new.hat_params)
  # The first generator update fits G_0 to its own samples (the bank's
  # first fill): its residual is 0 in exact arithmetic and counts as 0
  # (replay_bank.fit_residual), so the loss is exactly 0 and Adam leaves
  # every weight as it was, bit for bit.
  assert float(metrics['gen_loss']) == 0.0
  assert not _changed(state.gen_params, new.gen_params)
  # The frozen batch-norm statistics never move.
  for a, b in zip(
      jax.tree.leaves(state.gen_frozen), jax.tree.leaves(new.gen_frozen)
  ):
    np.testing.assert_array_equal(a, b)
  changed = np.any(np.asarray(new.bank.latents != state.bank.latents), axis=-1)
  np.testing.assert_array_equal(changed.sum(axis=1), 1)  # one slot per lane
  # New pairs are (G_t(z) + y_K, z) with G_t the generator before the step.
  x_gen = model.generate(
      state.gen_params, state.gen_frozen, new.bank.latents[changed]
  )
  residual = np.asarray(new.bank.images[changed] - x_gen)
  norms = np.sqrt((residual**2).sum(axis=(1, 2, 3)))
  assert np.all(norms > 0) and np.all(norms < 2.5 * 2 + 1)  # K=2 clipped drifts
  # (mean H⁺ − mean H⁻)/T with T = 1e-8 against the same from the two
  # logged means: the means are rounded to float32 (~1e-7 of |H| ~ 0.1)
  # before subtracting a gap of ~1e-4, so ~1e-4 relative; 1e-3 allows
  # for the cancellation.
  np.testing.assert_allclose(
      float(metrics['ebm_loss']),
      float(metrics['energy_pos'] - metrics['energy_neg'])
      / model.sampler.temperature,
      rtol=1e-3,
  )


@pytest.mark.slow
def test_generator_learns_once_the_bank_holds_langevin_samples():
  """With a bank of one pair per lane, step 2 reads back step 1's
  negative samples: a real residual, so G moves and the loss is > 0."""
  model, state, x = _setup(persistent_size=8)
  step = jax.jit(model.train_step)
  after_one, _ = step(state, x)
  after_two, metrics = step(after_one, x)
  assert not _changed(state.gen_params, after_one.gen_params)
  assert float(metrics['gen_loss']) > 0.1
  assert _changed(after_one.gen_params, after_two.gen_params)


def test_hat_loss_gradient_is_eq8():
  """The hat update lowers positive energies relative to negatives."""
  model, state, x = _setup(ebm_lr_info=((1e-3, 0),), mcmc_steps=1)
  step = jax.jit(model.train_step)
  new, _ = step(state, x)
  x_neg = new.bank.images[
      np.any(np.asarray(new.bank.latents != state.bank.latents), axis=-1)
  ]
  gap = lambda p: float(
      jnp.mean(model.energy(p, x)) - jnp.mean(model.energy(p, x_neg))
  )
  assert gap(new.hat_params) < gap(state.hat_params)


@pytest.mark.slow
def test_no_recompilation_and_deterministic_steps():
  model, state, x = _setup()
  step = jax.jit(model.train_step, donate_argnums=0)
  copy = jax.tree.map(jnp.copy, state)
  for _ in range(3):
    state, metrics = step(state, x)
  assert step._cache_size() == 1  # pylint: disable=protected-access
  again = copy
  for _ in range(3):
    again, metrics_again = step(again, x)
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(again)):
    np.testing.assert_array_equal(a, b)
  assert metrics.keys() == metrics_again.keys()


def test_paper_config_sizes():
  from conftest import load_config

  model = synthesis.SynthesisMode.from_config(load_config('cifar10_synth'))
  abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0))
  assert layers.count_params(abstract.hat_params) == 4_204_800
  assert layers.count_params(abstract.gen_params) == 4_276_739
  assert abstract.bank.images.shape == (128, 78, 32, 32, 3)  # 9,984 pairs
  assert abstract.bank.latents.shape == (128, 78, 128)
  assert model.sampler.drift_coefficient == 12.5


@pytest.mark.slow
def test_chains_from_noise_start_uniform_and_keep_their_bank_slots():
  """noise_init_fraction = 1/4 of B = 8: chains 0 and 1 start from
  X₀ ~ U[-1, 1]; their bank slots keep the pairs they held."""
  model, state, x = _setup(noise_init_fraction=0.25)
  assert model.noise_chains == 2
  # With a vanishing step the chain stays at X₀ (drift ε²/2T·∇H and noise ε
  # of order 1e-12): X = G(z) + y_K is X₀ up to float32 round-off of
  # G(z) + (X₀ − G(z)), a few 1e-7.
  still = dataclasses.replace(model.sampler, step_size=1e-12)
  z = jax.random.normal(jax.random.PRNGKey(2), (8, 16))
  from_noise = jnp.arange(8) < 2
  x_gen, y, _ = model.sample(
      state.hat_params,
      state.gen_params,
      state.gen_frozen,
      z,
      jax.random.PRNGKey(4),
      still,
      from_noise,
  )
  x0 = np.asarray(x_gen + y)
  assert x0[:2].min() >= -1 - 1e-6 and x0[:2].max() <= 1 + 1e-6
  # 2 x 1024 uniform pixels: mean 0 ± 0.013 and std 1/√3 ± 0.01 (3σ).
  assert abs(x0[:2].mean()) < 0.04 and abs(x0[:2].std() - 3**-0.5) < 0.03
  np.testing.assert_allclose(x0[2:], np.asarray(x_gen[2:]), atol=1e-6)

  new, _ = jax.jit(model.train_step)(state, x)
  changed = np.any(np.asarray(new.bank.latents != state.bank.latents), axis=-1)
  # One slot per lane is drawn; lanes 0 and 1 belong to the noise chains.
  np.testing.assert_array_equal(changed.sum(axis=1), [0, 0, 1, 1, 1, 1, 1, 1])
  np.testing.assert_array_equal(new.bank.images[:2], state.bank.images[:2])
  # Without noise chains the same step writes every lane.
  plain, plain_state, _ = _setup()
  new, _ = jax.jit(plain.train_step)(plain_state, x)
  changed = np.any(
      np.asarray(new.bank.latents != plain_state.bank.latents), axis=-1
  )
  np.testing.assert_array_equal(changed.sum(axis=1), 1)


@pytest.mark.slow
def test_energy_penalty_changes_the_hat_update_only():
  """energy_l2 enters the hat update (loss.hat_update, tested against
  hand-computed gradients in test_loss.py) and nothing else of the step:
  the chain, its logged loss, the generator update and the bank are those
  of the official loss."""
  model, state, x = _setup()
  penalised, _, _ = _setup(energy_l2=0.5)
  plain_state, plain_metrics = jax.jit(model.train_step)(state, x)
  pen_state, pen_metrics = jax.jit(penalised.train_step)(state, x)
  assert _changed(plain_state.hat_params, pen_state.hat_params)
  for a, b in (
      (plain_state.gen_params, pen_state.gen_params),
      (plain_state.bank, pen_state.bank),
      (plain_metrics['ebm_loss'], pen_metrics['ebm_loss']),
  ):
    assert not _changed(a, b)
