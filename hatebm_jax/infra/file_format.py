"""The exported-model file: networks and config in one msgpack map.

A training checkpoint holds the whole state (networks, Adam moments, replay
bank, step, RNG key) in an Orbax folder. An exported model holds what
sampling and evaluation need and nothing more, as one msgpack map
(`flax.serialization`), by convention `<name>.hatebm`:

  'format'   'hatebm_jax.pretrained'
  'version'  2
  'step'     the checkpoint's step
  'config'   the run's config, as JSON
  'networks' a flat map from key paths (`jax.tree_util.keystr`, e.g.
             "['hat_params']['head']['kernel']") to arrays: the network
             fields of the state (`modes.base.network_fields`)

Version 1 stored the networks as nested dicts, which cannot hold the
spectral-norm statistics' tuple keys; both versions are read.
"""

import json
from typing import Any

import flax.serialization
import jax
import numpy as np

FORMAT = 'hatebm_jax.pretrained'
VERSION = 2


def flat_arrays(fields: dict[str, Any]) -> dict[str, Any]:
  """{key path: leaf} of network fields, e.g. "['hat_params']['head']
  ['kernel']" (`jax.tree_util.keystr`): the file's 'networks' layout."""
  return {
      jax.tree_util.keystr(path): leaf
      for path, leaf in jax.tree_util.tree_flatten_with_path(fields)[0]
  }


def non_finite(flat: dict[str, Any]) -> list[str]:
  """The key paths of `flat` whose floats are not all finite."""
  return [
      name
      for name, a in flat.items()
      if np.issubdtype(np.asarray(a).dtype, np.inexact)
      and not np.isfinite(np.asarray(a)).all()
  ]


def encode(config: dict, step: int, flat: dict[str, np.ndarray]) -> bytes:
  """The file's bytes for a config dict, a step and `flat_arrays`."""
  return flax.serialization.msgpack_serialize(
      {
          'format': FORMAT,
          'version': VERSION,
          'step': step,
          'config': json.dumps(config),
          'networks': flat,
      }
  )


def decode(path: str, data: bytes) -> tuple[dict, int, dict]:
  """(config dict, step, {key path: array}) of a file's bytes.

  Args:
    path: where the bytes came from (for messages).
    data: the file's bytes.

  Raises:
    ValueError: not an exported model, a newer format version, or a
      damaged file (missing or mistyped entries).
  """
  try:
    payload = flax.serialization.msgpack_restore(data)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(
        f'{path} is not an exported hatebm_jax model ' f'(unreadable: {e}).'
    ) from e
  if not isinstance(payload, dict) or payload.get('format') != FORMAT:
    raise ValueError(
        f'{path} is not an exported hatebm_jax model (no '
        f'{FORMAT!r} header).'
    )
  version = payload.get('version')
  if isinstance(version, bool):
    version = None
  if isinstance(version, int) and version > VERSION:
    raise ValueError(
        f'{path} has format version {version}; this '
        f'hatebm_jax reads up to {VERSION}: update it.'
    )
  try:
    if version not in range(1, VERSION + 1):
      raise ValueError(f'version {version!r}')
    config = json.loads(payload['config'])
    step = payload['step']
    networks = payload['networks']
    if not isinstance(config, dict) or not isinstance(networks, dict):
      raise TypeError('config and networks must be maps')
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
      raise TypeError(f'step {step!r}')
    flat = flat_arrays(networks) if version == 1 else networks
    if not all(isinstance(a, np.ndarray) for a in flat.values()):
      raise TypeError('networks must hold arrays')
  except (KeyError, TypeError, ValueError) as e:
    raise ValueError(f'{path} is a damaged exported model ({e}).') from e
  return config, step, flat


def fitted_networks(
    path: str, stored: dict[str, np.ndarray], expected: dict[str, Any]
) -> dict[str, Any]:
  """The stored arrays in the pytree of `expected` (network fields of
  ShapeDtypeStructs), checked leaf by leaf.

  Raises:
    ValueError: for missing, unexpected or misshapen entries (the first
      five named), or non-finite values.
  """
  paths, treedef = jax.tree_util.tree_flatten_with_path(expected)
  wanted = {jax.tree_util.keystr(p): a for p, a in paths}
  problems = [f'{name} missing' for name in wanted if name not in stored]
  problems += [f'{name} unexpected' for name in stored if name not in wanted]
  problems += [
      f'{name} {stored[name].dtype}{list(stored[name].shape)}, expected '
      f'{a.dtype}{list(a.shape)}'
      for name, a in wanted.items()
      if name in stored
      and (stored[name].shape, stored[name].dtype) != (a.shape, a.dtype)
  ]
  if problems:
    raise ValueError(
        f'{path}: the stored networks do not fit the stored '
        f'config (damaged or hand-edited file): '
        f'{"; ".join(problems[:5])}.'
    )
  bad = non_finite(stored)
  if bad:
    raise ValueError(f'{path}: {", ".join(bad[:5])} hold non-finite values.')
  return jax.tree_util.tree_unflatten(
      treedef, [stored[name] for name in wanted]
  )
