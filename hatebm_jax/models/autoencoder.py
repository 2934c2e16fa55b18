"""The deterministic autoencoder of the retrofit experiment (docs/official_release.md §1.5).

Encoder `inf_encoder`: image [B, 32, 32, C] -> latent [B, 16, 16, 1] on the
sphere of radius √m (m = 256 latent entries). Decoder `gen_decoder`: latent
-> image in (-gen_factor, gen_factor). The Hat EBM later treats the frozen
decoder as its generator G and samples z ~ N(0, I_m), whose norm is ≈ √m,
the radius the encoder projects to (docs/official_release.md §1.5).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from hatebm_jax.models import layers
from hatebm_jax.models import spec
from hatebm_jax.models.generator import GenBlock
from hatebm_jax.models.hat import DiscBlock
from hatebm_jax.models.hat import StemBlock

LATENT_SHAPE = (16, 16, 1)
SPHERE_EPSILON = 1e-6  # added to the norm, not inside the square root


def project_to_sphere(h: jax.Array) -> jax.Array:
  """√m · h / (‖h‖ + 1e-6) per example, m = the entries of one latent.

  Args:
    h: latents [B, ...].

  Returns:
    Latents of the same shape with norm √m (up to the 1e-6),
    docs/official_release.md §1.5.
  """
  m = h[0].size
  norm = jnp.sqrt(
      jnp.sum(jnp.square(h), axis=tuple(range(1, h.ndim)), keepdims=True)
  )
  return jnp.sqrt(float(m)) * h / (norm + SPHERE_EPSILON)


class Encoder(nnx.Module):
  """`inf_encoder`: stem (no downsample), D-block down, 2 D-blocks, ReLU,
  conv3x3 -> 1 channel, projection to the sphere (docs/official_release.md §1.5).
  """

  def __init__(self, in_channels: int, ngf: int, rngs: nnx.Rngs):
    self.block1 = StemBlock(in_channels, ngf, False, rngs)
    self.block2 = DiscBlock(ngf, ngf, True, rngs)
    self.block3 = DiscBlock(ngf, ngf, False, rngs)
    self.block4 = DiscBlock(ngf, ngf, False, rngs)
    self.conv_out = layers.conv(ngf, 1, 3, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Images [B, 32, 32, C] -> latents [B, 16, 16, 1], ‖z‖ = 16."""
    h = self.block4(self.block3(self.block2(self.block1(x))))
    return project_to_sphere(self.conv_out(jax.nn.relu(h)))


class DecoderStem(nnx.Module):
  """Decoder stem: conv3x3 -> BN -> ReLU -> conv3x3, no activation on the
  input; shortcut conv1x1 (docs/official_release.md §1.5)."""

  def __init__(self, in_channels: int, out_channels: int, rngs: nnx.Rngs):
    self.conv1 = layers.conv(in_channels, out_channels, 3, rngs)
    self.bn = layers.frozen_batch_norm(out_channels, rngs)
    self.conv2 = layers.conv(out_channels, out_channels, 3, rngs)
    self.shortcut = layers.conv(in_channels, out_channels, 1, rngs)

  def __call__(self, z: jax.Array) -> jax.Array:
    h = self.conv2(jax.nn.relu(self.bn(self.conv1(z))))
    return h + self.shortcut(z)


class Decoder(nnx.Module):
  """`gen_decoder`: latent [B, 16, 16, 1] -> image [B, 32, 32, C].

  Stem at 16×16, G-block with ×2 upsampling, two G-blocks at 32×32, then BN ->
  ReLU -> conv3x3 -> tanh -> × gen_factor (docs/official_release.md §1.5). Batch
  norm keeps frozen statistics like the SN-GAN generator's.
  """

  def __init__(
      self, out_channels: int, ngf: int, gen_factor: float, rngs: nnx.Rngs
  ):
    if gen_factor <= 0:
      raise ValueError(f'gen_factor={gen_factor} must be positive.')
    self.gen_factor = gen_factor
    self.block1 = DecoderStem(LATENT_SHAPE[-1], ngf, rngs)
    self.block2 = GenBlock(ngf, ngf, True, rngs)
    self.block3 = GenBlock(ngf, ngf, False, rngs)
    self.block4 = GenBlock(ngf, ngf, False, rngs)
    self.bn_out = layers.frozen_batch_norm(ngf, rngs)
    self.conv_out = layers.conv(ngf, out_channels, 3, rngs)

  def __call__(self, z: jax.Array) -> jax.Array:
    """Latents [B, 16, 16, 1] -> images in (-gen_factor, gen_factor)."""
    h = self.block4(self.block3(self.block2(self.block1(z))))
    return self.gen_factor * jnp.tanh(
        self.conv_out(jax.nn.relu(self.bn_out(h)))
    )


def official_decoder_key(config, path: tuple[str, ...]) -> str:
  """The official TensorFlow variable of a decoder array
  (docs/official_release.md §11): blocks keep their numbers (the stem's
  batch norm is `block1/bn_2`), the output layers are `bn_5` and `conv_5`.
  `config` is unused: the decoder has one layout."""
  del config
  module, *rest = path
  if module == 'bn_out':
    return f'bn_5/{spec.keras_variable("bn", rest[-1])}'
  if module == 'conv_out':
    return f'conv_5/{rest[-1]}'
  return spec.keras_block(module, rest)


def official_encoder_key(config, path: tuple[str, ...]) -> str:
  """The official TensorFlow variable of an encoder array
  (docs/official_release.md §11): blocks keep their numbers, the output
  convolution is `conv2latent`. `config` is unused."""
  del config
  module, *rest = path
  if module == 'conv_out':
    return f'conv2latent/{rest[-1]}'
  return spec.keras_block(module, rest)


# The registry entries of `gen_decoder` and `inf_encoder`
# (`hatebm_jax.models.NETWORKS`).
DECODER = spec.Network(
    role='generator',
    build=lambda config, rngs: Decoder(
        config.image_dims[2], config.gen_ngf, config.gen_factor, rngs
    ),
    describe=lambda c: (
        f'decoder 16x16x1 -> 32x32x{c.image_dims[2]}, ngf {c.gen_ngf}'
    ),
    image_sizes=(32,),
    latent_shape=LATENT_SHAPE,
    official_key=official_decoder_key,
)
ENCODER = spec.Network(
    role='encoder',
    build=lambda config, rngs: Encoder(
        config.image_dims[2], config.inf_ngf, rngs
    ),
    describe=lambda c: (
        f'encoder 32x32x{c.image_dims[2]} -> 16x16x1, ngf {c.inf_ngf}'
    ),
    image_sizes=(32,),
    latent_shape=LATENT_SHAPE,
    official_key=official_encoder_key,
)
