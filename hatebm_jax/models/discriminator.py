"""The SN-GAN discriminator D (Miyato et al. 2018, as in the Mimicry library).

Mimicry's `SNGANDiscriminator32`, which the paper's pretrained SN-GAN used:
an optimised stem block and three residual blocks (the first downsampling),
every convolution and the final linear layer spectral-normalised, ReLU,
global *sum* pooling and a linear head with bias. The hat network of the
synthesis runs is the same body without spectral norm, with average pooling
and no bias (docs/official_release.md §8 #7).

Spectral norm is Flax's `nnx.SpectralNorm`: one power iteration per call,
whose vectors u and current σ are `nnx.BatchStat` state (the `frozen` pytree
of a `FunctionalNet`), updated in training (`update_stats=True`) and read
in inference.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from hatebm_jax.models import layers
from hatebm_jax.models.hat import DiscBlock
from hatebm_jax.models.hat import StemBlock
from hatebm_jax.models.hat import hat_architecture


def sn_conv(update_stats: bool):
  """A `conv(in, out, k, rngs)` factory of spectral-normalised convolutions."""

  def build(in_channels, out_channels, kernel_size, rngs):
    return nnx.SpectralNorm(
        layers.conv(in_channels, out_channels, kernel_size, rngs),
        update_stats=update_stats,
        rngs=rngs,
    )

  return build


class SNGANDiscriminator(nnx.Module):
  """D(x): images [B, S, S, C] -> logits [B] (real high, fake low)."""

  def __init__(
      self,
      image_size: int,
      in_channels: int,
      ndf: int,
      rngs: nnx.Rngs,
      update_stats: bool = True,
  ):
    """Builds the discriminator.

    Args:
      image_size: S; the block layout is the hat network's
        (`hat.hat_architecture`), which is Mimicry's SNGANDiscriminator32
        (4 blocks of width ndf) and 64 (widths ndf/16 ... ndf).
      in_channels: C.
      ndf: width of the last block (128 in Mimicry's CIFAR-10 SN-GAN,
        1024 at 64x64).
      rngs: NNX random streams (initialisers and the power-iteration u).
      update_stats: whether calls advance the power iteration (training)
        or only read it (inference, e.g. DDLS).

    Raises:
      ValueError: see `hat.hat_architecture`.
    """
    conv = sn_conv(update_stats)
    channels, downsample = hat_architecture(image_size, ndf)
    self.num_blocks = len(channels)
    cin = in_channels
    for i, (cout, down) in enumerate(zip(channels, downsample)):
      block_cls = StemBlock if i == 0 else DiscBlock
      setattr(
          self, f'block{i + 1}', block_cls(cin, cout, down, rngs, conv=conv)
      )
      cin = cout
    self.head = nnx.SpectralNorm(
        layers.dense(cin, 1, rngs), update_stats=update_stats, rngs=rngs
    )

  def __call__(self, x: jax.Array) -> jax.Array:
    """Logits D(x) [B] of images [B, S, S, C] in [-1, 1]."""
    h = x
    for i in range(self.num_blocks):
      h = getattr(self, f'block{i + 1}')(h)
    h = jnp.sum(jax.nn.relu(h), axis=(1, 2))
    return self.head(h)[:, 0]
