"""SN-GAN generators G(z; φ) (official `gen_sngan`).

ResNet generator of Miyato et al. (2018) as ported by the official release:
frozen-statistics batch norm with trainable scale and shift, bilinear
upsampling, every upsampling block with a learnable 1x1 shortcut, and an
output gen_factor * tanh (docs/official_release.md §1.4).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from hatebm_jax.models import layers
from hatebm_jax.models import spec


class GenBlock(nnx.Module):
  """Residual generator block (docs/official_release.md §1.4).

  Main path: BN -> ReLU [-> 2x upsample] -> conv3x3 -> BN -> ReLU -> conv3x3.
  Shortcut: [2x upsample ->] conv1x1 when the block changes width or
  upsamples, identity otherwise.
  """

  def __init__(
      self, in_channels: int, out_channels: int, upsample: bool, rngs: nnx.Rngs
  ):
    self.upsample = upsample
    self.bn1 = layers.frozen_batch_norm(in_channels, rngs)
    self.conv1 = layers.conv(in_channels, out_channels, 3, rngs)
    self.bn2 = layers.frozen_batch_norm(out_channels, rngs)
    self.conv2 = layers.conv(out_channels, out_channels, 3, rngs)
    if in_channels != out_channels or upsample:
      self.shortcut = layers.conv(in_channels, out_channels, 1, rngs)
    else:
      self.shortcut = None

  def __call__(self, x: jax.Array) -> jax.Array:
    h = jax.nn.relu(self.bn1(x))
    s = x
    if self.upsample:
      h = layers.upsample_2x(h)
      s = layers.upsample_2x(s)
    h = self.conv2(jax.nn.relu(self.bn2(self.conv1(h))))
    if self.shortcut is not None:
      s = self.shortcut(s)
    return h + s


def generator_architecture(image_size: int, ngf: int) -> tuple[int, ...]:
  """Output widths of the upsampling G-blocks; the input stage has `ngf`.

  32: ngf -> ngf -> ngf -> ngf (4 -> 32 px). 64: ngf -> ngf/2 ... ngf/16
  (4 -> 64 px). 128: ngf -> ngf -> ngf/2 ... ngf/16 (4 -> 128 px). The
  official code fixes ngf at 256 (32) and 1024 (64) and reads `gen_ngf` at
  128 only (docs/official_release.md §1.4); here it scales every size.

  Args:
    image_size: 32, 64 or 128.
    ngf: width of the 4x4 input stage; a multiple of 16 at 64 and 128.

  Returns:
    Output width of each G-block, in order.

  Raises:
    ValueError: for an unsupported size or an invalid width.
  """
  if ngf < 1:
    raise ValueError(f'generator width gen_ngf={ngf} must be positive.')
  if image_size == 32:
    return (ngf,) * 3
  if image_size not in (64, 128):
    raise ValueError(
        f'No generator for image size {image_size}; supported '
        'sizes are 32, 64 and 128.'
    )
  if ngf % 16:
    raise ValueError(
        f'gen_ngf={ngf} must be a multiple of 16 for '
        f'{image_size}x{image_size} images.'
    )
  tail = (ngf // 2, ngf // 4, ngf // 8, ngf // 16)
  return tail if image_size == 64 else (ngf,) + tail


class SNGANGenerator(nnx.Module):
  """G(z): latent [B, nz] -> image [B, S, S, C] in (-gen_factor, gen_factor).

  Dense(nz -> 16 ngf) viewed channel-major as (ngf, 4, 4) then moved to NHWC,
  upsampling G-blocks, BN -> ReLU -> conv3x3 -> tanh -> * gen_factor
  (docs/official_release.md §1.4). Outputs are never clipped
  (docs/official_release.md §8 #14).
  """

  def __init__(
      self,
      image_size: int,
      out_channels: int,
      ngf: int,
      latent_dim: int,
      gen_factor: float,
      rngs: nnx.Rngs,
  ):
    """Builds the generator.

    Args:
      image_size: S, 32, 64 or 128.
      out_channels: C, 3 for RGB and 1 for grayscale.
      ngf: width of the 4x4 input stage (256 / 1024 / 1024 or 2048 in the
        paper at 32 / 64 / 128).
      latent_dim: nz, 128 in every paper experiment.
      gen_factor: output scale; 2.0 for synthesis, 1.0 for refinement.
      rngs: NNX random streams for the initialisers.

    Raises:
      ValueError: see `generator_architecture`; non-positive latent_dim or
        gen_factor.
    """
    if latent_dim < 1:
      raise ValueError(f'latent dimension {latent_dim} must be positive.')
    if gen_factor <= 0:
      raise ValueError(f'gen_factor={gen_factor} must be positive.')
    widths = generator_architecture(image_size, ngf)
    self.ngf = ngf
    self.latent_dim = latent_dim
    self.gen_factor = gen_factor
    self.num_blocks = len(widths)
    self.dense = layers.dense(latent_dim, 16 * ngf, rngs)
    cin = ngf
    for i, cout in enumerate(widths):
      setattr(self, f'block{i + 1}', GenBlock(cin, cout, True, rngs))
      cin = cout
    self.bn_out = layers.frozen_batch_norm(cin, rngs)
    self.conv_out = layers.conv(cin, out_channels, 3, rngs)

  def __call__(self, z: jax.Array) -> jax.Array:
    """Generator output G(z).

    Args:
      z: latents [B, nz], float32, nominally N(0, I).

    Returns:
      Images [B, S, S, C] in (-gen_factor, gen_factor).
    """
    b = z.shape[0]
    h = self.dense(z).reshape(b, self.ngf, 4, 4).transpose(0, 2, 3, 1)
    for i in range(self.num_blocks):
      h = getattr(self, f'block{i + 1}')(h)
    h = self.conv_out(jax.nn.relu(self.bn_out(h)))
    return self.gen_factor * jnp.tanh(h)


def official_key(config, path: tuple[str, ...]) -> str:
  """The official TensorFlow variable of a generator array
  (docs/official_release.md §11): the dense layer is `lin_1`, our G-block k
  is `block<k+1>`, and the output batch norm and convolution of n G-blocks
  `bn_<n+2>` and `conv_<n+2>` (5, 6, 7 at 32, 64, 128 px).

  Args:
    config: reads `image_dims` and `gen_ngf`.
    path: keys of the array in the parameters or frozen statistics, e.g.
      ('block1', 'bn1', 'mean') -> 'block2/bn_1/moving_mean'.
  """
  module, *rest = path
  blocks = len(generator_architecture(config.image_dims[0], config.gen_ngf))
  if module == 'dense':
    return f'lin_1/{rest[-1]}'
  if module == 'bn_out':
    return f'bn_{blocks + 2}/{spec.keras_variable("bn", rest[-1])}'
  if module == 'conv_out':
    return f'conv_{blocks + 2}/{rest[-1]}'
  return spec.keras_block(f'block{int(module[5:]) + 1}', rest)


# The registry entry of `gen_sngan` (`hatebm_jax.models.NETWORKS`): any
# latent vector [nz].
NETWORK = spec.Network(
    role='generator',
    build=lambda config, rngs: SNGANGenerator(
        config.image_dims[0],
        config.image_dims[2],
        config.gen_ngf,
        config.state_dims[0],
        config.gen_factor,
        rngs,
    ),
    describe=lambda c: (
        f'SN-GAN generator {c.image_dims[0]}x{c.image_dims[1]}x'
        f'{c.image_dims[2]}, ngf {c.gen_ngf}'
    ),
    image_sizes=(32, 64, 128),
    latent_shape=None,
    check=spec.width_check('gen_ngf', generator_architecture),
    official_key=official_key,
)
