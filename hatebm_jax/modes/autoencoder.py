"""Training the deterministic autoencoder whose decoder retrofit builds on.

Per step (docs/official_release.md §4.3): x̂ = Dec(Enc(x) + σ·N(0, I)), with the
latent noise σ = `data_epsilon` (0.02; the official name,
docs/official_release.md §8 #11) added after the projection to the sphere; loss
= `loss_factor`·mean((x − x̂)²) (1000), each network with its own Adam. The test
loss (no latent noise) is reported on the test split. The decoder is
`models.autoencoder.Decoder` (`gen_decoder`), the encoder
`models.autoencoder.Encoder` (`inf_encoder`).
"""

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from hatebm_jax import config_base
from hatebm_jax import models
from hatebm_jax import optim
from hatebm_jax.infra import parallel
from hatebm_jax.models import autoencoder as autoencoder_nets
from hatebm_jax.modes import base

Params = Any


class AEState(flax.struct.PyTreeNode):
  """State of an autoencoder run: both networks and their Adam states.

  The decoder is the generator G of retrofit, so its fields have the
  generator's names (`gen_*`): `generator_networks` hands it to a joint
  run, and checkpoints of earlier versions keep loading.
  """

  step: jax.Array = base.field(base.COUNTER)
  rng: jax.Array = base.field(base.KEY)
  enc_params: Params = base.field(base.NETWORK)
  enc_opt_state: optax.OptState = base.field(base.OPTIMIZER)
  gen_params: Params = base.field(base.NETWORK)
  gen_frozen: Params = base.field(base.NETWORK)
  gen_opt_state: optax.OptState = base.field(base.OPTIMIZER)


@dataclasses.dataclass(frozen=True, eq=False)
class AutoencoderMode(base.Mode):
  """Encoder, decoder, optimisers and settings (all static)."""

  capabilities = base.Capabilities(
      sources=('generator', 'initial'), test_loss=True, generator_source=True
  )
  networks = ('generator', 'encoder')
  options = ('loss_factor',)

  @classmethod
  def check_config(cls, config: ml_collections.ConfigDict) -> None:
    """The decoder is a generator of the encoder's latent shape."""
    gen = models.network('generator', config)
    enc = models.network('encoder', config)
    if gen.latent_shape != enc.latent_shape:
      raise config_base.invalid(
          'gen_type',
          config.gen_type,
          f"mode 'autoencoder' trains a decoder of the encoder's latents "
          f"{enc.latent_shape} ('gen_decoder')",
      )

  enc: models.FunctionalNet
  gen: models.FunctionalNet
  enc_opt: optax.GradientTransformation
  gen_opt: optax.GradientTransformation
  latent_noise: float
  loss_factor: float
  batch_size: int
  latent_shape: tuple[int, ...]
  image_shape: tuple[int, ...]

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> 'AutoencoderMode':
    """Reads `gen_*` (decoder), `inf_ngf`, `inf_lr_info`, `gen_lr_info`,
    `data_epsilon` (latent noise) and `loss_factor`."""
    return cls(
        enc=models.create_encoder(config),
        gen=models.create_generator(config),
        enc_opt=optim.adam(config.inf_lr_info),
        gen_opt=optim.adam(config.gen_lr_info),
        latent_noise=config.data_epsilon,
        loss_factor=config.loss_factor,
        batch_size=config.batch_size,
        latent_shape=tuple(config.state_dims),
        image_shape=tuple(config.image_dims),
    )

  def encode(self, enc_params: Params, x: jax.Array) -> jax.Array:
    """Enc(x): images [B, 32, 32, C] -> latents [B, 16, 16, 1], ‖z‖ = 16."""
    return self.enc.apply(enc_params, {}, x)

  def generator_networks(self, state: AEState) -> tuple[Params, Params]:
    """The decoder a retrofit run takes: (gen_params, gen_frozen)."""
    return state.gen_params, state.gen_frozen

  def init(self, key: jax.Array) -> AEState:
    """Fresh networks and optimiser states from the run's base key."""
    k_init, k_train = jax.random.split(key)
    k_enc, k_gen = jax.random.split(k_init)
    enc_params, _ = self.enc.init(k_enc)
    gen_params, gen_frozen = self.gen.init(k_gen)
    return AEState(
        step=jnp.zeros((), jnp.int32),
        rng=k_train,
        enc_params=enc_params,
        enc_opt_state=self.enc_opt.init(enc_params),
        gen_params=gen_params,
        gen_frozen=gen_frozen,
        gen_opt_state=self.gen_opt.init(gen_params),
    )

  def loss(self, enc_params, gen_params, gen_frozen, x, key=None):
    """loss_factor · MSE of the reconstruction; latent noise if key."""
    z = self.encode(enc_params, x)
    if key is not None:
      z = z + self.latent_noise * parallel.per_example_normal(key, z.shape)
    x_hat = self.generate(gen_params, gen_frozen, z)
    return self.loss_factor * jnp.mean(jnp.square(x - x_hat))

  def train_step(
      self, state: AEState, x_data: jax.Array
  ) -> tuple[AEState, dict[str, jax.Array]]:
    """One Adam step of both networks on the noisy-latent reconstruction.

    Returns:
      (new state, {'ae_loss': loss_factor·MSE, 'latent_norm': mean ‖Enc(x)‖}).
    """
    key = jax.random.fold_in(state.rng, state.step)
    loss, (g_enc, g_gen) = jax.value_and_grad(
        lambda e, g: self.loss(e, g, state.gen_frozen, x_data, key),
        argnums=(0, 1),
    )(state.enc_params, state.gen_params)
    u_enc, enc_opt_state = self.enc_opt.update(
        g_enc, state.enc_opt_state, state.enc_params
    )
    u_gen, gen_opt_state = self.gen_opt.update(
        g_gen, state.gen_opt_state, state.gen_params
    )
    z = self.encode(state.enc_params, x_data)
    new_state = state.replace(
        step=state.step + 1,
        enc_params=optax.apply_updates(state.enc_params, u_enc),
        enc_opt_state=enc_opt_state,
        gen_params=optax.apply_updates(state.gen_params, u_gen),
        gen_opt_state=gen_opt_state,
    )
    norm = jnp.sqrt(jnp.sum(jnp.square(z), axis=(1, 2, 3))).mean()
    return new_state, {'ae_loss': loss, 'latent_norm': norm}

  def test_loss(
      self, state: AEState, images: np.ndarray, batch_size: int = 500
  ) -> float:
    """Mean loss_factor·MSE over float images [N, 32, 32, C], no noise."""
    fn = jax.jit(lambda e, g, f, x: self.loss(e, g, f, x))
    total = 0.0
    for start in range(0, len(images), batch_size):
      chunk = images[start : start + batch_size]
      total += float(
          fn(state.enc_params, state.gen_params, state.gen_frozen, chunk)
      ) * len(chunk)
    return total / len(images)

  def draw(
      self, state: AEState, z: jax.Array, key: jax.Array, source: str
  ) -> tuple[jax.Array, jax.Array]:
    """(Dec(z / ‖z‖ · √m), 0): the decoder on latents projected to the
    encoder's sphere, the retrofit paper's AE-alone baseline."""
    del key, source
    x_gen = self.generate(
        state.gen_params,
        state.gen_frozen,
        autoencoder_nets.project_to_sphere(z),
    )
    return x_gen, jnp.zeros_like(x_gen)
