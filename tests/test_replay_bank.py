"""The replay bank: size rounding, lanes, uniform draws, overwrite."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hatebm_jax.hat_ebm import replay_bank


def test_official_bank_size():
  assert (
      replay_bank.bank_size(10_000, 128) == 9_984
  )  # docs/official_release.md §0.9
  assert replay_bank.bank_size(1024, 32) == 1024


def test_bank_smaller_than_batch_is_rejected():
  with pytest.raises(
      ValueError,
      match=r'config.persistent_size=100 is '
      r'invalid: the replay bank must hold at least one '
      r'batch \(batch_size=128\)',
  ):
    replay_bank.bank_size(100, 128)


def test_init_bank_holds_generator_samples_by_lane():
  generate = lambda z: jnp.tile(z[:, :1, None, None], (1, 2, 2, 1)) * 3.0
  key = jax.random.PRNGKey(0)
  bank = replay_bank.init_bank(generate, key, 4, 3, (5,))
  assert bank.images.shape == (4, 3, 2, 2, 1)
  assert bank.latents.shape == (4, 3, 5)
  assert (bank.lanes, bank.depth, bank.size) == (4, 3, 12)
  np.testing.assert_allclose(
      bank.images[..., 0, 0, 0], 3 * bank.latents[..., 0]
  )
  assert np.unique(np.asarray(bank.latents[..., 0])).size == 12
  # Lane b depends on fold_in(key, b) only: a bank of 6 lanes starts alike.
  wider = replay_bank.init_bank(generate, key, 6, 3, (5,))
  np.testing.assert_array_equal(wider.latents[:4], bank.latents)


def test_slot_draws_are_uniform_per_lane_and_independent_of_lane_count():
  counts = np.zeros((16, 4), int)
  for i in range(400):
    slots = np.asarray(replay_bank.draw_slots(jax.random.PRNGKey(i), 16, 4))
    assert slots.shape == (16,) and slots.min() >= 0 and slots.max() < 4
    counts[np.arange(16), slots] += 1
    fewer = replay_bank.draw_slots(jax.random.PRNGKey(i), 5, 4)
    np.testing.assert_array_equal(fewer, slots[:5])
  # Each slot of a lane is drawn with probability 1/4: 100 ± 8.7 (sd) times.
  assert counts.min() > 60 and counts.max() < 140
  # Lanes are not copies of each other.
  assert len({tuple(c) for c in counts}) == 16


def test_write_replaces_exactly_the_drawn_slots():
  bank = replay_bank.ReplayBank(
      jnp.zeros((3, 4, 2, 2, 1)), jnp.zeros((3, 4, 5))
  )
  slots = jnp.array([2, 0, 3])
  new = replay_bank.write(
      bank,
      slots,
      jnp.ones((3, 2, 2, 1)) * jnp.array([1.0, 2.0, 3.0])[:, None, None, None],
      jnp.ones((3, 5)),
  )
  x, z = replay_bank.read(new, slots)
  np.testing.assert_array_equal(x[:, 0, 0, 0], [1, 2, 3])
  np.testing.assert_array_equal(z, 1)
  written = np.zeros((3, 4), bool)
  written[np.arange(3), np.asarray(slots)] = True
  np.testing.assert_array_equal(new.images[~written], 0)
  np.testing.assert_array_equal(new.latents[~written], 0)
  np.testing.assert_array_equal(np.asarray(new.latents[..., 0]) == 1, written)


def test_fit_residual_counts_own_outputs_as_zero():
  """Pairs within OWN_OUTPUT_ATOL of G(z') (round-off) give an exact 0,
  value and gradient; a pair with a Langevin-size residual is untouched."""
  target = jnp.zeros((3, 2, 2, 1))
  offsets = jnp.array([3e-7, -9e-5, 2e-3])  # round-off, just in, a residual
  fit = lambda scale: target + scale * offsets[:, None, None, None]
  residual = replay_bank.fit_residual(fit(1.0), target)
  np.testing.assert_array_equal(residual[:2], 0.0)
  np.testing.assert_array_equal(residual[2], fit(1.0)[2])
  loss = lambda s: jnp.sum(jnp.square(replay_bank.fit_residual(fit(s), target)))
  # d/ds of the third pair's s²·(2e-3)²·4 at s = 1, nothing from the others.
  np.testing.assert_allclose(jax.grad(loss)(1.0), 2 * 4 * 2e-3**2, rtol=1e-6)
  assert replay_bank.OWN_OUTPUT_ATOL == 1e-4
