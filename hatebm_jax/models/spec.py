"""What the network registry (`hatebm_jax.models.NETWORKS`) holds per type."""

import dataclasses
from typing import Callable, Optional

from flax import nnx
import ml_collections

ROLES = ('hat', 'generator', 'encoder')
# The config key that names the network of each role.
ROLE_KEYS = {'hat': 'ebm_type', 'generator': 'gen_type', 'encoder': 'inf_type'}


@dataclasses.dataclass(frozen=True)
class Network:
  """A network type a config can name.

  Attributes:
    role: 'hat' (named by `ebm_type`; images [B, S, S, C] -> energies [B]),
      'generator' (`gen_type`; latents [B, *z] -> images in
      (-gen_factor, gen_factor)) or 'encoder' (`inf_type`; images -> latents).
    build: (validated config, nnx.Rngs) -> the NNX module.
    describe: config -> a readable name for logs.
    image_sizes: the image sides S it takes.
    latent_shape: the latent z shape a generator takes (an encoder makes);
      None for a generator of any latent vector [nz]; unused for hat
      networks.
    check: more rules on the config (e.g. widths), raising
      `config_base.invalid` errors; None for none.
  """

  role: str
  build: Callable[[ml_collections.ConfigDict, nnx.Rngs], nnx.Module]
  describe: Callable[[ml_collections.ConfigDict], str]
  image_sizes: tuple[int, ...]
  latent_shape: Optional[tuple[int, ...]] = None
  check: Optional[Callable[[ml_collections.ConfigDict], None]] = None

  def __post_init__(self):
    if self.role not in ROLES:
      raise ValueError(f'role={self.role!r}: choose one of {ROLES}.')


def width_check(
    key: str, architecture: Callable[[int, int], object]
) -> Callable[[ml_collections.ConfigDict], None]:
  """A `Network.check` that the width `config[key]` builds at the config's
  image size: `architecture(size, width)` raises ValueError otherwise,
  re-raised as the config error of `key`."""

  def check(config: ml_collections.ConfigDict) -> None:
    try:
      architecture(config.image_dims[0], config[key])
    except ValueError as e:
      raise ValueError(f'config.{key}={config[key]!r} is invalid: {e}') from e

  return check
