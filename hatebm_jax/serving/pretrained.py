"""The user API of exported models: `load_pretrained(path)` -> `Pretrained`.

  python -m hatebm_jax.export --workdir=/tmp/hatebm_fmnist \
      --output=/tmp/fmnist_synth.hatebm

  model = hatebm_jax.load_pretrained('/tmp/fmnist_synth.hatebm')
  images = model.sample(16, seed=0)               # uint8 [16, 32, 32, 1]
  energies = model.energy(images)                 # H(x), float32 [16]

Sampling an exported model gives the same images as sampling its training
checkpoint with the same seed and batch size (tests/test_pretrained.py).
The file format is `infra.file_format`; paths, gs:// and URLs are
`serving.storage`.
"""

from typing import Optional
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from hatebm_jax import modes
from hatebm_jax.infra import xla_flags
from hatebm_jax.modes import base
from hatebm_jax.serving import draw
from hatebm_jax.serving import run as run_lib
from hatebm_jax.serving import settings as settings_lib

# Float images beyond ±FLOAT_IMAGE_BOUND are on another scale (0..255, ...).
FLOAT_IMAGE_BOUND = 2.0


class Pretrained:
  """An exported model ready to sample from and to score images with.

  Attributes:
    run: the `serving.run.Run` (config, mode, networks as state, step).
  """

  def __init__(self, run: run_lib.Run):
    self.run = run
    self._variants = {}  # sampler settings -> Pretrained (compiled once)

  @property
  def config(self):
    return self.run.config

  @property
  def step(self) -> int:
    return self.run.step

  def __repr__(self) -> str:
    sizes = {
        k: sum(np.size(a) for a in jax.tree.leaves(v))
        for k, v in sorted(base.network_fields(self.run.state).items())
    }
    return (
        f'Pretrained({self.config.mode}, {self.config.data_type} '
        f'{tuple(self.config.image_dims)}, step {self.step}, '
        f'{sizes})'
    )

  def with_settings(self, **settings) -> 'Pretrained':
    """The same networks with other sampler settings
    (`serving.settings.SAMPLER_SETTINGS`): `mcmc_steps` (K), `mcmc_temp`
    (T), `epsilon` (ε), `tau_res`, `init_scale_res`,
    `clip_langevin_grad_res`, `ddls_steps`, ...; None keeps this model's
    value.

    The result is kept per setting, so calling again with the same
    settings reuses its compiled sampler; no settings (or this model's
    own) return this model.

    Raises:
      ValueError: a name that is not a sampler setting, a value of the
        wrong type or an invalid value (`validation.validate`); another
        `sample_weights` (the weights are chosen when loading).
    """
    if all(v is None for v in settings.values()):
      return self
    config = settings_lib.override(self.config.to_dict(), **settings)
    if config.sample_weights != self.config.sample_weights:
      raise ValueError(
          f'sample_weights={config.sample_weights!r}: the weights are chosen '
          'when a model is loaded (this one holds '
          f'{self.config.sample_weights!r}); load it again with '
          f'sample_weights={config.sample_weights!r}.'
      )
    key = settings_lib.key(config)
    if key == settings_lib.key(self.config):
      return self
    if key not in self._variants:  # the mode is built (and compiled) once
      self._variants[key] = Pretrained(
          run_lib.Run(
              config=config,
              mode=modes.build(config),
              state=self.run.state,
              step=self.step,
          )
      )
    return self._variants[key]

  def sample(
      self,
      num_samples: int,
      seed: int = 0,
      batch_size: int = 64,
      source: Optional[str] = None,
      **settings,
  ) -> np.ndarray:
    """uint8 samples [N, S, S, C] (see `serving.draw.draw_images`).

    Args:
      num_samples: N ≥ 1.
      seed: seed of latents, y₀ and chain noise.
      batch_size: chains per compiled call. The images depend on it (each
        batch draws its latents together), and N below it still runs one
        whole batch. The same seed and batch size give the same images as
        `python -m hatebm_jax.sample --seed --batch_size` on the training
        checkpoint.
      source: 'ebm' (default for Hat EBMs), 'generator' (G(z) alone), ...
      **settings: sampler settings for this call (see `with_settings`).

    Raises:
      ValueError: see `with_settings` and `serving.draw.draw_images`.
    """
    return draw.draw_images(
        self.with_settings(**settings).run,
        num_samples,
        batch_size,
        seed,
        source,
    )

  def langevin_path(
      self, num_chains: int = 8, seed: int = 0, **settings
  ) -> dict[str, np.ndarray]:
    """Chains followed step by step (the paper's Figure 3).

    Latents z ~ `init_scale_latent`·N(0, I) and y₀ = `init_scale_res`·N(0,
    I) from `seed`; then K Langevin steps (`chain_segment`, one step per
    call, so the noise differs from a one-shot chain with the same seed),
    recording the state after each.

    Args:
      num_chains: N ≥ 1 chains.
      seed: seed of z, y₀ and the noise.
      **settings: sampler settings (see `with_settings`).

    Returns:
      'steps' int [K+1] (0..K); 'x_gen' G(z_k) and 'y' y_k, float32
      [K+1, N, S, S, C] (X = x_gen + y, unclipped); 'energy' H(X_k)
      float32 [K+1, N].

    Raises:
      ValueError: for a model without a Langevin chain on a hat network.
    """
    model = self.with_settings(**settings)
    mode, config, state = model.run.mode, model.config, model.run.state
    if not (mode.capabilities.chain and mode.capabilities.energy):
      raise ValueError(f'a {config.mode!r} model has no hat-network chain.')
    draw.check_integer('num_chains', num_chains, minimum=1)
    k_z, k_y0, k_chain = jax.random.split(jax.random.PRNGKey(seed), 3)
    z = config.init_scale_latent * jax.random.normal(
        k_z, (num_chains,) + tuple(mode.latent_shape)
    )
    steps = list(range(config.mcmc_steps + 1))
    path = draw.chain_path(
        mode, state, z, k_y0, k_chain, steps, config.init_scale_res
    )
    x_gen = np.stack([x for x, _ in path])
    y = np.stack([y for _, y in path])
    energy = draw.jitted(mode.energy)
    return {
        'steps': np.asarray(steps),
        'x_gen': x_gen,
        'y': y,
        'energy': np.stack(
            [np.asarray(energy(state.hat_params, x)) for x in x_gen + y]
        ),
    }

  def energy(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """H(x) of images: lower is more probable under the model.

    Args:
      images: [N, S, S, C] with N ≥ 1: uint8 (0..255), or float in
        [-1, 1]. Floats up to ±2 are taken (unclipped Langevin states X
        leave [-1, 1] a little); beyond that, and other integer types, are
        refused. Floats all within [0, 1] get a warning (map [0, 1] images
        to [-1, 1] first: 2x − 1).
      batch_size: images per compiled call, ≥ 1.

    Returns:
      float32 [N] energies.

    Raises:
      ValueError: for a model without a hat network, images of another
        shape, dtype or range, non-finite values, or batch_size < 1.
    """
    mode = self.run.mode
    if not mode.capabilities.energy:
      raise ValueError(f'a {self.config.mode!r} model has no hat network.')
    draw.check_integer('batch_size', batch_size, minimum=1)
    images = _checked_images(np.asarray(images), tuple(self.config.image_dims))
    return self._batched(
        draw.jitted(mode.energy),
        (self.run.state.hat_params,),
        images,
        batch_size,
    )

  def generate(self, z: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """G(z): the generator's (or decoder's) images for given latents.

    Args:
      z: latents [N, *latent_shape] (`config.state_dims`: [N, 128] for the
        SN-GAN generators, [N, 16, 16, 1] for the retrofit decoder), N ≥ 1,
        float; finite.
      batch_size: latents per compiled call, ≥ 1.

    Returns:
      float32 [N, S, S, C] in (-gen_factor, gen_factor), unclipped: the
      network's output, comparable with the official network's for the
      same latents (tests/test_convert.py).

    Raises:
      ValueError: latents of another shape or dtype, non-finite values, or
        batch_size < 1.
    """
    draw.check_integer('batch_size', batch_size, minimum=1)
    z = _checked_array('latents', z, tuple(self.config.state_dims))
    state = self.run.state
    return self._batched(
        draw.jitted(self.run.mode.generate),
        (state.gen_params, state.gen_frozen),
        z,
        batch_size,
    )

  def encode(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The autoencoder's latents of images (autoencoder models only).

    Args:
      images: [N, S, S, C] as for `energy` (uint8, or float in [-1, 1]).
      batch_size: images per compiled call, ≥ 1.

    Returns:
      float32 [N, *latent_shape] ([N, 16, 16, 1], on the sphere of radius
      16; docs/official_release.md §1.5).

    Raises:
      ValueError: for a model without an encoder, bad images (see
        `energy`), or batch_size < 1.
    """
    mode = self.run.mode
    if 'encoder' not in mode.networks:
      raise ValueError(f'a {self.config.mode!r} model has no encoder.')
    draw.check_integer('batch_size', batch_size, minimum=1)
    images = _checked_images(np.asarray(images), tuple(self.config.image_dims))
    return self._batched(
        draw.jitted(mode.encode),
        (self.run.state.enc_params,),
        images,
        batch_size,
    )

  @staticmethod
  def _batched(function, args, inputs: np.ndarray, batch_size: int):
    """`function(*args, batch)` over `inputs` in batches, concatenated."""
    return np.concatenate(
        [
            np.asarray(function(*args, jnp.asarray(inputs[i : i + batch_size])))
            for i in range(0, len(inputs), batch_size)
        ]
    )


def _checked_array(
    what: str, values: np.ndarray, shape: tuple[int, ...]
) -> np.ndarray:
  """`values` [N, *shape] as float32: floating, finite, N ≥ 1.

  Raises:
    ValueError: naming `what`, the shape or dtype given and the one taken.
  """
  values = np.asarray(values)
  if (
      values.ndim != len(shape) + 1
      or values.shape[1:] != shape
      or not len(values)
  ):
    raise ValueError(
        f'{what} of shape {values.shape}; this model takes '
        f'[N, {", ".join(map(str, shape))}] with N >= 1.'
    )
  if not jnp.issubdtype(values.dtype, jnp.floating):
    raise ValueError(f'{what} of dtype {values.dtype}; give floats.')
  values = values.astype(np.float32)
  if not np.isfinite(values).all():
    raise ValueError(f'{what} hold non-finite values.')
  return values


def _checked_images(images: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
  """`Pretrained.energy`'s input as float32 in [-1, 1] (see there)."""
  if images.ndim != 4 or images.shape[1:] != shape or not len(images):
    raise ValueError(
        f'images of shape {images.shape}; this model takes '
        f'[N, {", ".join(map(str, shape))}] with N >= 1.'
    )
  if images.dtype == np.uint8:
    return images.astype(np.float32) / 127.5 - 1.0
  if not jnp.issubdtype(images.dtype, jnp.floating):  # bfloat16 included
    raise ValueError(
        f'images of dtype {images.dtype}; give uint8 (0..255) '
        'or float in [-1, 1].'
    )
  images = images.astype(np.float32)
  if not np.isfinite(images).all():
    raise ValueError('images hold non-finite values.')
  low, high = float(images.min()), float(images.max())
  if low < -FLOAT_IMAGE_BOUND or high > FLOAT_IMAGE_BOUND:
    raise ValueError(
        f'float images in [{low:.4g}, {high:.4g}]; this model '
        'takes [-1, 1] (or uint8 0..255).'
    )
  if low >= 0.0 and high > 0.0:  # not all-zero: mid-grey is valid
    warnings.warn(
        f'every pixel is in [0, 1] ([{low:.3g}, {high:.3g}]): the '
        'model takes [-1, 1]; map [0, 1] images with 2x - 1.',
        stacklevel=3,
    )
  return images


def load_pretrained(path: str, **settings) -> Pretrained:
  """Loads an exported model by name, local path, gs:// or https://.

  Args:
    path: a registered name (`hatebm_jax.serving.registry.names()`:
      'fashion_mnist_synth', the quick start, and 'fashion_mnist_synth_long',
      the one-hour model, both shipped in the package; a released one is
      fetched once into $HATEBM_CACHE_DIR/models; every file is checked
      against its SHA-256), or a `.hatebm` file written by
      `python -m hatebm_jax.export`.
    **settings: sampler settings (see `Pretrained.with_settings`).

  Raises:
    FileNotFoundError: nothing at `path`, or a URL that cannot be read.
    IOError: a registered model whose download or file fails its SHA-256
      check (nothing partial is kept).
    ValueError: an empty path, a folder, not an exported model, a newer
      format, a damaged file (missing entries, networks that do not fit the
      stored config, non-finite values), or invalid overrides.
  """
  if not xla_flags.in_effect() and jax.default_backend() == 'cpu':
    warnings.warn(
        'JAX started its CPU backend before hatebm_jax was imported, so '
        f'the XLA flag {xla_flags.CPU_FLAG} of the command-line tools is '
        'not in effect: samples may differ by round-off (a few pixels by '
        '1-2 uint8 levels) from python -m hatebm_jax.sample. Import '
        'hatebm_jax before running JAX, or start Python with XLA_FLAGS='
        f'{xla_flags.CPU_FLAG}, to get the same images.',
        stacklevel=2,
    )
  return Pretrained(run_lib.load_exported(str(path), **settings))
