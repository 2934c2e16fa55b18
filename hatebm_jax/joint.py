"""Joint Hat EBM: a hat network over a frozen pretrained generator.

Refinement (a pretrained SN-GAN generator, `gen_sngan`, gen_factor 1) and
retrofit (a deterministic autoencoder's decoder, `gen_decoder`) share one
training step (paper Sec. 3.2; facts §4.2):

1. z₀ = `init_scale_latent`·N(0, I), y₀ = `init_scale_res`·N(0, I) (0 in
   training): fresh short-run chains, no replay bank, no persistence;
2. K joint Langevin steps on (z, y) (`langevin.joint_langevin`, z then y);
3. x⁺ = data + `data_epsilon`·N(0, I), x⁻ = G(z_K) + y_K;
4. the synthesis hat update on (mean H(x⁺) − mean H(x⁻)) / T.

The generator's parameters are part of the state (so that checkpoints are
self-contained) but no gradient or optimiser ever touches them; a test
checks they stay bitwise unchanged. They come from a run of this project
(`gen_weights` = its workdir): an SN-GAN run for refinement, an autoencoder
run for retrofit.
"""

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax

from hatebm_jax import langevin
from hatebm_jax import models
from hatebm_jax import optim
from hatebm_jax import parallel
from hatebm_jax import synthesis

Params = Any


class JointState(flax.struct.PyTreeNode):
  """State of a joint run.

  Attributes:
    step: int32 [], training iterations done.
    rng: the run's base key; iteration t uses fold_in(rng, t).
    hat_params, hat_opt_state: hat network θ and its Adam state.
    gen_params, gen_frozen: the frozen pretrained generator (never updated).
  """
  step: jax.Array
  rng: jax.Array
  hat_params: Params
  hat_opt_state: optax.OptState
  gen_params: Params
  gen_frozen: Params


