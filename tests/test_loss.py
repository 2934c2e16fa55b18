"""The hat network's update (`loss.hat_update`, eq. 8) and its optional
energy penalty (`energy_l2`), against gradients worked out by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hatebm_jax import config_base
from hatebm_jax import validation
from hatebm_jax.hat_ebm import loss


def _linear_energy(params, x):
  """H(x) = Σ w·x + b per image: ∂H/∂w = x, ∂H/∂b = 1."""
  return jnp.sum(params['w'] * x, axis=(1, 2, 3)) + params['b']


def _setup():
  k_w, k_pos, k_neg = jax.random.split(jax.random.PRNGKey(0), 3)
  params = {
      'w': 0.1 * jax.random.normal(k_w, (4, 4, 1)),
      'b': jnp.asarray(0.3),
  }
  x_pos = jax.random.uniform(k_pos, (6, 4, 4, 1), minval=-1)
  x_neg = jax.random.uniform(k_neg, (6, 4, 4, 1), minval=-1)
  return params, x_pos, x_neg


@pytest.mark.parametrize('alpha', [0.0, 0.5])
def test_update_is_the_gradient_of_eq8_plus_the_penalty(alpha):
  """SGD with rate 1 moves θ by minus the gradient of
  (mean H⁺ − mean H⁻)/T + α(mean H⁺² + mean H⁻²)/T, computed here in
  float64 from ∂H/∂w = x: float32 sums of 16 terms of size ~1 agree to
  ~1e-6."""
  params, x_pos, x_neg = _setup()
  temperature = 0.25
  new, _, metrics = loss.hat_update(
      optax.sgd(1.0),
      _linear_energy,
      params,
      optax.sgd(1.0).init(params),
      x_pos,
      x_neg,
      temperature,
      alpha,
  )
  w, b = np.float64(params['w']), np.float64(params['b'])
  xp, xn = np.float64(x_pos), np.float64(x_neg)
  h_pos = (xp * w).sum(axis=(1, 2, 3)) + b
  h_neg = (xn * w).sum(axis=(1, 2, 3)) + b
  per = lambda h: h[:, None, None, None]
  grad_w = (xp.mean(0) - xn.mean(0)) / temperature + alpha / temperature * (
      (2 * per(h_pos) * xp).mean(0) + (2 * per(h_neg) * xn).mean(0)
  )
  grad_b = alpha / temperature * (2 * h_pos.mean() + 2 * h_neg.mean())
  np.testing.assert_allclose(new['w'], w - grad_w, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(new['b'], b - grad_b, rtol=1e-5, atol=1e-6)
  # The logged loss is eq. 8 alone, whatever the penalty.
  np.testing.assert_allclose(
      metrics['ebm_loss'],
      (h_pos.mean() - h_neg.mean()) / temperature,
      rtol=1e-5,
  )
  np.testing.assert_allclose(metrics['energy_neg'], h_neg.mean(), rtol=1e-5)


@pytest.mark.slow
def test_a_negative_far_from_the_data_settles_at_one_over_2_alpha():
  """H = -0.2 on every image but one negative (a chain from noise), where
  it is a free parameter b. Maximum likelihood alone raises b by lr/(B T)
  every step, without end; with the penalty, gradient descent drives b to
  the stationary point of −1/B + 2αb/B: b = 1/(2α) = 0.5 at α = 1."""

  def energy(params, x):
    far = x[:, 0, 0, 0] > 0.5  # the far negative carries a marker pixel
    return jnp.where(far, params['far'], -0.2)

  x_pos = jnp.zeros((4, 2, 2, 1))
  x_neg = jnp.zeros((4, 2, 2, 1)).at[:1, 0, 0, 0].set(1.0)
  finals = {}
  for alpha in (0.0, 1.0):
    params = {'far': jnp.asarray(0.0)}
    opt = optax.sgd(0.05)
    state = opt.init(params)
    for _ in range(500):
      params, state, _ = loss.hat_update(
          opt, energy, params, state, x_pos, x_neg, 1.0, alpha
      )
    finals[alpha] = float(params['far'])
  # α = 0: 500 steps of 0.05/4 each, 6.25 (float32 sum of 500 equal terms).
  np.testing.assert_allclose(finals[0.0], 6.25, rtol=1e-5)
  # α = 1: b moves by 0.05·(1 − 2b)/4 per step; after 500 steps its distance
  # to 0.5 has shrunk by (1 − 0.025)^500 ≈ 3e-6 (from 0.5).
  np.testing.assert_allclose(finals[1.0], 0.5, atol=1e-5)


def test_penalty_is_for_hat_ebm_modes_only():
  c = config_base.get_base_config()
  c.mode, c.gen_type, c.energy_l2 = 'sngan', 'gen_sngan', 0.1
  with pytest.raises(
      ValueError,
      match="energy_l2=0.1 is invalid: only 'synthesis' and 'joint' runs read",
  ):
    validation.validate(c)
