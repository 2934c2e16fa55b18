"""The conditional Langevin sampler against analytic targets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hatebm_jax.hat_ebm import langevin


def _quadratic(center, curvature):
  """H(x) = (a/2)‖x − c‖² per image: [B, ...] -> [B]."""

  def energy(x):
    return (
        0.5
        * curvature
        * jnp.sum(jnp.square(x - center), axis=tuple(range(1, x.ndim)))
    )

  return energy


def _ula_targets(center, x_gen, curvature, cfg):
  """Exact stationary mean and variance of the discretised chain.

  U(y) = a‖g + y − c‖²/(2T) + τ‖y‖² is Gaussian with precision
  λ = a/T + 2τ and mean μ = (a/T)(c − g)/λ. The unadjusted Langevin chain
  y ← y − (ε²/2)λ(y − μ) + εξ is AR(1) with the same mean and variance
  ε² / (1 − (1 − ε²λ/2)²) = 1 / (λ (1 − ε²λ/4)).
  """
  lam = curvature / cfg.temperature + 2 * cfg.tau
  mean = (curvature / cfg.temperature) * (center - x_gen) / lam
  var = 1.0 / (lam * (1.0 - cfg.step_size**2 * lam / 4.0))
  return mean, var


@pytest.mark.parametrize('tau,temperature', [(0.0, 1.0), (2.0, 0.5)])
def test_gaussian_chain_reaches_analytic_mean_and_variance(tau, temperature):
  chains, dim = 4096, 4
  cfg = langevin.LangevinConfig(
      num_steps=400,
      step_size=0.6,
      temperature=temperature,
      tau=tau,
      max_drift_norm=None,
      unroll=8,
  )
  center = jnp.array([1.0, -2.0, 0.5, 3.0]).reshape(1, 2, 2, 1)
  x_gen = jnp.full((chains, 2, 2, 1), 0.25)
  y0 = jnp.zeros((chains, 2, 2, 1))
  y, _ = jax.jit(langevin.residual_langevin, static_argnums=(0, 4))(
      _quadratic(center, 1.5), x_gen, y0, jax.random.PRNGKey(0), cfg
  )
  mean, var = _ula_targets(center, 0.25, 1.5, cfg)
  y = np.asarray(y).reshape(chains, dim)
  mean = np.broadcast_to(np.asarray(mean).reshape(1, dim), (1, dim))[0]
  # Standard errors: sqrt(var/n) for the mean, var*sqrt(2/n) for the
  # variance; 5 of them leaves a 1e-6 false-alarm rate per coordinate.
  np.testing.assert_array_less(
      np.abs(y.mean(0) - mean), 5 * np.sqrt(var / chains)
  )
  np.testing.assert_array_less(
      np.abs(y.var(0, ddof=1) - var), 5 * var * np.sqrt(2.0 / chains)
  )
  # The continuous-time target differs by a visible discretisation bias,
  # which the test above resolves: the variance is not 1/λ.
  lam = 1.5 / temperature + 2 * tau
  assert abs(var - 1.0 / lam) > 5 * var * np.sqrt(2.0 / chains)


def test_clip_bounds_each_images_drift():
  cfg = langevin.LangevinConfig(
      num_steps=1,
      step_size=1.0,
      temperature=1.0,
      max_drift_norm=0.5,
      use_noise=False,
  )
  # Images 0 and 2 have steep energies (clipped), image 1 a shallow one.
  scale = jnp.array([100.0, 1e-3, 10.0]).reshape(3, 1, 1, 1)
  energy = lambda x: jnp.sum(scale * x, axis=(1, 2, 3))
  y0 = jnp.zeros((3, 4, 4, 2))
  y, diag = langevin.residual_langevin(
      energy, jnp.zeros_like(y0), y0, jax.random.PRNGKey(0), cfg
  )
  norms = np.asarray(langevin.per_image_norm(y))
  # float32 norms of 32-element images: a few ulps (~1e-7) of each sum.
  np.testing.assert_allclose(
      norms, [0.5, 0.5 * 1e-3 * np.sqrt(32), 0.5], rtol=1e-5
  )
  np.testing.assert_allclose(diag['residual_clip_fraction'], 2 / 3)
  # The same norms averaged in another order: float32 round-off only.
  np.testing.assert_allclose(
      diag['residual_drift_norm'], norms.mean(), rtol=1e-6
  )


def test_clip_is_tf_clip_by_norm():
  d = jnp.array([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])
  # clip multiplies by c / ‖d‖ in float32: one or two ulps (1e-7) off.
  np.testing.assert_allclose(
      langevin.clip_per_image(d, 1.0),
      [[0.6, 0.8], [0.3, 0.4], [0.0, 0.0]],
      rtol=1e-6,
  )


def test_drift_coefficient_folds_temperature():
  """ε²/(2T)·∇H equals the official (ε²/2)·∇(H/T) (docs/official_release.md §3)."""
  cfg = langevin.LangevinConfig(
      num_steps=1,
      step_size=5e-4,
      temperature=1e-8,
      max_drift_norm=None,
      use_noise=False,
  )
  # ε²/(2T) in float64: pytest's default rel=1e-6 covers its round-off.
  assert cfg.drift_coefficient == pytest.approx(12.5)
  energy = lambda x: jnp.sum(0.01 * x, axis=(1, 2, 3))
  y0 = jnp.zeros((1, 2, 2, 1))
  y, _ = langevin.residual_langevin(energy, y0, y0, jax.random.PRNGKey(0), cfg)
  # One float32 multiply-add per step: exact to an ulp.
  np.testing.assert_allclose(y, -0.125 * np.ones((1, 2, 2, 1)), rtol=1e-6)


def _run(key, cfg, energy=_quadratic(0.0, 1.0)):
  y0 = jnp.zeros((3, 4, 4, 1))
  return langevin.residual_langevin(energy, y0 + 0.5, y0, key, cfg)[0]


def test_same_key_same_chain_different_key_different_chain():
  cfg = langevin.LangevinConfig(num_steps=5, step_size=0.1, temperature=1.0)
  a = _run(jax.random.PRNGKey(1), cfg)
  np.testing.assert_array_equal(a, _run(jax.random.PRNGKey(1), cfg))
  b = _run(jax.random.PRNGKey(2), cfg)
  assert np.all(np.asarray(a) != np.asarray(b))
  # The steps of one chain draw independent noise (no reused key).
  no_drift = langevin.LangevinConfig(
      num_steps=2, step_size=1.0, temperature=1e12, max_drift_norm=None
  )
  y = _run(jax.random.PRNGKey(3), no_drift)
  one = langevin.LangevinConfig(
      num_steps=1, step_size=1.0, temperature=1e12, max_drift_norm=None
  )
  y1 = _run(jax.random.PRNGKey(3), one)
  assert not np.allclose(np.asarray(y), 2 * np.asarray(y1))


def test_unroll_does_not_change_the_chain():
  cfg = langevin.LangevinConfig(num_steps=6, step_size=0.1, temperature=1.0)
  rolled = _run(jax.random.PRNGKey(4), cfg)
  unrolled = _run(
      jax.random.PRNGKey(4),
      langevin.LangevinConfig(
          num_steps=6, step_size=0.1, temperature=1.0, unroll=True
      ),
  )
  # A smooth quadratic energy (no networks): the two programs differ only
  # in fusion, ~1 ulp per step over 6 contracting steps.
  np.testing.assert_allclose(rolled, unrolled, rtol=1e-6, atol=1e-6)


def test_noise_switch():
  cfg = langevin.LangevinConfig(
      num_steps=3, step_size=0.1, temperature=1.0, use_noise=False
  )
  a = _run(jax.random.PRNGKey(5), cfg)
  np.testing.assert_array_equal(a, _run(jax.random.PRNGKey(6), cfg))
  # Gradient descent on (1/2)‖0.5 + y‖²: y_k = -0.5 (1 − (1 − ε²/2)^k).
  # Closed form in float64 against 3 float32 steps: ~1e-7 relative.
  np.testing.assert_allclose(
      a, -0.5 * (1 - (1 - 0.005) ** 3) * np.ones_like(a), rtol=1e-5
  )


def test_no_parameter_gradient_through_samples():
  cfg = langevin.LangevinConfig(num_steps=3, step_size=0.1, temperature=1.0)

  def sample_sum(theta):
    energy = lambda x: jnp.sum(theta * jnp.square(x), axis=(1, 2, 3))
    return jnp.sum(_run(jax.random.PRNGKey(0), cfg, energy))

  grad = jax.grad(sample_sum)(jnp.float32(0.7))
  assert float(grad) == 0.0
  assert float(sample_sum(0.7)) != float(sample_sum(0.2))  # y depends on θ


@pytest.mark.parametrize(
    'field,value,message',
    [
        ('num_steps', 0, 'mcmc_steps'),
        ('step_size', 0.0, 'epsilon'),
        ('temperature', -1.0, 'mcmc_temp'),
        ('tau', -0.1, 'tau_res'),
        ('max_drift_norm', 0.0, 'max_langevin_norm_res'),
        ('unroll', 0, 'unroll'),
    ],
)
def test_bad_settings_are_rejected(field, value, message):
  kwargs = dict(num_steps=2, step_size=0.1, temperature=1.0)
  kwargs[field] = value
  with pytest.raises(ValueError, match=message):
    langevin.LangevinConfig(**kwargs)
