"""Drawing uint8 samples and Langevin paths from a restored run.

Used by the sample and evaluate commands, `Pretrained` and training-time
FCD. Works for every mode (`hatebm_jax.modes`).
"""

from typing import Any, Callable, Optional
import weakref

import jax
import numpy as np

from hatebm_jax.infra import progress as progress_lib
from hatebm_jax.modes import base
from hatebm_jax.serving import run as run_lib


def to_uint8(x: np.ndarray) -> np.ndarray:
  """[-1, 1] images (any range) -> uint8 round(255(x+1)/2) after clipping
  (docs/official_release.md §6.1)."""
  return np.round(255.0 * (np.clip(x, -1.0, 1.0) + 1.0) / 2.0).astype(np.uint8)


def check_integer(name: str, value: Any, minimum: Optional[int] = None):
  """Raises ValueError naming `name` unless `value` is a Python or NumPy
  integer (not a bool) of at least `minimum`."""
  if (
      isinstance(value, bool)
      or not isinstance(value, (int, np.integer))
      or (minimum is not None and value < minimum)
  ):
    at_least = f' >= {minimum}' if minimum is not None else ''
    raise ValueError(f'{name}={value!r} must be an integer{at_least}.')


_JITTED = weakref.WeakKeyDictionary()  # mode -> {method: jitted method}


def jitted(method: Callable, static_argnums: tuple[int, ...] = ()) -> Callable:
  """`jax.jit` of a mode's bound method (e.g. `mode.draw`), made once per
  mode and method and reused across calls (so its compilations are too).

  The cache holds the mode through a weak reference only.
  """
  mode, function = method.__self__, method.__func__
  methods = _JITTED.setdefault(mode, {})
  if function not in methods:
    ref = weakref.ref(mode)
    methods[function] = jax.jit(
        lambda *args: function(ref(), *args), static_argnums=static_argnums
    )
  return methods[function]


def chain_path(
    mode: base.Mode,
    state: Any,
    z: jax.Array,
    y0_key: jax.Array,
    chain_key: jax.Array,
    steps: list[int],
    init_scale_res: float,
) -> list[tuple[np.ndarray, np.ndarray]]:
  """One batch of Langevin chains recorded at given steps (Figure 3).

  y₀ = `init_scale_res`·N(0, I) from `y0_key`; then the chain runs from
  steps[i−1] to steps[i] as one `mode.chain_segment` with noise key
  fold_in(chain_key, i), each segment continuing from the (z, y) the last
  one reached. The noise therefore depends on the recording steps: a path
  is not the one-shot chain of `draw_images` with the same keys.

  Args:
    mode: a mode with `capabilities.chain` (synthesis or joint).
    state: its networks (a training state or `networks_only`).
    z: latents [N, *latent_shape], float32.
    y0_key, chain_key: PRNG keys of y₀ and of the chain noise.
    steps: non-decreasing Langevin step counts to record, from 0.
    init_scale_res: standard deviation of y₀ (config `init_scale_res`).

  Returns:
    For each entry of `steps`, (G(z), y) as float32 arrays [N, S, S, C];
    X = G(z) + y (unclipped). For joint modes z moves, so G(z) does.
  """
  x_gen = mode.generate(state.gen_params, state.gen_frozen, z)
  y = init_scale_res * jax.random.normal(y0_key, x_gen.shape)
  segment = jitted(mode.chain_segment, static_argnums=(4,))
  path = []
  for i, (begin, end) in enumerate(zip([0] + list(steps[:-1]), steps)):
    if end > begin:
      z, y, x_gen = segment(
          state, z, y, jax.random.fold_in(chain_key, i), end - begin
      )
    path.append((np.asarray(x_gen), np.asarray(y)))
  return path


def checked_source(run: run_lib.Run, source: Optional[str]) -> str:
  """`source`, or the run's own samples (the first of its mode's
  `capabilities.sources`) for None.

  Raises:
    ValueError: for a source the run's mode cannot draw.
  """
  sources = run.mode.capabilities.sources
  source = source or sources[0]
  if source not in sources:
    raise ValueError(
        f'source={source!r}; a {run.config.mode!r} run has {sources}.'
    )
  return source


def draw_images(
    run: run_lib.Run,
    num_samples: int,
    batch_size: int,
    seed: int = 0,
    source: Optional[str] = None,
    state=None,
    return_first: bool = False,
    progress: str = '',
):
  """Draws uint8 samples [N, S, S, C] from a run.

  Batch i uses latents and chain noise from `fold_in(PRNGKey(seed), i)`, so
  the images do not depend on which other batches are drawn.

  Args:
    run: see `run.load_run`; its mode carries the sampler settings.
    num_samples: N ≥ 1.
    batch_size: chains per jitted call, ≥ 1.
    seed: seed of latents, y₀ and chain noise.
    source: one of the mode's `capabilities.sources`: 'ebm' for X = G(z) +
      y after the Langevin chain (eq. 6, or eqs. 6-7 for joint runs),
      'generator' for G(z) alone, 'initial' for G(z) of the run's untrained
      generator (its initialisation from `config.seed`), 'ddls' for DDLS
      samples of an SN-GAN run; None for the mode's own samples (the
      first).
    state: parameters to use instead of `run.state` (e.g. during training).
    return_first: also return (z, G(z), y) of the first batch.
    progress: when not empty, a line starting with it is logged at each
      tenth of the samples, with an ETA (`infra.progress`).

  Returns:
    uint8 images [N, S, S, C] = round(255(x+1)/2) of x clipped to [-1, 1]
    (docs/official_release.md §6.1); with `return_first`, (images, (z,
    x_gen, y)).

  Raises:
    ValueError: for N, batch size or seed that are not integers, N or
      batch < 1, or an unknown source.
  """
  check_integer('num_samples', num_samples, minimum=1)
  check_integer('batch_size', batch_size, minimum=1)
  check_integer('seed', seed)
  mode, config = run.mode, run.config
  source = checked_source(run, source)
  if state is None:
    state = run.state
  if source == 'initial':
    state = jax.jit(mode.init)(jax.random.PRNGKey(config.seed))
  draw = jitted(mode.draw, static_argnums=(3,))
  key = jax.random.PRNGKey(seed)
  images, first = [], None
  report = progress_lib.Progress(progress, num_samples) if progress else None
  for i, start in enumerate(range(0, num_samples, batch_size)):
    k_z, k_chain = jax.random.split(jax.random.fold_in(key, i))
    z = config.init_scale_latent * jax.random.normal(
        k_z, (batch_size,) + tuple(mode.latent_shape)
    )
    x_gen, y = draw(state, z, k_chain, source)
    x_gen, y = np.asarray(x_gen), np.asarray(y)
    if first is None:
      first = (z, x_gen, y)
    images.append(to_uint8(x_gen + y)[: num_samples - start])
    if report:
      report.update(min(start + batch_size, num_samples))
  images = np.concatenate(images)
  return (images, first) if return_first else images
