"""SN-GAN training (Miyato et al. 2018) and DDLS sampling (Che et al. 2020).

The generator that the joint Hat EBM refines is an SN-GAN trained with the
recipe of the Mimicry library the paper used (docs/official_release.md §8 #9):
hinge loss, Adam(2e-4, β = (0, 0.9)), `n_dis` = 5 discriminator updates per
generator update, learning rates decaying linearly to 0, batch 64. The generator
is our `gen_sngan` (`gen_factor` 1); during GAN training its batch norm uses
batch statistics and keeps running averages, which the Hat EBM then uses in
inference mode. The discriminator is `models.discriminator`.

One `train_step` is one generator step: `n_dis` discriminator
steps (each with its own real batch and fresh fakes), then the generator
step; `num_training_steps` counts generator steps, as Mimicry's does.

DDLS (Discriminator Driven Latent Sampling, the paper's Table 1 baseline):
Langevin in z on U(z) = −D(G(z)) + ½‖z‖², the energy of the GAN's implied
latent density p(z) ∝ N(z; 0, I)·exp(D(G(z))). The sign makes images the
discriminator finds real (high logit) low-energy, hence probable.
"""

import dataclasses
from typing import Any

import flax.struct
from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import optax

from hatebm_jax import config_base
from hatebm_jax import models
from hatebm_jax.hat_ebm import langevin
from hatebm_jax.infra import parallel
from hatebm_jax.modes import base
from hatebm_jax.models.discriminator import SNGANDiscriminator

Params = Any


class GANState(flax.struct.PyTreeNode):
  """State of an SN-GAN run.

  Attributes:
    step: int32 [], generator steps done.
    rng: the run's base key; step t uses fold_in(rng, t).
    gen_params, gen_frozen, gen_opt_state: generator weights, its batch-norm
      running statistics and its Adam state.
    disc_params, disc_stats, disc_opt_state: discriminator weights, its
      spectral-norm power-iteration state (u, σ per layer) and Adam state.
  """

  step: jax.Array = base.field(base.COUNTER)
  rng: jax.Array = base.field(base.KEY)
  gen_params: Params = base.field(base.NETWORK)
  gen_frozen: Params = base.field(base.NETWORK)
  gen_opt_state: optax.OptState = base.field(base.OPTIMIZER)
  disc_params: Params = base.field(base.NETWORK)
  disc_stats: Params = base.field(base.NETWORK)
  disc_opt_state: optax.OptState = base.field(base.OPTIMIZER)


def _train_graphdef(build):
  """Graph definition of a module switched to training behaviour."""
  module = nnx.eval_shape(lambda: build(nnx.Rngs(0)))
  module.train()  # batch norm: batch statistics; spectral norm: update u
  return nnx.split(module, nnx.Param, ...)[0]


def _apply_with_state(graphdef, params, state, x):
  """Runs a module that updates its non-parameter state; returns both."""
  module = nnx.merge(graphdef, params, state)
  out = module(x)
  return out, nnx.to_pure_dict(nnx.split(module, nnx.Param, ...)[2])


def hinge_losses(d_real: jax.Array, d_fake: jax.Array) -> jax.Array:
  """Discriminator hinge loss E[max(0, 1 − D(x))] + E[max(0, 1 + D(G(z)))]."""
  return jnp.mean(jax.nn.relu(1.0 - d_real)) + jnp.mean(
      jax.nn.relu(1.0 + d_fake)
  )


@dataclasses.dataclass(frozen=True)
class DDLSConfig:
  """DDLS chain: z ← z − (ε²/2)∇U(z) + ε ξ for K steps (Che et al.'s
  step size is our ε²); `unroll` as in `langevin.scan_unroll`."""

  num_steps: int
  step_size: float
  use_noise: bool = True
  unroll: int | bool = 1

  def __post_init__(self):
    """The config rules of each value (`config_base.check`)."""
    config_base.check('ddls_steps', self.num_steps)
    config_base.check('ddls_epsilon', self.step_size)


