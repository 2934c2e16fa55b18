"""Short-run Langevin samplers of Hat EBM.

The conditional sampler (paper eq. 6 with the latent z fixed) moves only the
residual image y under the energy

    U(y) = H(G(z) + y) / T + τ ‖y‖²,

with K steps of

    y ← y − clip((ε²/2) ∇_y U(y)) + ε ξ,   ξ ~ N(0, I),

where `clip` rescales each image's drift vector to an L2 norm of at most
`max_drift_norm` (TF `clip_by_norm` semantics). The coefficient of ∇H is
folded, (ε²/2T) ∇H, which is algebraically the official update (clip the
gradient at max_norm / (ε²/2), then scale; docs/official_release.md §3) without
forming the 1e8-sized gradient of H/T. G(z) is a constant of the chain and is
computed once by the caller (docs/official_release.md §8 #12).

Source: paper eq. 6; docs/official_release.md §3.
"""

import dataclasses
from typing import Callable, Optional, Union

import jax
import jax.numpy as jnp
import ml_collections

from hatebm_jax import config_base
from hatebm_jax.infra import parallel

EnergyFn = Callable[[jax.Array], jax.Array]


def scan_unroll(langevin_unroll: int) -> Union[int, bool]:
  """`lax.scan` unroll for a chain of gradient steps from `langevin_unroll`.

  Args:
    langevin_unroll: the config value: 0 fully unrolled, n ≥ 1 unroll n,
      −1 automatic: fully unrolled on CPU, 1 (rolled) on other backends.
      On XLA:CPU a rolled scan over gradient steps runs 2.4x (hat network)
      to 13x (SN-GAN generator and discriminator) slower than an unrolled
      one (docs/performance.md; measured here with jax
      0.10.2), at the price of compile time that grows with K.

  Returns:
    True (fully unrolled) or an int ≥ 1.
  """
  if langevin_unroll == -1:
    langevin_unroll = 0 if jax.default_backend() == 'cpu' else 1
  return True if langevin_unroll == 0 else langevin_unroll


