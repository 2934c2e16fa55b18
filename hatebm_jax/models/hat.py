"""Hat networks H(x; θ): the energy of an image (official `ebm_sngan`).

The hat network is the SN-GAN discriminator of the official release with
spectral norm removed, global *average* pooling and a bias-free final linear
layer (docs/official_release.md §0.2, §1.2, §1.3). Lower
energy means more probable.
"""

from typing import Optional

import jax
import jax.numpy as jnp
from flax import nnx
import ml_collections

from hatebm_jax.models import layers
from hatebm_jax.models import spec


class StemBlock(nnx.Module):
  """The first ("optimised") discriminator block (docs/official_release.md §1.2).

  Main path: conv3x3 -> ReLU -> conv3x3 [-> avg-pool], with no activation on
  the block input. Shortcut: [avg-pool ->] conv1x1, present when the block
  changes width or downsamples, identity otherwise. `conv` builds each
  convolution (spectral-normalised ones in the SN-GAN discriminator).
  """

  def __init__(
      self,
      in_channels: int,
      out_channels: int,
      downsample: bool,
      rngs: nnx.Rngs,
      conv=layers.conv,
      first_conv=None,
  ):
    """`first_conv(cin, cout, rngs)`, when given, builds conv1 (the hat
    network's `layers.stem_conv`)."""
    self.downsample = downsample
    if first_conv is None:
      self.conv1 = conv(in_channels, out_channels, 3, rngs)
    else:
      self.conv1 = first_conv(in_channels, out_channels, rngs)
    self.conv2 = conv(out_channels, out_channels, 3, rngs)
    if in_channels != out_channels or downsample:
      self.shortcut = conv(in_channels, out_channels, 1, rngs)
    else:
      self.shortcut = None

  def __call__(self, x: jax.Array) -> jax.Array:
    h = self.conv2(jax.nn.relu(self.conv1(x)))
    s = x
    if self.downsample:
      h = layers.avg_pool_2x2(h)
      s = layers.avg_pool_2x2(s)
    if self.shortcut is not None:
      s = self.shortcut(s)
    return h + s


class DiscBlock(nnx.Module):
  """Pre-activation residual discriminator block (docs/official_release.md §1.2).

  Main path: ReLU -> conv3x3 -> ReLU -> conv3x3 [-> avg-pool]. Shortcut:
  conv1x1 [-> avg-pool] when the block changes width or downsamples.
  `conv` builds each convolution.
  """

  def __init__(
      self,
      in_channels: int,
      out_channels: int,
      downsample: bool,
      rngs: nnx.Rngs,
      conv=layers.conv,
  ):
    self.downsample = downsample
    self.conv1 = conv(in_channels, out_channels, 3, rngs)
    self.conv2 = conv(out_channels, out_channels, 3, rngs)
    if in_channels != out_channels or downsample:
      self.shortcut = conv(in_channels, out_channels, 1, rngs)
    else:
      self.shortcut = None

  def __call__(self, x: jax.Array) -> jax.Array:
    h = self.conv2(jax.nn.relu(self.conv1(jax.nn.relu(x))))
    s = self.shortcut(x) if self.shortcut is not None else x
    if self.downsample:
      h = layers.avg_pool_2x2(h)
      s = layers.avg_pool_2x2(s)
    return h + s


