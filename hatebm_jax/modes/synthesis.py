"""Tandem training of a conditional Hat EBM: the synthesis training step.

One iteration (paper Sec. 3.4, Fig. 2; docs/official_release.md §4.1), all
inside one jitted
function:

1. z ~ N(0, I), y₀ = `init_scale_res`·N(0, I); G_t(z) computed once. With
   `noise_init_fraction` ρ > 0, the first round(ρB) chains start from
   uniform noise instead: y₀ = U[-1, 1] − G_t(z).
2. K residual Langevin steps with z fixed (`langevin.residual_langevin`).
3. Positive samples x⁺ = data + `data_epsilon`·N(0, I); negative samples
   x⁻ = G_t(z) + y_K (constants: no gradient reaches G or the chain).
4. Hat network update on the maximum-likelihood loss
   (mean H(x⁺) − mean H(x⁻)) / T (eq. 8), plus the optional energy penalty
   `energy_l2`; Adam, optional per-tensor clip.
5. Generator update on `gen_loss_factor_coop`·MSE(G(z'), X') for B pairs
   drawn without replacement from the replay bank; pairs that are still the
   generator's own output (the first fill, before G moves) count as exactly
   0, as in exact arithmetic (`replay_bank.fit_residual`).
6. Those bank slots are overwritten with (x⁻, z), except those of chains
   started from noise, which keep their pairs.
7. Where the config keeps them (`gen_ema_decay`, `hat_ema_decay` > 0),
   moving averages of the generator and hat weights (`optim.ema_update`);
   sampling, plots, FCD and export read them (`config.sample_weights`).
"""

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax

from hatebm_jax import config_base
from hatebm_jax import models
from hatebm_jax import optim
from hatebm_jax.hat_ebm import langevin
from hatebm_jax.hat_ebm import loss
from hatebm_jax.hat_ebm import replay_bank
from hatebm_jax.infra import parallel
from hatebm_jax.modes import base

Params = Any


class SynthesisState(flax.struct.PyTreeNode):
  """The whole state of a synthesis run: one pytree of device arrays.

  Attributes:
    step: int32 [], training iterations done.
    rng: uint32 [2], the run's base PRNG key; iteration t uses
      fold_in(rng, t), so randomness is a function of (seed, step).
    hat_params, hat_opt_state: hat network θ and its Adam state.
    gen_params, gen_frozen, gen_opt_state: generator φ, its frozen
      batch-norm statistics and its Adam state.
    bank: the replay bank of (X, Z) pairs.
    hat_params_ema, gen_params_ema: moving averages of hat_params and
      gen_params, or None where the config keeps none (decay 0).
  """

  step: jax.Array = base.field(base.COUNTER)
  rng: jax.Array = base.field(base.KEY)
  hat_params: Params = base.field(base.NETWORK)
  hat_opt_state: optax.OptState = base.field(base.OPTIMIZER)
  gen_params: Params = base.field(base.NETWORK)
  gen_frozen: Params = base.field(base.NETWORK)
  gen_opt_state: optax.OptState = base.field(base.OPTIMIZER)
  bank: replay_bank.ReplayBank = base.field(base.SAMPLES)
  hat_params_ema: Params = base.field(base.AVERAGE)
  gen_params_ema: Params = base.field(base.AVERAGE)