@dataclasses.dataclass(frozen=True)
class LangevinConfig:
  """Settings of a residual Langevin chain (hashable: a static jit argument).

  Attributes:
    num_steps: K ≥ 1, Langevin steps per chain (`mcmc_steps`).
    step_size: ε > 0, the residual step size (`epsilon`); the noise std of
      each step is ε and the drift coefficient is ε²/2.
    temperature: T > 0 (`mcmc_temp`); the energy is H / T.
    tau: τ ≥ 0, weight of the Gaussian residual prior τ‖y‖² (`tau_res`),
      added after the 1/T scaling (docs/official_release.md §0.6).
    max_drift_norm: per-image bound on the L2 norm of the drift step
      (`max_langevin_norm_res`, 2.5 in every training config), or None for
      no clipping (`clip_langevin_grad_res=False`).
    use_noise: add ε ξ each step (`use_noise`); False gives gradient descent.
    unroll: `jax.lax.scan` unroll: an int ≥ 1, or True for a fully unrolled
      chain (a rolled scan over gradient steps is 2.4x slower on XLA:CPU).
    latent_step_size: ε_z > 0 of the latent updates of the joint sampler
      (`epsilon_latent`, with `update_latents`), or None when z is fixed.
  """

  num_steps: int
  step_size: float
  temperature: float
  tau: float = 0.0
  max_drift_norm: Optional[float] = 2.5
  use_noise: bool = True
  unroll: Union[int, bool] = 1
  latent_step_size: Optional[float] = None

  def __post_init__(self):
    """The config rules of each value (`config_base.check`)."""
    for key, value in (
        ('mcmc_steps', self.num_steps),
        ('epsilon', self.step_size),
        ('mcmc_temp', self.temperature),
        ('tau_res', self.tau),
        ('max_langevin_norm_res', self.max_drift_norm),
        ('epsilon_latent', self.latent_step_size),
    ):
      if value is not None:
        config_base.check(key, value)
    if not (
        self.unroll is True
        or (isinstance(self.unroll, int) and self.unroll >= 1)
    ):
      raise ValueError(
          f'langevin unroll={self.unroll!r} must be an integer ' '>= 1 or True.'
      )

  @property
  def drift_coefficient(self) -> float:
    """ε² / (2T): the factor on ∇H in each drift step."""
    return self.step_size**2 / (2.0 * self.temperature)

  @property
  def latent_drift_coefficient(self) -> float:
    """ε_z² / (2T): the factor on ∇_z H in each latent drift step."""
    return self.latent_step_size**2 / (2.0 * self.temperature)

  @classmethod
  def from_config(
      cls, config: ml_collections.ConfigDict, **overrides
  ) -> 'LangevinConfig':
    """The training-time chain settings of an experiment config.

    Reads `mcmc_steps`, `epsilon`, `mcmc_temp`, `tau_res`,
    `clip_langevin_grad_res`, `max_langevin_norm_res`, `use_noise`,
    `update_latents` with `epsilon_latent` (joint runs), and
    `langevin_unroll` (0 = fully unrolled; -1 = fully unrolled on CPU, where
    a rolled scan over gradient steps is 2.4x slower, and rolled elsewhere).
    Keyword overrides replace fields, e.g. `num_steps=125` for evaluation.
    """
    fields = dict(
        num_steps=config.mcmc_steps,
        step_size=config.epsilon,
        temperature=config.mcmc_temp,
        tau=config.tau_res,
        max_drift_norm=(
            config.max_langevin_norm_res
            if config.clip_langevin_grad_res
            else None
        ),
        use_noise=config.use_noise,
        unroll=scan_unroll(config.langevin_unroll),
        latent_step_size=(
            config.epsilon_latent if config.get('update_latents') else None
        ),
    )
    fields.update(overrides)
    return cls(**fields)


def chain_noise(step_key: jax.Array, x: jax.Array) -> jax.Array:
  """The N(0, I) draw of one Langevin step for the chain state `x` [B, ...].

  `parallel.per_example_normal(step_key, x.shape)`, drawn so that it can
  only be computed once `x` is: row i's index gets isnan(x[i, first
  element]) added, which is 0 in every finite state (so the draws are
  exactly those of `step_key`) and keeps the dependency within the row (no
  communication when the batch is split over devices). Without this data
  dependency XLA computes parts of every step's draw before the chain
  starts (the keys are all known then) and holds them: an unrolled chain's
  memory grew by two noise-sized buffers per step
  (tests/test_performance.py).

  Args:
    step_key: uint32 [2] PRNG key of the step.
    x: the state the noise is added to (y [B, S, S, C] or z [B, ...]).

  Returns:
    Standard normal noise, x's shape and dtype.
  """
  nan_first = jnp.isnan(x.reshape(x.shape[0], -1)[:, 0]).astype(jnp.int32)
  return parallel.per_example_normal(
      step_key, x.shape, x.dtype, offset=nan_first
  )


def per_image_norm(x: jax.Array) -> jax.Array:
  """L2 norm over all but the leading axis: [B, ...] -> [B]."""
  return jnp.sqrt(jnp.sum(jnp.square(x), axis=tuple(range(1, x.ndim))))


def _clip(
    drift: jax.Array, norm: jax.Array, max_norm: float
) -> tuple[jax.Array, jax.Array]:
  """(drift, its per-image norms [B]) rescaled to norms ≤ max_norm."""
  scale = max_norm / jnp.maximum(norm, max_norm)
  return drift * scale.reshape((-1,) + (1,) * (drift.ndim - 1)), norm * scale


def clip_per_image(drift: jax.Array, max_norm: float) -> jax.Array:
  """Rescales each image of `drift` [B, ...] to L2 norm ≤ max_norm.

  TF `clip_by_norm` semantics, d · c / max(‖d‖, c) (docs/official_release.md
  §0.5, §3).
  """
  return _clip(drift, per_image_norm(drift), max_norm)[0]


