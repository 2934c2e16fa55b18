"""Sampler settings: the config values a trained model may be sampled with
other than its own (the Langevin chains' settings and the arithmetic).

Everything else (the networks, the data, the mode) is fixed by the trained
parameters, so only these may be overridden when sampling a checkpoint or
an exported model.
"""

from typing import Any

import ml_collections
import numpy as np

from hatebm_jax import config_base
from hatebm_jax import modes
from hatebm_jax import validation
from hatebm_jax.modes import base

SAMPLER_SETTINGS = (
    'mcmc_steps',
    'mcmc_temp',
    'epsilon',
    'tau_res',
    'init_scale_res',
    'init_scale_latent',
    'use_noise',
    'clip_langevin_grad_res',
    'max_langevin_norm_res',
    'langevin_unroll',
    'epsilon_latent',
    'ddls_steps',
    'ddls_epsilon',
    'compute_dtype',
    'sample_weights',
)


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
      type or an invalid value (`validation.validate`), before any
      compute.
  """
  unknown = sorted(set(overrides) - set(SAMPLER_SETTINGS))
  if unknown:
    raise ValueError(
        f'{", ".join(unknown)}: not a sampler setting. A '
        'trained model can be sampled with other '
        f'{", ".join(SAMPLER_SETTINGS)}.'
    )
  config = config_base.from_saved(config)
  for key, value in overrides.items():
    if value is None:
      continue
    if isinstance(value, np.generic):
      value = value.item()
    try:
      config[key] = value
    except TypeError as e:
      raise ValueError(
          f'{key}={value!r}: expected {type(config[key]).__name__}'
          f', not {type(value).__name__}.'
      ) from e
  validation.validate(config)
  return config


def configure(config: Any, **overrides) -> tuple[Any, base.Mode]:
  """`override(config, **overrides)` and its mode (`modes.build`, about
  0.15 s for the quick-start networks).

  Raises:
    ValueError: see `override`.
  """
  config = override(config, **overrides)
  return config, modes.build(config)


def key(config: ml_collections.ConfigDict) -> tuple:
  """The sampler settings of `config`, as a hashable tuple."""
  return tuple(config[k] for k in SAMPLER_SETTINGS)