def hat_architecture(
    image_size: int, ngf: int
) -> tuple[tuple[int, ...], tuple[bool, ...]]:
  """Block widths and downsampling flags of the hat network.

  The official code fixes the width of the 32 and 64 networks (256 and 1024) and
  reads `ebm_ngf` only at 128 (docs/official_release.md §1.3); here `ngf` scales
  every size so that CPU configurations can be narrow. The paper-size widths
  reproduce the official layer tables exactly.

  Args:
    image_size: image side in pixels: 32, 64 or 128.
    ngf: width of the last block; 64 and 128 need a multiple of 16.

  Returns:
    (channels, downsample): per-block output widths and downsampling flags,
    the first entry being the stem block.

  Raises:
    ValueError: for an unsupported image size or a width that is not
      positive or (at 64 and 128) not a multiple of 16.
  """
  if ngf < 1:
    raise ValueError(f'hat network width ebm_ngf={ngf} must be positive.')
  if image_size == 32:
    return (ngf,) * 4, (True, True, False, False)
  if image_size not in (64, 128):
    raise ValueError(
        f'No hat network for image size {image_size}; '
        'supported sizes are 32, 64 and 128.'
    )
  if ngf % 16:
    raise ValueError(
        f'ebm_ngf={ngf} must be a multiple of 16 for '
        f'{image_size}x{image_size} images.'
    )
  widths = (ngf // 16, ngf // 8, ngf // 4, ngf // 2, ngf)
  if image_size == 64:
    return widths, (True,) * 5
  return widths + (ngf,), (True,) * 5 + (False,)


class HatNetwork(nnx.Module):
  """H(x; θ): image [B, S, S, C] -> energy [B] (docs/official_release.md §1.2-§1.3).

  Stem block, residual discriminator blocks, then ReLU, global average pool
  and a bias-free Dense(width -> 1).
  """

  def __init__(
      self,
      image_size: int,
      in_channels: int,
      ngf: int,
      rngs: nnx.Rngs,
      stem: str = 'conv',
  ):
    """Builds the hat network.

    Args:
      image_size: S, 32, 64 or 128.
      in_channels: C, 3 for RGB and 1 for grayscale.
      ngf: width of the last block (256 for the paper's 32x32 network, 1024
        at 64x64, 1024 or 2048 at 128x128).
      rngs: NNX random streams for the initialisers.
      stem: how the first convolution, on the image, is computed: 'conv' or
        'patches' (`layers.stem_conv`; the same parameters and sums).

    Raises:
      ValueError: see `hat_architecture`; a stem not in `layers.STEMS`.
    """
    channels, downsample = hat_architecture(image_size, ngf)
    self.image_size = image_size
    self.in_channels = in_channels
    self.num_blocks = len(channels)
    if stem not in layers.STEMS:
      raise ValueError(f'stem_conv={stem!r}: choose one of {layers.STEMS}.')
    first = lambda cin, cout, r: layers.stem_conv(cin, cout, r, stem)
    cin = in_channels
    for i, (cout, down) in enumerate(zip(channels, downsample)):
      if i == 0:
        block = StemBlock(cin, cout, down, rngs, first_conv=first)
      else:
        block = DiscBlock(cin, cout, down, rngs)
      setattr(self, f'block{i + 1}', block)
      cin = cout
    self.head = layers.dense(cin, 1, rngs, use_bias=False)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Energy H(x) of each image.

    Args:
      x: images [B, S, S, C], float; data lives in [-1, 1] but the network
        is evaluated on unclipped G(z) + y too (docs/official_release.md §8
        #14).

    Returns:
      Energies [B], float32. Lower is more probable. With a bfloat16 input
      (compute_dtype) the blocks run in bfloat16 and the pooled features,
      the linear head and the energies in float32.
    """
    h = x
    for i in range(self.num_blocks):
      h = getattr(self, f'block{i + 1}')(h)
    h = jnp.mean(jax.nn.relu(h).astype(jnp.float32), axis=(1, 2))
    return self.head(h)[:, 0]


# The smallest image side at which 'auto' computes the hat network's first
# convolution as a product over gathered patches on a TPU. By the TPU
# compiler's estimates (docs/performance.md): faster at 128 px
# (imagenet_scaled on a v3-32, 0.513 -> 0.481 s), slower at 32 px
# (cifar10_synth: 4% on a v3-8, 10% on a v5litepod-8), mixed at 64 px
# (v6e-8: celeba_synth 1.5% slower, celeba_refine 7% faster), which keeps
# the convolution.
PATCHES_FROM_SIZE = 128


def stem_conv(
    config: ml_collections.ConfigDict, platform: Optional[str] = None
) -> str:
  """How the hat network computes its first convolution: `config.stem_conv`
  ('conv' or 'patches'), with 'auto' read as 'patches' for images of
  `PATCHES_FROM_SIZE` px or more on a TPU and 'conv' otherwise
  (`layers.PatchConv`; docs/performance.md).

  Args:
    config: reads `stem_conv` and `image_dims` ([S, S, C]).
    platform: 'tpu', 'gpu' or 'cpu'; default: where JAX computes now
      (`jax.default_backend()`). `hatebm_jax.aot` passes its target's.
  """
  if config.stem_conv != 'auto':
    return config.stem_conv
  platform = platform or jax.default_backend()
  large = config.image_dims[0] >= PATCHES_FROM_SIZE
  return 'patches' if platform == 'tpu' and large else 'conv'


def official_key(
    config: ml_collections.ConfigDict, path: tuple[str, ...]
) -> str:
  """The official TensorFlow variable of a hat-network array
  (docs/official_release.md §11): the stem block is `conv_1`, block k is
  `blockk`, and the head of an n-block network `lin_<n+1>` (lin_5, lin_6,
  lin_7 at 32, 64, 128 px).

  Args:
    config: reads `image_dims` and `ebm_ngf`.
    path: keys of the array in the parameters, e.g. ('block1', 'conv1',
      'kernel') -> 'conv_1/conv_1/kernel'.
  """
  module, *rest = path
  if module == 'head':
    blocks = len(hat_architecture(config.image_dims[0], config.ebm_ngf)[0])
    return f'lin_{blocks + 1}/{rest[-1]}'
  return spec.keras_block('conv_1' if module == 'block1' else module, rest)


# The registry entry of `ebm_sngan` (`hatebm_jax.models.NETWORKS`).
NETWORK = spec.Network(
    role='hat',
    build=lambda config, rngs: HatNetwork(
        config.image_dims[0],
        config.image_dims[2],
        config.ebm_ngf,
        rngs,
        stem_conv(config),
    ),
    describe=lambda c: (
        f'hat network {c.image_dims[0]}x{c.image_dims[1]}x{c.image_dims[2]}, '
        f'ngf {c.ebm_ngf}'
    ),
    image_sizes=(32, 64, 128),
    check=spec.width_check('ebm_ngf', hat_architecture),
    official_key=official_key,
)
