"""Restoring a training run and drawing uint8 samples from it (library).

Used by the sampling and evaluation entry points and by training-time FCD.
Works for every mode (see `hatebm_jax.modes`).
"""

import dataclasses
from typing import Any, Optional
import weakref

import jax
import ml_collections
import numpy as np

from hatebm_jax import checkpoint
from hatebm_jax import config_base
from hatebm_jax import modes


def to_uint8(x: np.ndarray) -> np.ndarray:
  """[-1, 1] images (any range) -> uint8 round(255(x+1)/2) after clipping."""
  return np.round(255.0 * (np.clip(x, -1.0, 1.0) + 1.0) / 2.0).astype(np.uint8)


@dataclasses.dataclass(frozen=True)
class Run:
  """A restored training run: its config (with overrides), model and state."""
  config: ml_collections.ConfigDict
  model: Any
  state: Any
  step: int


# Config values a trained model may be sampled with other than its own:
# the Langevin chains' settings and the arithmetic. Everything else (the
# networks, the data, the mode) is fixed by the trained parameters.
SAMPLER_SETTINGS = (
    'mcmc_steps', 'mcmc_temp', 'epsilon', 'tau_res', 'init_scale_res',
    'init_scale_latent', 'use_noise', 'clip_langevin_grad_res',
    'max_langevin_norm_res', 'langevin_unroll', 'epsilon_latent',
    'ddls_steps', 'ddls_epsilon', 'compute_dtype')


def override(config: Any, **overrides) -> ml_collections.ConfigDict:
  """A stored run config with sampler overrides, validated.

  Args:
    config: a run's config (ConfigDict or dict; keys missing from older
      runs get their defaults); not modified.
    **overrides: values of `SAMPLER_SETTINGS` by name (Python or NumPy
      scalars); None keeps the run's own.

  Returns:
    A new ConfigDict.

  Raises:
    ValueError: for a name outside `SAMPLER_SETTINGS`, a value of the wrong
      type or an invalid value (`config_base.validate`), before any
      compute.
  """
  unknown = sorted(set(overrides) - set(SAMPLER_SETTINGS))
  if unknown:
    raise ValueError(f'{", ".join(unknown)}: not a sampler setting. A '
                     'trained model can be sampled with other '
                     f'{", ".join(SAMPLER_SETTINGS)}.')
  config = modes.with_defaults(config)
  for key, value in overrides.items():
    if value is None:
      continue
    if isinstance(value, np.generic):
      value = value.item()
    try:
      config[key] = value
    except TypeError as e:
      raise ValueError(f'{key}={value!r}: expected {type(config[key]).__name__}'
                       f', not {type(value).__name__}.') from e
  config_base.validate(config)
  return config


def configure(config: Any, **overrides) -> tuple[Any, Any]:
  """`override(config, **overrides)` and its model (`modes.build_model`,
  about 0.15 s for the quick-start networks).

  Raises:
    ValueError: see `override`.
  """
  config = override(config, **overrides)
  return config, modes.build_model(config)


def load_run(workdir: str, step: Optional[int] = None, **overrides) -> Run:
  """Restores a checkpoint of any mode and applies sampler overrides.

  Args:
    workdir: the training run's folder (local or gs://), or an exported
      model (`hatebm_jax.pretrained`: a `.hatebm` file, local, gs:// or
      https://), whose state is then the networks only.
    step: checkpoint step, or None for the latest (None for an exported
      model, which holds one step).
    **overrides: config values by name (e.g. `mcmc_steps`, `mcmc_temp`,
      `epsilon`, `tau_res`, `init_scale_res`, `clip_langevin_grad_res`,
      `ddls_steps`); None values keep the run's own.

  Raises:
    FileNotFoundError: when the workdir holds no checkpoint, or none of
      `step` (the message lists the steps it holds).
    ValueError: for invalid overrides (`config_base.validate`), before any
      compute.
  """
  from hatebm_jax import pretrained  # pylint: disable=g-import-not-at-top
  if pretrained.is_exported(workdir):
    if step is not None:
      raise ValueError(f'step={step}: an exported model ({workdir}) holds '
                       'one step; export another step with '
                       'python -m hatebm_jax.export --step=N.')
    return pretrained.load(workdir, **overrides)
  ckpt = checkpoint.Checkpointer(workdir, read_only=True)
  try:
    steps = ckpt.all_steps()
    if not steps:
      raise FileNotFoundError(f'No checkpoint in {ckpt.directory}: train '
                              'first with python -m hatebm_jax.main.')
    step = steps[-1] if step is None else step
    if step not in steps:
      raise FileNotFoundError(f'No checkpoint of step {step} in '
                              f'{ckpt.directory}; it holds steps {steps}.')
    config, model = configure(ckpt.restore_config(step), **overrides)
    state = ckpt.restore(jax.eval_shape(
        model.init, jax.random.PRNGKey(config.seed),
        *modes.init_args(model, config, abstract=True)), step)
  finally:
    ckpt.close()
  return Run(config=config, model=model, state=state, step=int(step))


_JITTED = weakref.WeakKeyDictionary()  # model -> {method: jitted method}


def chain_settings(model: Any) -> Optional[Any]:
  """The model's chain settings: `LangevinConfig` (synthesis, joint),
  `DDLSConfig` (SN-GAN), or None (autoencoder)."""
  return getattr(model, 'sampler', None) or getattr(model, 'ddls', None)