def _residual_step(
    grad_h: jax.Array, y: jax.Array, step_key: jax.Array, config: LangevinConfig
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One residual step given ∇_y H at (G(z), y) (docs/official_release.md §3, step 2).

  y ← y − clip((ε²/2T)∇H + ε²τ y) + ε ξ. Returns (y, drift norm of each
  image [B], whether each image's drift was clipped [B] bool). The
  diagnostics stay per image, so that a chain split over devices needs no
  communication inside its loop; callers average them after it.
  """
  drift = config.drift_coefficient * grad_h
  if config.tau > 0:
    drift = drift + config.step_size**2 * config.tau * y  # (ε²/2)∇(τ‖y‖²)
  norm = per_image_norm(drift)
  if config.max_drift_norm is not None:
    clipped = norm > config.max_drift_norm
    drift, norm = _clip(drift, norm, config.max_drift_norm)
  else:
    clipped = jnp.zeros(norm.shape, bool)
  y = y - drift
  if config.use_noise:
    y = y + config.step_size * chain_noise(step_key, y)
  return y, norm, clipped


def _step_means(per_image: jax.Array) -> jax.Array:
  """[steps, B] per-image diagnostics -> [steps] batch means (float32)."""
  return per_image.astype(jnp.float32).mean(axis=1)


def residual_langevin(
    energy_fn: EnergyFn,
    x_gen: jax.Array,
    y0: jax.Array,
    key: jax.Array,
    config: LangevinConfig,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Conditional Hat EBM sampler: Langevin on y with G(z) fixed (eq. 6).

  Args:
    energy_fn: H as a function of images, [B, H, W, C] -> [B]. Each image's
      energy may depend only on that image (the networks here run in
      inference mode), so ∇ of the batch sum is the per-image gradient.
      Close over `jax.lax.stop_gradient(params)`: the chain is never
      differentiated.
    x_gen: G(z), [B, H, W, C] float32, computed once per chain.
    y0: initial residual [B, H, W, C] (0, or `init_scale_res`·N(0, I)).
    key: PRNG key of this chain; step k uses the k-th of K split keys.
    config: chain settings.

  Returns:
    (y_K, diagnostics): y_K [B, H, W, C] float32, outside any gradient
    (`stop_gradient`); diagnostics, scalars averaged over the K steps and
    the batch:
      'residual_drift_norm': mean L2 norm per image of the (clipped) drift
        step (ε²/2)‖∇_y U‖, noise excluded (docs/official_release.md §3.3);
      'residual_clip_fraction': fraction of image-steps whose drift was
        clipped (0 when clipping is off).
  """
  grad_fn = jax.grad(lambda y: jnp.sum(energy_fn(x_gen + y)))

  def step(y, step_key):
    y, norm, clipped = _residual_step(grad_fn(y), y, step_key, config)
    return y, (norm, clipped)

  keys = jax.random.split(key, config.num_steps)
  y, (drift_norms, clipped) = jax.lax.scan(step, y0, keys, unroll=config.unroll)
  diagnostics = {
      'residual_drift_norm': _step_means(drift_norms).mean(),
      'residual_clip_fraction': _step_means(clipped).mean(),
  }
  return jax.lax.stop_gradient(y), diagnostics


def joint_langevin(
    energy_fn: EnergyFn,
    generator_fn: Callable[[jax.Array], jax.Array],
    z0: jax.Array,
    y0: jax.Array,
    key: jax.Array,
    config: LangevinConfig,
) -> tuple[jax.Array, jax.Array, jax.Array, dict[str, jax.Array]]:
  """Joint Hat EBM sampler: Langevin on the latent z and the residual y.

  Each of the K steps updates z first, then y at the new z, in the order of the
  official code (docs/official_release.md §3, §8 #3; the paper's eqs. 6-7 list y
  first):

    z ← z − (ε_z²/2T) ∇_z H(G(z) + y) + ε_z ξ      (never clipped, no prior)
    y ← y − clip((ε²/2) ∇_y [H(G(z) + y)/T + τ‖y‖²]) + ε ξ'

  Gradients reach z through the frozen generator. G runs once per step:
  the forward pass at z_k feeds the y sub-step and is linearised (`jax.vjp`)
  for the next z sub-step, which is evaluated at the same z_k. The chain is
  therefore a prologue z-step, K − 1 scanned (y, z) pairs and a final
  y-step, and it returns G(z_K) for free.

  Args:
    energy_fn: H, images [B, H, W, C] -> [B], per image (see
      `residual_langevin`); close over stop_gradient(params).
    generator_fn: G, latents [B, ...] -> images [B, H, W, C], per image
      (inference mode), with its parameters closed over.
    z0: initial latents [B, ...] (`init_scale_latent`·N(0, I)).
    y0: initial residuals [B, H, W, C].
    key: PRNG key of the chain.
    config: chain settings with `latent_step_size` set.

  Returns:
    (z_K, y_K, G(z_K), diagnostics), all outside any gradient; the sample
    is X_K = G(z_K) + y_K. Diagnostics, averaged over the K steps and the
    batch: 'latent_drift_norm' ((ε_z²/2T)‖∇_z H‖ per image),
    'residual_drift_norm', 'residual_clip_fraction' (as in
    `residual_langevin`) and 'latent_norm' (mean ‖z_K‖, the official
    "Z Norm").

  Raises:
    ValueError: when `config.latent_step_size` is None.
  """
  if config.latent_step_size is None:
    raise ValueError(
        'joint_langevin needs latent_step_size (epsilon_latent) '
        'set; use residual_langevin when z is fixed.'
    )
  latent_coefficient = config.latent_drift_coefficient
  grad_x = jax.grad(lambda x: jnp.sum(energy_fn(x)))

  def latent_step(z, y, x_gen, pullback, step_key):
    (grad_z,) = pullback(grad_x(x_gen + y))
    drift = latent_coefficient * grad_z
    z = z - drift
    if config.use_noise:
      z = z + config.latent_step_size * chain_noise(step_key, z)
    return z, per_image_norm(drift)

  def residual_step(y, x_gen, step_key):
    return _residual_step(grad_x(x_gen + y), y, step_key, config)

  keys = jax.random.split(key, 2 * config.num_steps)
  z_keys, y_keys = keys[: config.num_steps], keys[config.num_steps :]

  x_gen, pullback = jax.vjp(generator_fn, z0)
  z, z_norm = latent_step(z0, y0, x_gen, pullback, z_keys[0])

  def body(carry, step_keys):
    z, y = carry
    y_key, z_key = step_keys
    x_gen, pullback = jax.vjp(generator_fn, z)
    y, y_norm, clipped = residual_step(y, x_gen, y_key)
    z, z_norm = latent_step(z, y, x_gen, pullback, z_key)
    return (z, y), (z_norm, y_norm, clipped)

  (z, y), (z_norms, y_norms, clips) = jax.lax.scan(
      body, (z, y0), (y_keys[:-1], z_keys[1:]), unroll=config.unroll
  )
  x_gen = generator_fn(z)
  y, y_norm, clipped = residual_step(y, x_gen, y_keys[-1])
  k = config.num_steps
  mean = lambda a: a.astype(jnp.float32).mean()
  diagnostics = {
      'latent_drift_norm': (mean(z_norm) + _step_means(z_norms).sum()) / k,
      'residual_drift_norm': (_step_means(y_norms).sum() + mean(y_norm)) / k,
      'residual_clip_fraction': (_step_means(clips).sum() + mean(clipped)) / k,
      'latent_norm': per_image_norm(z).mean(),
  }
  stop = jax.lax.stop_gradient
  return stop(z), stop(y), stop(x_gen), diagnostics
