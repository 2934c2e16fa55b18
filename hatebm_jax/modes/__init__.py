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
"""

import ml_collections

from hatebm_jax.modes import autoencoder
from hatebm_jax.modes import base
from hatebm_jax.modes import joint
from hatebm_jax.modes import sngan
from hatebm_jax.modes import synthesis

MODES = {
    'synthesis': synthesis.SynthesisMode,
    'joint': joint.JointMode,
    'sngan': sngan.SNGANMode,
    'autoencoder': autoencoder.AutoencoderMode,
}


def build(config: ml_collections.ConfigDict) -> base.Mode:
  """The mode of `config.mode` (see `MODES`), built from `config`.

  Raises:
    ValueError: for a mode name outside `MODES`.
  """
  if config.mode not in MODES:
    raise ValueError(
        f'config.mode={config.mode!r} is invalid: choose one of '
        f'{tuple(MODES)}.'
    )
  return MODES[config.mode].from_config(config)