@dataclasses.dataclass(frozen=True, eq=False)
class SNGANMode(base.Mode):
  """Networks, optimisers and settings of an SN-GAN run (all static)."""

  capabilities = base.Capabilities(
      sources=('generator', 'ddls', 'initial'), generator_source=True
  )
  networks = ('generator',)
  options = ('disc_ndf', 'gan_lr', 'gan_beta1', 'gan_beta2', 'n_dis')

  @classmethod
  def check_config(cls, config: ml_collections.ConfigDict) -> None:
    """A generator of latent vectors; a discriminator width the image size
    takes; float32 arithmetic."""
    if models.network('generator', config).latent_shape is not None:
      raise config_base.invalid(
          'gen_type',
          config.gen_type,
          "mode 'sngan' trains a generator of latent vectors ('gen_sngan')",
      )
    size = config.image_dims[0]
    if not (size == 32 or config.disc_ndf % 16 == 0):
      raise config_base.invalid(
          'disc_ndf', config.disc_ndf, f'must be a multiple of 16 at {size}px'
      )
    if config.compute_dtype != 'float32':
      raise config_base.invalid(
          'compute_dtype',
          config.compute_dtype,
          "the 'sngan' mode trains in float32 (batch and spectral-norm "
          'statistics); bfloat16 is for the Hat EBM modes and the autoencoder',
      )

  gen: models.FunctionalNet
  gen_train: nnx.GraphDef
  disc: models.FunctionalNet
  disc_train: nnx.GraphDef
  gen_opt: optax.GradientTransformation
  disc_opt: optax.GradientTransformation
  n_dis: int
  batch_size: int
  latent_shape: tuple[int, ...]
  image_shape: tuple[int, ...]
  ddls: DDLSConfig

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> 'SNGANMode':
    """Reads `gen_*`, `disc_ndf`, `gan_lr`, `gan_beta1/2`, `n_dis`,
    `batch_size`, `num_training_steps`, `ddls_steps`, `ddls_epsilon`."""
    gen = models.create_generator(config)
    size, _, channels = config.image_dims
    build_disc = lambda rngs: SNGANDiscriminator(
        size, channels, config.disc_ndf, rngs, update_stats=False
    )
    disc = models.functionalize(
        build_disc, f'SN-GAN discriminator, ndf ' f'{config.disc_ndf}'
    )
    steps = config.num_training_steps

    def adam(updates_per_step):
      schedule = optax.linear_schedule(
          config.gan_lr, 0.0, steps * updates_per_step
      )
      return optax.adam(schedule, b1=config.gan_beta1, b2=config.gan_beta2)

    return cls(
        gen=gen,
        gen_train=_train_graphdef(gen.build),
        disc=disc,
        disc_train=_train_graphdef(build_disc),
        gen_opt=adam(1),
        disc_opt=adam(config.n_dis),
        n_dis=config.n_dis,
        batch_size=config.batch_size,
        latent_shape=tuple(config.state_dims),
        image_shape=tuple(config.image_dims),
        ddls=DDLSConfig(
            config.ddls_steps,
            config.ddls_epsilon,
            unroll=langevin.scan_unroll(config.langevin_unroll),
        ),
    )

  @property
  def images_per_step(self) -> int:
    """Real images one `train_step` consumes: n_dis · B."""
    return self.n_dis * self.batch_size

  @property
  def chain_settings(self) -> DDLSConfig:
    """The DDLS chain (`ddls`)."""
    return self.ddls

  def generator_networks(self, state: GANState) -> tuple[Params, Params]:
    """The generator a refinement run takes: (gen_params, gen_frozen)."""
    return state.gen_params, state.gen_frozen

  def init(self, key: jax.Array) -> GANState:
    """Fresh networks and optimiser states from the run's base key."""
    k_init, k_train = jax.random.split(key)
    k_gen, k_disc = jax.random.split(k_init)
    gen_params, gen_frozen = self.gen.init(k_gen)
    disc_params, disc_stats = self.disc.init(k_disc)
    return GANState(
        step=jnp.zeros((), jnp.int32),
        rng=k_train,
        gen_params=gen_params,
        gen_frozen=gen_frozen,
        gen_opt_state=self.gen_opt.init(gen_params),
        disc_params=disc_params,
        disc_stats=disc_stats,
        disc_opt_state=self.disc_opt.init(disc_params),
    )

  def discriminate(
      self, disc_params: Params, disc_stats: Params, x: jax.Array
  ) -> jax.Array:
    """D(x) in inference mode (stored u, no update): images -> logits [B]."""
    return self.disc.apply(disc_params, disc_stats, x)

  def train_step(
      self, state: GANState, x_data: jax.Array
  ) -> tuple[GANState, dict[str, jax.Array]]:
    """n_dis discriminator steps, then one generator step.

    Args:
      state: the current state.
      x_data: real images [n_dis·B, S, S, C] in [-1, 1].

    Returns:
      (new state, metrics): 'disc_loss' (hinge, mean over the n_dis
      steps), 'gen_loss' (−mean D(G(z))), 'disc_real', 'disc_fake' (mean
      logits of the last discriminator step).
    """
    key = jax.random.fold_in(state.rng, state.step)
    k_disc, k_gen = jax.random.split(key)
    # Example b of the batch brings real images [b·n_dis, (b+1)·n_dis), one
    # per discriminator step, so a step's batch is split over the devices
    # like the global batch (no resharding).
    real = jnp.swapaxes(
        x_data.reshape((self.batch_size, self.n_dis) + self.image_shape), 0, 1
    )
    noise = lambda k: parallel.per_example_normal(
        k, (self.batch_size,) + self.latent_shape
    )

    def disc_step(carry, inputs):
      disc_params, disc_stats, disc_opt_state, gen_frozen = carry
      x_real, step_key = inputs
      fake, gen_frozen = _apply_with_state(
          self.gen_train, state.gen_params, gen_frozen, noise(step_key)
      )

      def loss_fn(params):
        logits, stats = _apply_with_state(
            self.disc_train,
            params,
            disc_stats,
            parallel.interleave(x_real, jax.lax.stop_gradient(fake)),
        )
        d_real, d_fake = logits[0::2], logits[1::2]
        return hinge_losses(d_real, d_fake), (
            stats,
            d_real.mean(),
            d_fake.mean(),
        )

      (loss, (disc_stats, d_real, d_fake)), grads = jax.value_and_grad(
          loss_fn, has_aux=True
      )(disc_params)
      updates, disc_opt_state = self.disc_opt.update(
          grads, disc_opt_state, disc_params
      )
      disc_params = optax.apply_updates(disc_params, updates)
      return (
          (disc_params, disc_stats, disc_opt_state, gen_frozen),
          (loss, d_real, d_fake),
      )

    # A Python loop, not `lax.scan`: XLA:CPU runs these convolutions ~40x
    # slower inside a while loop (measured: 15.5 s against 0.37 s per step
    # at ndf 32, B 64, n_dis 1, jax 0.10.2), and n_dis is small.
    carry = (
        state.disc_params,
        state.disc_stats,
        state.disc_opt_state,
        state.gen_frozen,
    )
    outputs = []
    for x_real, step_key in zip(real, jax.random.split(k_disc, self.n_dis)):
      carry, out = disc_step(carry, (x_real, step_key))
      outputs.append(out)
    disc_params, disc_stats, disc_opt_state, gen_frozen = carry
    d_losses, d_reals, d_fakes = (jnp.stack(v) for v in zip(*outputs))

    def gen_loss_fn(gen_params):
      fake, frozen = _apply_with_state(
          self.gen_train, gen_params, gen_frozen, noise(k_gen)
      )
      logits, stats = _apply_with_state(
          self.disc_train, disc_params, disc_stats, fake
      )
      return -logits.mean(), (frozen, stats)

    (g_loss, (gen_frozen, disc_stats)), grads = jax.value_and_grad(
        gen_loss_fn, has_aux=True
    )(state.gen_params)
    updates, gen_opt_state = self.gen_opt.update(
        grads, state.gen_opt_state, state.gen_params
    )
    new_state = state.replace(
        step=state.step + 1,
        gen_params=optax.apply_updates(state.gen_params, updates),
        gen_frozen=gen_frozen,
        gen_opt_state=gen_opt_state,
        disc_params=disc_params,
        disc_stats=disc_stats,
        disc_opt_state=disc_opt_state,
    )
    return new_state, {
        'disc_loss': d_losses.mean(),
        'gen_loss': g_loss,
        'disc_real': d_reals[-1],
        'disc_fake': d_fakes[-1],
    }

  def draw(
      self, state: GANState, z: jax.Array, key: jax.Array, source: str
  ) -> tuple[jax.Array, jax.Array]:
    """(G(z), 0) for 'generator' / 'initial'; (G(z_K), 0) after DDLS for
    'ddls'."""
    if source == 'ddls':
      z = self.ddls_sample(state, z, key)
    x_gen = self.generate(state.gen_params, state.gen_frozen, z)
    return x_gen, jnp.zeros_like(x_gen)

  def ddls_energy(self, state: GANState, z: jax.Array) -> jax.Array:
    """U(z) = −D(G(z)) + ½‖z‖² per latent [B, nz] -> [B]."""
    x = self.generate(state.gen_params, state.gen_frozen, z)
    logits = self.discriminate(state.disc_params, state.disc_stats, x)
    return -logits + 0.5 * jnp.sum(jnp.square(z), axis=-1)

  def ddls_sample(
      self,
      state: GANState,
      z0: jax.Array,
      key: jax.Array,
      config: DDLSConfig | None = None,
  ) -> jax.Array:
    """DDLS: K Langevin steps in z on `ddls_energy`; returns z_K [B, nz].

    The generator and discriminator run in inference mode, so each
    latent's energy depends on that latent only.
    """
    config = config or self.ddls
    frozen = jax.lax.stop_gradient(state)
    grad = jax.grad(lambda z: jnp.sum(self.ddls_energy(frozen, z)))
    eps = config.step_size

    def step(z, step_key):
      z = z - 0.5 * eps**2 * grad(z)
      if config.use_noise:
        z = z + eps * langevin.chain_noise(step_key, z)
      return z, None

    z, _ = jax.lax.scan(
        step, z0, jax.random.split(key, config.num_steps), unroll=config.unroll
    )
    return jax.lax.stop_gradient(z)
