"""Optimisers: piecewise-constant rates, per-tensor clip, Keras Adam."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hatebm_jax import optim


def test_imagenet_learning_rate_steps():
  """H: 1e-4, 1e-5 from update 230k, 1e-6 from 260k (docs/official_release.md §8 #6)."""
  schedule = optim.lr_schedule([[1e-4, 0], [1e-5, 230_000], [1e-6, 260_000]])
  for update, lr in [
      (0, 1e-4),
      (229_999, 1e-4),
      (230_000, 1e-5),
      (259_999, 1e-5),
      (260_000, 1e-6),
      (10**6, 1e-6),
  ]:
    # optax multiplies the running rate by ratios in float32: ~1e-7.
    assert float(schedule(update)) == pytest.approx(lr, rel=1e-6)


@pytest.mark.parametrize(
    'lr_info,message',
    [
        ([], 'non-empty'),
        ([[1e-4, 10]], 'starting at update 0'),
        ([[1e-4, 0], [1e-5, 0]], 'increase'),
        ([[0.0, 0]], '> 0'),
    ],
)
def test_bad_learning_rate_info(lr_info, message):
  with pytest.raises(ValueError, match=message):
    optim.lr_schedule(lr_info)


def test_clip_is_per_tensor_not_global():
  grads = {'a': jnp.array([30.0, 40.0]), 'b': jnp.array([3.0, 4.0])}
  clipped, _ = optim.clip_per_tensor(10.0).update(grads, None)
  # One float32 scale: exact to an ulp.
  np.testing.assert_allclose(clipped['a'], [6.0, 8.0], rtol=1e-6)
  np.testing.assert_allclose(clipped['b'], [3.0, 4.0], rtol=1e-6)


def test_first_adam_step_is_lr_times_sign():
  opt = optim.adam([[1e-3, 0]], max_grad_norm=50.0)
  params = {'w': jnp.array([1.0, 2.0, 3.0])}
  grads = {'w': jnp.array([1e8, -1e8, 0.0])}  # 1/T-scaled gradients
  updates, _ = opt.update(grads, opt.init(params), params)
  # One Adam step moves each weight by lr·sign(g) up to ε-rounding.
  np.testing.assert_allclose(
      optax.apply_updates(params, updates)['w'],
      [1.0 - 1e-3, 2.0 + 1e-3, 3.0],
      rtol=1e-6,
  )
