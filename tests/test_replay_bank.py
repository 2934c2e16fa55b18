"""The replay bank: size rounding, draws without replacement, overwrite."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hatebm_jax import replay_bank


def test_official_bank_size():
  assert replay_bank.bank_size(10_000, 128) == 9_984  # facts §0.9
  assert replay_bank.bank_size(1024, 32) == 1024


def test_bank_smaller_than_batch_is_rejected():
  with pytest.raises(ValueError, match='persistent_size=100 .* batch_size=128'):
    replay_bank.bank_size(100, 128)


def test_init_bank_holds_generator_samples():
  generate = lambda z: jnp.tile(z[:, :1, None, None], (1, 2, 2, 1)) * 3.0
  bank = replay_bank.init_bank(generate, jax.random.PRNGKey(0), 12, (5,), 4)
  assert bank.images.shape == (12, 2, 2, 1) and bank.latents.shape == (12, 5)
  np.testing.assert_allclose(bank.images[:, 0, 0, 0], 3 * bank.latents[:, 0])
  assert np.unique(np.asarray(bank.latents[:, 0])).size == 12


def test_draws_are_without_replacement_and_cover_the_bank():
  counts = np.zeros(64, int)
  for i in range(200):
    slots = np.asarray(replay_bank.draw_slots(jax.random.PRNGKey(i), 64, 16))
    assert len(set(slots.tolist())) == 16
    counts[slots] += 1
  # Each slot is drawn with probability 1/4 per draw: 50 ± 6 (sd) times.
  assert counts.min() > 25 and counts.max() < 75


def test_write_replaces_exactly_the_drawn_slots():
  bank = replay_bank.ReplayBank(jnp.zeros((8, 2, 2, 1)), jnp.zeros((8, 3)))
  slots = jnp.array([6, 1, 3])
  new = replay_bank.write(bank, slots, jnp.ones((3, 2, 2, 1)) *
                          jnp.array([1., 2., 3.])[:, None, None, None],
                          jnp.ones((3, 3)))
  x, z = replay_bank.read(new, slots)
  np.testing.assert_array_equal(x[:, 0, 0, 0], [1, 2, 3])
  np.testing.assert_array_equal(z, 1)
  untouched = np.setdiff1d(np.arange(8), np.asarray(slots))
  np.testing.assert_array_equal(new.images[untouched], 0)
  np.testing.assert_array_equal(new.latents[untouched], 0)