@dataclasses.dataclass(frozen=True, eq=False)
class SynthesisMode(base.HatEBMMode):
  """Networks, optimisers and settings of a synthesis run (all static).

  Build it with `from_config`; its methods are pure and jittable.
  """

  capabilities = base.Capabilities(
      sources=('ebm', 'generator', 'initial'), energy=True, chain=True
  )
  options = base.HatEBMMode.options + (
      'hat_ema_decay',
      'gen_ema_decay',
      'noise_init_fraction',
  )

  @classmethod
  def check_config(cls, config: ml_collections.ConfigDict) -> None:
    """The generator takes latent vectors ('gen_sngan'); the replay bank
    holds at least one batch."""
    if models.network('generator', config).latent_shape is not None:
      raise config_base.invalid(
          'gen_type',
          config.gen_type,
          "mode 'synthesis' trains a generator of latent vectors "
          "('gen_sngan')",
      )
    config_base.check_bank(config.persistent_size, config.batch_size)

  hat: models.FunctionalNet
  gen: models.FunctionalNet
  hat_opt: optax.GradientTransformation
  gen_opt: optax.GradientTransformation
  sampler: langevin.LangevinConfig
  batch_size: int
  bank_size: int
  latent_shape: tuple[int, ...]
  image_shape: tuple[int, ...]
  data_epsilon: float
  init_scale_res: float
  init_scale_latent: float
  gen_loss_factor: float
  noise_chains: int = 0
  hat_ema_decay: float = 0.0
  gen_ema_decay: float = 0.0
  energy_l2: float = 0.0

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> 'SynthesisMode':
    """Builds the model of an experiment config (see config_base)."""
    return cls(
        hat=models.create_hat_network(config),
        gen=models.create_generator(config),
        hat_opt=optim.adam(
            config.ebm_lr_info,
            config.max_grad_norm if config.clip_ebm_grad else None,
        ),
        gen_opt=optim.adam(config.gen_lr_info),
        sampler=langevin.LangevinConfig.from_config(config),
        batch_size=config.batch_size,
        bank_size=replay_bank.bank_size(
            config.persistent_size, config.batch_size
        ),
        latent_shape=tuple(config.state_dims),
        image_shape=tuple(config.image_dims),
        data_epsilon=config.data_epsilon,
        init_scale_res=config.init_scale_res,
        init_scale_latent=config.init_scale_latent,
        gen_loss_factor=config.gen_loss_factor_coop,
        noise_chains=round(config.noise_init_fraction * config.batch_size),
        energy_l2=config.energy_l2,
        hat_ema_decay=config.hat_ema_decay,
        gen_ema_decay=config.gen_ema_decay,
    )

  def init(self, key: jax.Array) -> SynthesisState:
    """A fresh state: random networks, bank of G_0 samples (docs/official_release.md §4.1).

    Args:
      key: the run's base PRNG key (`jax.random.PRNGKey(seed)`).
    """
    k_init, k_train = jax.random.split(key)
    k_hat, k_gen, k_bank = jax.random.split(k_init, 3)
    hat_params, _ = self.hat.init(k_hat)
    gen_params, gen_frozen = self.gen.init(k_gen)
    bank = replay_bank.init_bank(
        lambda z: self.generate(gen_params, gen_frozen, z),
        k_bank,
        self.batch_size,
        self.bank_size // self.batch_size,
        self.latent_shape,
    )
    return SynthesisState(
        step=jnp.zeros((), jnp.int32),
        rng=k_train,
        hat_params=hat_params,
        hat_opt_state=self.hat_opt.init(hat_params),
        gen_params=gen_params,
        gen_frozen=gen_frozen,
        gen_opt_state=self.gen_opt.init(gen_params),
        bank=bank,
        hat_params_ema=hat_params if self.hat_ema_decay else None,
        gen_params_ema=gen_params if self.gen_ema_decay else None,
    )

  @staticmethod
  def _average(average, params, decay, step):
    if average is None:
      return None
    return optim.ema_update(average, params, decay, step)

  def sample(
      self,
      hat_params: Params,
      gen_params: Params,
      gen_frozen: Params,
      z: jax.Array,
      key: jax.Array,
      sampler: langevin.LangevinConfig | None = None,
      from_noise: jax.Array | None = None,
  ) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
    """Conditional Hat EBM samples for given latents.

    Args:
      hat_params, gen_params, gen_frozen: network pytrees.
      z: latents [B, nz].
      key: PRNG key for y₀ and the chain's noise.
      sampler: chain settings; the training settings when None.
      from_noise: optional bool [B]: chains that start from X₀ ~ U[-1, 1]
        (y₀ = X₀ − G(z)) instead of G(z) + y₀ (training only,
        `noise_init_fraction`).

    Returns:
      (G(z) [B, S, S, C], y_K [B, S, S, C], diagnostics); the sample is
      X = G(z) + y_K, unclipped.
    """
    sampler = sampler or self.sampler
    k_y0, k_chain = jax.random.split(key)
    x_gen = self.generate(gen_params, gen_frozen, z)
    y0 = self.init_scale_res * parallel.per_example_normal(k_y0, x_gen.shape)
    if from_noise is not None:
      noise = parallel.per_example_uniform(
          jax.random.fold_in(k_y0, 1), x_gen.shape, minval=-1.0
      )
      mask = from_noise.reshape((-1,) + (1,) * (x_gen.ndim - 1))
      y0 = jnp.where(mask, jax.lax.stop_gradient(noise - x_gen), y0)
    frozen_params = jax.lax.stop_gradient(hat_params)
    y, diagnostics = langevin.residual_langevin(
        lambda x: self.energy(frozen_params, x), x_gen, y0, k_chain, sampler
    )
    return x_gen, y, diagnostics

  def draw(
      self, state: SynthesisState, z: jax.Array, key: jax.Array, source: str
  ) -> tuple[jax.Array, jax.Array]:
    """(G(z), y): 'ebm' runs the chain; 'generator' (and 'initial', given
    an initial state) has y = 0."""
    if source == 'ebm':
      x_gen, y, _ = self.sample(
          state.hat_params, state.gen_params, state.gen_frozen, z, key
      )
      return x_gen, y
    x_gen = self.generate(state.gen_params, state.gen_frozen, z)
    return x_gen, jnp.zeros_like(x_gen)

  def chain_segment(
      self,
      state: SynthesisState,
      z: jax.Array,
      y: jax.Array,
      key: jax.Array,
      num_steps: int,
  ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Continues a chain from (z, y) for num_steps: -> (z, y, G(z))."""
    x_gen = self.generate(state.gen_params, state.gen_frozen, z)
    hat = jax.lax.stop_gradient(state.hat_params)
    y, _ = langevin.residual_langevin(
        lambda x: self.energy(hat, x),
        x_gen,
        y,
        key,
        dataclasses.replace(self.sampler, num_steps=num_steps),
    )
    return z, y, x_gen

  def train_step(
      self, state: SynthesisState, x_data: jax.Array
  ) -> tuple[SynthesisState, dict[str, jax.Array]]:
    """One tandem iteration: Langevin chain, hat update, generator update.

    Args:
      state: the current state.
      x_data: a batch of training images [B, S, S, C], float32 in [-1, 1].

    Returns:
      (new state, metrics): scalars
        'ebm_loss': (mean H(x⁺) − mean H(x⁻)) / T, the official "Energy
          Diff" (≈ 1e8 × the raw gap at T = 1e-8);
        'energy_pos', 'energy_neg': mean H of positives and negatives;
        'gen_loss': gen_loss_factor_coop · MSE on the bank pairs (exactly
          0 while every pair read is the generator's own output);
        'residual_drift_norm', 'residual_clip_fraction': chain diagnostics;
        'residual_norm': mean L2 norm of y_K per image;
        'hat_grad_norm': global norm of the hat gradient before clipping.
    """
    key = jax.random.fold_in(state.rng, state.step)
    k_z, k_chain, k_data, k_bank = jax.random.split(key, 4)
    batch = x_data.shape[0]

    z = self.init_scale_latent * parallel.per_example_normal(
        k_z, (batch,) + self.latent_shape
    )
    from_noise = jnp.arange(batch) < self.noise_chains  # [B] bool
    x_gen, y, diagnostics = self.sample(
        state.hat_params,
        state.gen_params,
        state.gen_frozen,
        z,
        k_chain,
        from_noise=from_noise if self.noise_chains else None,
    )
    x_neg = jax.lax.stop_gradient(x_gen + y)
    x_pos = x_data + self.data_epsilon * parallel.per_example_normal(
        k_data, x_data.shape, x_data.dtype
    )

    hat_params, hat_opt_state, hat_metrics = loss.hat_update(
        self.hat_opt,
        self.energy,
        state.hat_params,
        state.hat_opt_state,
        x_pos,
        x_neg,
        self.sampler.temperature,
        self.energy_l2,
    )

    slots = replay_bank.draw_slots(k_bank, state.bank.lanes, state.bank.depth)
    x_target, z_target = replay_bank.read(state.bank, slots)

    def gen_loss(gen_params):
      x_fit = self.generate(gen_params, state.gen_frozen, z_target)
      residual = replay_bank.fit_residual(x_fit, x_target)
      return self.gen_loss_factor * jnp.mean(jnp.square(residual))

    g_loss, gen_grads = jax.value_and_grad(gen_loss)(state.gen_params)
    gen_updates, gen_opt_state = self.gen_opt.update(
        gen_grads, state.gen_opt_state, state.gen_params
    )
    gen_params = optax.apply_updates(state.gen_params, gen_updates)

    if self.noise_chains:  # their slots keep the pairs read above
      rows = lambda a: from_noise.reshape((batch,) + (1,) * (a.ndim - 1))
      x_write = jnp.where(rows(x_neg), x_target, x_neg)
      z_write = jnp.where(rows(z), z_target, z)
    else:
      x_write, z_write = x_neg, z
    bank = replay_bank.write(state.bank, slots, x_write, z_write)
    new_state = state.replace(
        step=state.step + 1,
        hat_params=hat_params,
        hat_opt_state=hat_opt_state,
        gen_params=gen_params,
        gen_opt_state=gen_opt_state,
        bank=bank,
        hat_params_ema=self._average(
            state.hat_params_ema, hat_params, self.hat_ema_decay, state.step
        ),
        gen_params_ema=self._average(
            state.gen_params_ema, gen_params, self.gen_ema_decay, state.step
        ),
    )
    metrics = {
        **hat_metrics,
        'gen_loss': g_loss,
        'residual_norm': langevin.per_image_norm(y).mean(),
        **diagnostics,
    }
    return new_state, metrics
