"""The whole check of an experiment config, before any compute.

`validate` runs every config rule once, each written next to its owner:
the one-value rules in `config_base.RULES`, the data's in
`data.check_config`, the networks' in `models.check_config` (from the
network registry), each mode's in its `check_config` (from the mode
registry), and the learning-rate schedules' in `optim.lr_schedule`. An
error names the key, its value and what is allowed:
`config.<key>=<value> is invalid: <allowed>.`
"""

import difflib

import ml_collections

from hatebm_jax import config_base
from hatebm_jax import data
from hatebm_jax import models
from hatebm_jax import modes
from hatebm_jax import optim


def validate(config: ml_collections.ConfigDict) -> None:
  """Rejects impossible settings before any compute: unknown keys, then
  every one-value rule (`config_base.RULES`), then the rules across keys,
  each where its owner writes it: the data (`data.check_config`), the
  mode's networks (`models.check_config`), the mode (`Mode.check_config`),
  the keys only other modes read (`Mode.options`), the learning-rate
  schedules. (The evaluation keys' rules need the evaluators, which sit
  above this module: training applies `evaluators.check_config` next.)

  Raises:
    ValueError: naming the key, its value and what is allowed.
  """
  _check_known_keys(config)
  for key in config_base.RULES:
    config_base.check(key, config[key])
  data.check_config(config)
  mode = modes.lookup(config.mode)
  models.check_config(config, mode.networks)
  mode.check_config(config)
  defaults = config_base.get_base_config()
  for key, owners in modes.options().items():
    if config.mode not in owners and config[key] != defaults[key]:
      raise config_base.invalid(
          key,
          config[key],
          f'only {" and ".join(repr(o) for o in owners)} runs read it; set '
          f'it to {defaults[key]!r}',
      )
  for key in config_base.LR_SCHEDULES:
    try:
      optim.lr_schedule(config[key])
    except (TypeError, ValueError) as e:
      raise ValueError(f'config.{key}={config[key]!r} is invalid: {e}') from e


def _check_known_keys(config: ml_collections.ConfigDict) -> None:
  """Config files and the command line give locked configs (a typo in a
  --config.<key> flag fails there); this catches configs built in Python."""
  known = config_base.get_base_config()
  for key in config:
    if key not in known:
      close = difflib.get_close_matches(key, list(known), n=1)
      raise ValueError(
          f'config.{key} is not a known key'
          + (f' (did you mean {close[0]}?)' if close else '')
          + '; the keys are those of hatebm_jax/config_base.py.'
      )
