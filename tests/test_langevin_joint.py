"""The joint (z, y) Langevin sampler against a step-by-step reference."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hatebm_jax.hat_ebm import langevin


def per_example(key, shape):
  """Noise of example i from fold_in(key, i) (device-count independent)."""
  return jnp.stack(
      [
          jax.random.normal(jax.random.fold_in(key, i), shape[1:])
          for i in range(shape[0])
      ]
  )


A = jax.random.normal(jax.random.PRNGKey(1), (3, 2 * 2 * 1))


def generator(z):  # [B, 3] -> [B, 2, 2, 1], nonlinear
  return jnp.tanh(z @ A).reshape(-1, 2, 2, 1)


def energy(x):  # [B, 2, 2, 1] -> [B], nonlinear
  return jnp.sum(0.5 * x**2 + jnp.sin(3.0 * x), axis=(1, 2, 3))


def reference(z, y, key, cfg, order='zy'):
  """The official loop, literally: G recomputed, z then y each step."""
  keys = jax.random.split(key, 2 * cfg.num_steps)
  z_keys, y_keys = keys[: cfg.num_steps], keys[cfg.num_steps :]
  u = lambda z, y: jnp.sum(energy(generator(z) + y)) / cfg.temperature

  def z_step(z, y, k):
    z = z - cfg.latent_step_size**2 / 2 * jax.grad(u, 0)(z, y)
    return z + noise * cfg.latent_step_size * per_example(z_keys[k], z.shape)

  noise = 1.0 if cfg.use_noise else 0.0

  def y_step(z, y, k):
    g = jax.grad(u, 1)(z, y) + 2 * cfg.tau * y
    drift = cfg.step_size**2 / 2 * g
    if cfg.max_drift_norm is not None:
      drift = langevin.clip_per_image(drift, cfg.max_drift_norm)
    return y - drift + noise * cfg.step_size * per_example(y_keys[k], y.shape)

  for k in range(cfg.num_steps):
    if order == 'zy':
      z = z_step(z, y, k)
      y = y_step(z, y, k)
    else:
      y = y_step(z, y, k)
      z = z_step(z, y, k)
  return z, y


CFG = langevin.LangevinConfig(
    num_steps=6,
    step_size=0.3,
    temperature=0.5,
    tau=0.7,
    max_drift_norm=None,
    unroll=True,
    latent_step_size=0.4,
)


@pytest.mark.parametrize('num_steps,unroll', [(1, True), (6, True), (6, 1)])
def test_matches_the_official_order(num_steps, unroll):
  cfg = dataclasses.replace(CFG, num_steps=num_steps, unroll=unroll)
  key = jax.random.PRNGKey(0)
  z0 = jax.random.normal(jax.random.PRNGKey(2), (5, 3))
  y0 = 0.1 * jax.random.normal(jax.random.PRNGKey(3), (5, 2, 2, 1))
  z, y, x_gen, diag = jax.jit(
      langevin.joint_langevin, static_argnums=(0, 1, 5)
  )(energy, generator, z0, y0, key, cfg)
  z_ref, y_ref = reference(z0, y0, key, cfg)
  # float32 round-off grows along the chain (sin(3x) is steep): 1e-4.
  np.testing.assert_allclose(z, z_ref, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(y, y_ref, rtol=1e-4, atol=1e-4)
  # G evaluated on the same z by two programs: an ulp of |G(z)| <= 1.
  np.testing.assert_allclose(x_gen, generator(z), rtol=1e-6, atol=1e-6)
  assert float(diag['latent_norm']) == pytest.approx(
      float(jnp.linalg.norm(z_ref, axis=1).mean()), rel=1e-4
  )
  if num_steps > 1:  # y-then-z (the paper's equations) is another chain
    z_yz, _ = reference(z0, y0, key, cfg, order='yz')
    assert np.abs(np.asarray(z) - np.asarray(z_yz)).max() > 1e-2


def test_residual_is_clipped_and_latent_is_not():
  cfg = dataclasses.replace(
      CFG, max_drift_norm=1e-3, use_noise=False, temperature=1e-3
  )
  z0 = jax.random.normal(jax.random.PRNGKey(2), (4, 3))
  y0 = jnp.zeros((4, 2, 2, 1))
  z, y, _, diag = langevin.joint_langevin(
      energy, generator, z0, y0, jax.random.PRNGKey(0), cfg
  )
  z_ref, _ = reference(z0, y0, jax.random.PRNGKey(0), cfg)
  assert float(diag['residual_clip_fraction']) == 1.0
  # Every drift is clipped to 1e-3 exactly; its float32 norm is off by
  # the round-off of a 16-element sum (~1e-7 relative).
  assert float(diag['residual_drift_norm']) == pytest.approx(1e-3, rel=1e-5)
  # Each y step moved by exactly the bound: ‖y_K‖ ≤ K·1e-3.
  assert np.all(np.asarray(langevin.per_image_norm(y)) <= 6e-3 + 1e-7)
  # The latent drift, (ε_z²/2T)‖∇_z H‖ ≫ 1e-3, is never clipped.
  assert float(diag['latent_drift_norm']) > 1.0
  # As above: the literal loop and the scanned chain round differently
  # and the steep energy carries that along the chain.
  np.testing.assert_allclose(z, z_ref, rtol=1e-4, atol=1e-5)


def test_needs_a_latent_step_size():
  cfg = dataclasses.replace(CFG, latent_step_size=None)
  with pytest.raises(ValueError, match='latent_step_size'):
    langevin.joint_langevin(
        energy,
        generator,
        jnp.zeros((1, 3)),
        jnp.zeros((1, 2, 2, 1)),
        jax.random.PRNGKey(0),
        cfg,
    )
  with pytest.raises(ValueError, match='epsilon_latent=0.0'):
    dataclasses.replace(CFG, latent_step_size=0.0)
