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
    official_key: (config, path) -> the name of the official release's
      TensorFlow variable that holds the array at `path` of this network's
      parameters or frozen statistics (a tuple of dict keys, e.g.
      ('block1', 'conv1', 'kernel') -> 'conv_1/conv_1/kernel'), for
      `hatebm_jax.convert`; None for a network the release does not have.
  """

  role: str
  build: Callable[[ml_collections.ConfigDict, nnx.Rngs], nnx.Module]
  describe: Callable[[ml_collections.ConfigDict], str]
  image_sizes: tuple[int, ...]
  latent_shape: Optional[tuple[int, ...]] = None
  check: Optional[Callable[[ml_collections.ConfigDict], None]] = None
  official_key: Optional[
      Callable[[ml_collections.ConfigDict, tuple[str, ...]], str]
  ] = None

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


# The official Keras sub-layer of each sub-module name of our blocks, and
# the Keras name of each batch-norm variable (docs/official_release.md §11).
KERAS_LAYERS = {
    'conv1': 'conv_1',
    'conv2': 'conv_2',
    'shortcut': 'sc',
    'bn1': 'bn_1',
    'bn2': 'bn_2',
    'bn': 'bn_2',  # the retrofit decoder's stem has one batch norm, bn_2
}
KERAS_BATCH_NORM = {
    'scale': 'gamma',
    'bias': 'beta',
    'mean': 'moving_mean',
    'var': 'moving_variance',
}


def keras_variable(layer: str, name: str) -> str:
  """The Keras variable name of our `name` ('kernel', 'bias', 'scale',
  'mean', 'var') in a layer named `layer` (batch norms start with 'bn')."""
  return KERAS_BATCH_NORM[name] if layer.startswith('bn') else name


def keras_block(official_block: str, path: tuple[str, ...]) -> str:
  """'<official_block>/<keras layer>/<variable>' of a block-level `path`
  (sub-module, variable), e.g. ('block2', ('conv1', 'kernel')) ->
  'block2/conv_1/kernel'."""
  layer, name = path
  return f'{official_block}/{KERAS_LAYERS[layer]}/{keras_variable(layer, name)}'
