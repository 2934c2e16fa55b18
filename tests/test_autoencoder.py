"""The retrofit autoencoder: its encoder's latents on the sphere, and its
training stage resuming bit for bit."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import AE, assert_stage_resumes_bitwise
from hatebm_jax.models import autoencoder


def test_encoder_latents_lie_on_the_sphere():
  enc = autoencoder.Encoder(1, 8, nnx.Rngs(0))
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 32, 32, 1))
  z = enc(x)
  assert z.shape == (3, 16, 16, 1)
  np.testing.assert_allclose(
      jnp.linalg.norm(z.reshape(3, -1), axis=1), 16.0, rtol=1e-5
  )  # √m, m = 256


@pytest.mark.slow
def test_autoencoder_stage_resumes_bitwise(tmp_path):
  assert_stage_resumes_bitwise(tmp_path, 'fashion_mnist_ae', AE)
