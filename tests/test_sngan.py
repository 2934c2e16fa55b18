"""SN-GAN (the generator refinement starts from) and DDLS: spectral norm,
the training step, the DDLS chain against its formula, and the stage
resuming bit for bit."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import SNGAN, assert_stage_resumes_bitwise, stage_config
from hatebm_jax import modes
from hatebm_jax.models import discriminator
from hatebm_jax.modes import sngan


def test_spectral_norm_reaches_unit_singular_values():
  d = discriminator.SNGANDiscriminator(32, 1, 16, nnx.Rngs(0))
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 1))
  for _ in range(60):  # power iterations, one per call
    d(x)
  kernels = {}
  for path, value in nnx.to_flat_state(nnx.state(d, nnx.Param)):
    if path[-1] == 'kernel':
      kernels[path] = np.asarray(value[...])
  sigmas = {
      path[:-2]: float(value[...])
      for path, value in nnx.to_flat_state(nnx.state(d, nnx.BatchStat))
      if path[-1] == ('kernel', 'sigma')
  }
  assert len(kernels) == 11 and len(sigmas) == 11  # 10 convs + head
  for path, kernel in kernels.items():
    # The stored kernel is W/σ after a call; its top singular value is ~1.
    top = np.linalg.svd(kernel.reshape(-1, kernel.shape[-1]), compute_uv=False)[
        0
    ]
    assert top == pytest.approx(1.0, abs=2e-2), path


def test_sngan_step_updates_both_networks_and_running_statistics():
  config = stage_config('fashion_mnist_sngan', **SNGAN)
  model = modes.build(config)
  state = model.init(jax.random.PRNGKey(0))
  x = jax.random.uniform(
      jax.random.PRNGKey(1), (model.images_per_step, 32, 32, 1), minval=-1
  )
  new, metrics = jax.jit(model.train_step)(state, x)
  assert all(np.isfinite(float(v)) for v in metrics.values())
  changed = lambda a, b: any(
      not np.array_equal(u, v)
      for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b))
  )
  assert changed(state.gen_params, new.gen_params)
  assert changed(state.disc_params, new.disc_params)
  assert changed(state.gen_frozen, new.gen_frozen)  # BN running means
  assert changed(state.disc_stats, new.disc_stats)  # power iteration
  # Hinge loss of D: 0 when real ≥ 1 and fake ≤ −1.
  assert (
      float(sngan.hinge_losses(jnp.array([1.5, 2.0]), jnp.array([-3.0, -1.0])))
      == 0.0
  )


def test_ddls_lowers_the_energy_without_noise():
  config = stage_config('fashion_mnist_sngan', **SNGAN)
  model = modes.build(config)
  state = model.init(jax.random.PRNGKey(0))
  z0 = 2.0 * jax.random.normal(jax.random.PRNGKey(3), (6, 128))
  cfg = sngan.DDLSConfig(num_steps=20, step_size=0.3, use_noise=False)
  z = model.ddls_sample(state, z0, jax.random.PRNGKey(4), cfg)
  before, after = model.ddls_energy(state, z0), model.ddls_energy(state, z)
  assert np.all(np.asarray(after) < np.asarray(before))
  # U = −D(G(z)) + ½‖z‖²: the prior part pulls the oversized z inwards.
  assert float(jnp.linalg.norm(z, axis=1).mean()) < float(
      jnp.linalg.norm(z0, axis=1).mean()
  )


@pytest.mark.slow
def test_ddls_step_matches_its_formula_and_unrolling_changes_nothing():
  config = stage_config('fashion_mnist_sngan', **SNGAN)
  model = modes.build(config)
  state = model.init(jax.random.PRNGKey(0))
  z0 = jax.random.normal(jax.random.PRNGKey(3), (4, 128))
  key = jax.random.PRNGKey(5)
  eps = 0.2
  one = model.ddls_sample(state, z0, key, sngan.DDLSConfig(1, eps))
  grad = jax.grad(lambda z: jnp.sum(model.ddls_energy(state, z)))(z0)
  step_key = jax.random.split(key, 1)[0]
  noise = jnp.stack(
      [
          jax.random.normal(jax.random.fold_in(step_key, i), z0.shape[1:])
          for i in range(4)
      ]
  )
  # One step against its formula: the same float32 operations, compiled as
  # two programs (a scan body and a plain gradient), so they agree up to
  # the round-off of re-associated sums, a few ulps of |z| ~ 3 (~1e-6).
  np.testing.assert_allclose(
      one, z0 - 0.5 * eps**2 * grad + eps * noise, rtol=1e-5, atol=1e-5
  )
  # Five steps rolled and unrolled: XLA fuses the two programs differently,
  # so float32 round-off (~1e-7 relative per step) enters each step and the
  # chain carries it on; seen up to 6e-5 on a busy machine. A wrong unroll
  # (a step lost or repeated, other noise keys) moves z by ~eps·|ξ| ≈ 0.2,
  # so 1e-3 lies well apart from both.
  rolled, unrolled = (
      model.ddls_sample(state, z0, key, sngan.DDLSConfig(5, eps, unroll=u))
      for u in (1, True)
  )
  np.testing.assert_allclose(rolled, unrolled, rtol=0, atol=1e-3)


@pytest.mark.slow
def test_sngan_stage_resumes_bitwise(tmp_path):
  assert_stage_resumes_bitwise(tmp_path, 'fashion_mnist_sngan', SNGAN)
