"""What a config trains: one mode per `config.mode` (the registry).

The contract every mode keeps, and the roles of its state's fields, are in
`hatebm_jax.modes.base`; the modes:

* `synthesis`: tandem Hat EBM, hat network and generator trained together
  with a replay bank (paper Sec. 3.3-3.4);
* `joint`: a hat network over a frozen pretrained generator, Langevin on z
  and y (refinement and retrofit, Sec. 3.2);
* `sngan`: the SN-GAN whose generator refinement starts from, and DDLS;
* `autoencoder`: the deterministic autoencoder whose decoder retrofit
  starts from.

A new mode is a module here with a `base.Mode` subclass (its state, step,
`capabilities`, `networks`, `options` and `check_config`) and one line in
`MODES`: validation, training, checkpoints, sampling and evaluation read
the registry.
"""

import ml_collections

from hatebm_jax import config_base
from hatebm_jax.modes import autoencoder
from hatebm_jax.modes import base
from hatebm_jax.modes import joint
from hatebm_jax.modes import sngan
from hatebm_jax.modes import synthesis

# Every mode a config can name. A new mode is a module of this package with
# a `base.Mode` subclass, and one line here.
MODES: dict[str, type[base.Mode]] = {
    'synthesis': synthesis.SynthesisMode,
    'joint': joint.JointMode,
    'sngan': sngan.SNGANMode,
    'autoencoder': autoencoder.AutoencoderMode,
}


def lookup(name: str) -> type[base.Mode]:
  """The mode class registered as `name`.

  Raises:
    ValueError: `config.mode=<name> is invalid: choose one of (...)`.
  """
  if name not in MODES:
    raise config_base.invalid('mode', name, f'choose one of {tuple(MODES)}')
  return MODES[name]


def options() -> dict[str, tuple[str, ...]]:
  """Config keys only some modes read -> the modes that read them
  (`base.Mode.options`)."""
  owners = {}
  for name, cls in MODES.items():
    for key in cls.options:
      owners.setdefault(key, []).append(name)
  return {k: tuple(v) for k, v in owners.items()}


def build(config: ml_collections.ConfigDict) -> base.Mode:
  """The mode of `config.mode` (see `MODES`), built from `config`.

  Raises:
    ValueError: for a mode name outside `MODES`.
  """
  return lookup(config.mode).from_config(config)