@dataclasses.dataclass(frozen=True, eq=False)
class JointModel:
  """Networks, optimiser and settings of a joint run (all static)."""
  hat: models.FunctionalNet
  gen: models.FunctionalNet
  hat_opt: optax.GradientTransformation
  sampler: langevin.LangevinConfig
  latent_shape: tuple[int, ...]
  image_shape: tuple[int, ...]
  data_epsilon: float
  init_scale_res: float
  init_scale_latent: float

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> 'JointModel':
    """Builds the model; `update_latents` must be on (joint sampler)."""
    if not config.update_latents:
      raise ValueError('config.update_latents=False is invalid for a joint '
                       'run: the joint sampler moves z (set it True).')
    return cls(
        hat=models.create_hat_network(config),
        gen=models.create_generator(config),
        hat_opt=optim.adam(config.ebm_lr_info, config.max_grad_norm
                           if config.clip_ebm_grad else None),
        sampler=langevin.LangevinConfig.from_config(config),
        latent_shape=tuple(config.state_dims),
        image_shape=tuple(config.image_dims),
        data_epsilon=config.data_epsilon,
        init_scale_res=config.init_scale_res,
        init_scale_latent=config.init_scale_latent)

  def energy(self, hat_params: Params, x: jax.Array) -> jax.Array:
    """H(x; θ): images [B, S, S, C] -> energies [B]."""
    return self.hat.apply(hat_params, {}, x)

  def generate(self, gen_params: Params, gen_frozen: Params,
               z: jax.Array) -> jax.Array:
    """G(z) of the frozen generator, inference mode."""
    return self.gen.apply(gen_params, gen_frozen, z)

  def init(self, key: jax.Array, gen_params: Params,
           gen_frozen: Params) -> JointState:
    """A fresh hat network over the given pretrained generator."""
    k_init, k_train = jax.random.split(key)
    hat_params, _ = self.hat.init(k_init)
    return JointState(step=jnp.zeros((), jnp.int32), rng=k_train,
                      hat_params=hat_params,
                      hat_opt_state=self.hat_opt.init(hat_params),
                      gen_params=gen_params, gen_frozen=gen_frozen)

  def sample(self, hat_params: Params, gen_params: Params, gen_frozen: Params,
             z: jax.Array, key: jax.Array,
             sampler: langevin.LangevinConfig | None = None
             ) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
    """Joint Hat EBM samples from initial latents z₀.

    Returns:
      (G(z_K), y_K, diagnostics incl. 'z': z_K); the sample is
      X = G(z_K) + y_K.
    """
    sampler = sampler or self.sampler
    k_y0, k_chain = jax.random.split(key)
    y0 = self.init_scale_res * parallel.per_example_normal(
        k_y0, (z.shape[0],) + self.image_shape)
    frozen_hat = jax.lax.stop_gradient(hat_params)
    frozen_gen = jax.lax.stop_gradient((gen_params, gen_frozen))
    z_k, y, x_gen, diagnostics = langevin.joint_langevin(
        lambda x: self.energy(frozen_hat, x),
        lambda z: self.generate(*frozen_gen, z), z, y0, k_chain, sampler)
    return x_gen, y, {**diagnostics, 'z': z_k}

  SOURCES = ('ebm', 'generator')

  def draw(self, state: JointState, z: jax.Array, key: jax.Array,
           source: str) -> tuple[jax.Array, jax.Array]:
    """'ebm': (G(z_K), y_K) of the joint chain from z; 'generator': (G(z),
    0), the frozen generator's own samples."""
    if source == 'ebm':
      x_gen, y, _ = self.sample(state.hat_params, state.gen_params,
                                state.gen_frozen, z, key)
      return x_gen, y
    x_gen = self.generate(state.gen_params, state.gen_frozen, z)
    return x_gen, jnp.zeros_like(x_gen)

  def chain_segment(self, state: JointState, z: jax.Array, y: jax.Array,
                    key: jax.Array, num_steps: int
                    ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Continues a joint chain from (z, y): -> (z, y, G(z))."""
    hat = jax.lax.stop_gradient(state.hat_params)
    gen = jax.lax.stop_gradient((state.gen_params, state.gen_frozen))
    z, y, x_gen, _ = langevin.joint_langevin(
        lambda x: self.energy(hat, x), lambda z: self.generate(*gen, z),
        z, y, key, dataclasses.replace(self.sampler, num_steps=num_steps))
    return z, y, x_gen

  def train_step(self, state: JointState, x_data: jax.Array
                 ) -> tuple[JointState, dict[str, jax.Array]]:
    """One joint iteration: fresh chains, then the hat update (facts §4.2).

    Returns:
      (new state, metrics): 'ebm_loss', 'energy_pos', 'energy_neg',
      'hat_grad_norm' as in synthesis; 'latent_drift_norm',
      'residual_drift_norm', 'residual_clip_fraction', 'latent_norm' (mean
      ‖z_K‖, the official "Z Norm"), 'residual_norm'.
    """
    key = jax.random.fold_in(state.rng, state.step)
    k_z, k_chain, k_data = jax.random.split(key, 3)
    z0 = self.init_scale_latent * parallel.per_example_normal(
        k_z, (x_data.shape[0],) + self.latent_shape)
    x_gen, y, diagnostics = self.sample(state.hat_params, state.gen_params,
                                        state.gen_frozen, z0, k_chain)
    diagnostics.pop('z')
    x_pos = x_data + self.data_epsilon * parallel.per_example_normal(
        k_data, x_data.shape, x_data.dtype)
    hat_params, hat_opt_state, metrics = synthesis.hat_update(
        self.hat_opt, lambda p, x: self.energy(p, x), state.hat_params,
        state.hat_opt_state, x_pos, x_gen + y, self.sampler.temperature)
    new_state = state.replace(step=state.step + 1, hat_params=hat_params,
                              hat_opt_state=hat_opt_state)
    return new_state, {**metrics, **diagnostics,
                       'residual_norm': langevin.per_image_norm(y).mean()}