def jitted(model: Any, method: str, static_argnums: tuple[int, ...] = ()):
  """`jax.jit(getattr(model, method))`, made once per model and method and
  reused across calls (so its compilations are too)."""
  methods = _JITTED.setdefault(model, {})
  if method not in methods:
    # Through a weak reference: the cache must not keep its key alive.
    ref = weakref.ref(model)
    methods[method] = jax.jit(lambda *args: getattr(ref(), method)(*args),
                              static_argnums=static_argnums)
  return methods[method]


def chain_path(model: Any, state: Any, z: jax.Array, y0_key: jax.Array,
               chain_key: jax.Array, steps: list[int],
               init_scale_res: float) -> list[tuple[np.ndarray, np.ndarray]]:
  """One batch of Langevin chains recorded at given steps (Figure 3).

  y₀ = `init_scale_res`·N(0, I) from `y0_key`; then the chain runs from
  steps[i−1] to steps[i] as one `model.chain_segment` with noise key
  fold_in(chain_key, i), each segment continuing from the (z, y) the last
  one reached. The noise therefore depends on the recording steps: a path
  is not the one-shot chain of `draw_images` with the same keys.

  Args:
    model: a Hat EBM model with `generate` and `chain_segment` (synthesis
      or joint).
    state: its networks (training state or `pretrained.Networks`).
    z: latents [N, *latent_shape], float32.
    y0_key, chain_key: PRNG keys of y₀ and of the chain noise.
    steps: non-decreasing Langevin step counts to record, from 0.
    init_scale_res: standard deviation of y₀ (config `init_scale_res`).

  Returns:
    For each entry of `steps`, (G(z), y) as float32 arrays [N, S, S, C];
    X = G(z) + y (unclipped). For joint models z moves, so G(z) does.
  """
  x_gen = model.generate(state.gen_params, state.gen_frozen, z)
  y = init_scale_res * jax.random.normal(y0_key, x_gen.shape)
  segment = jitted(model, 'chain_segment', static_argnums=(4,))
  path = []
  for i, (begin, end) in enumerate(zip([0] + list(steps[:-1]), steps)):
    if end > begin:
      z, y, x_gen = segment(state, z, y, jax.random.fold_in(chain_key, i),
                            end - begin)
    path.append((np.asarray(x_gen), np.asarray(y)))
  return path


def check_integer(name: str, value: Any, minimum: Optional[int] = None):
  """Raises ValueError naming `name` unless `value` is a Python or NumPy
  integer (not a bool) of at least `minimum`."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (
      minimum is not None and value < minimum):
    at_least = f' >= {minimum}' if minimum is not None else ''
    raise ValueError(f'{name}={value!r} must be an integer{at_least}.')


def draw_images(run: Run, num_samples: int, batch_size: int, seed: int = 0,
                source: Optional[str] = None, state=None,
                return_first: bool = False):
  """Draws uint8 samples [N, S, S, C] from a run.

  Batch i uses latents and chain noise from `fold_in(PRNGKey(seed), i)`, so
  the images do not depend on which other batches are drawn.

  Args:
    run: see `load_run`; its model carries the sampler settings.
    num_samples: N ≥ 1.
    batch_size: chains per jitted call, ≥ 1.
    seed: seed of latents, y₀ and chain noise.
    source: one of `run.model.SOURCES`: 'ebm' for X = G(z) + y after the
      Langevin chain (eq. 6, or eqs. 6-7 for joint runs), 'generator' for
      G(z) alone, 'initial' for G(z) of the run's untrained generator (its
      initialisation from `config.seed`), 'ddls' for DDLS samples of an
      SN-GAN run; None for the model's own samples (`SOURCES[0]`).
    state: parameters to use instead of `run.state` (e.g. during training).
    return_first: also return (z, G(z), y) of the first batch.

  Returns:
    uint8 images [N, S, S, C] = round(255(x+1)/2) of x clipped to [-1, 1]
    (facts §6.1); with `return_first`, (images, (z, x_gen, y)).

  Raises:
    ValueError: for N, batch size or seed that are not integers, N or
      batch < 1, or an unknown source.
  """
  check_integer('num_samples', num_samples, minimum=1)
  check_integer('batch_size', batch_size, minimum=1)
  check_integer('seed', seed)
  model, config = run.model, run.config
  source = source or model.SOURCES[0]
  if source not in model.SOURCES:
    raise ValueError(f'source={source!r}; a {config.mode!r} run has '
                     f'{model.SOURCES}.')
  if state is None:
    state = run.state
  if source == 'initial':
    state = jax.jit(model.init)(jax.random.PRNGKey(config.seed))
  draw = jitted(model, 'draw', static_argnums=(3,))
  run_batch = lambda z, k: draw(state, z, k, source)
  key = jax.random.PRNGKey(seed)
  images, first = [], None
  for i, start in enumerate(range(0, num_samples, batch_size)):
    k_z, k_chain = jax.random.split(jax.random.fold_in(key, i))
    z = config.init_scale_latent * jax.random.normal(
        k_z, (batch_size,) + model.latent_shape)
    x_gen, y = run_batch(z, k_chain)
    x_gen, y = np.asarray(x_gen), np.asarray(y)
    if first is None:
      first = (z, x_gen, y)
    images.append(to_uint8(x_gen + y)[:num_samples - start])
  images = np.concatenate(images)
  return (images, first) if return_first else images
