"""Layer constructors shared by the hat networks and generators.

Every layer here follows the Keras defaults of the official TF2 release
(docs/official_release.md §1.1, §10): glorot-uniform kernels,
zero biases, frozen-statistics batch norm with epsilon 1e-3, and bilinear
2x upsampling with half-pixel centres.
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

# Keras' glorot_uniform: U(-l, l), l = sqrt(6 / (fan_in + fan_out)) with
# receptive-field-scaled fans (docs/official_release.md §1.1). Flax's own
# default is lecun_normal.
KERNEL_INIT = nnx.initializers.xavier_uniform()
BIAS_INIT = nnx.initializers.zeros_init()
BN_EPSILON = 1e-3  # Keras BatchNormalization default (docs/official_release.md §0.1, §8 #8).


def conv(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    rngs: nnx.Rngs,
    layer: type[nnx.Conv] = nnx.Conv,
) -> nnx.Conv:
  """A stride-1 'SAME' convolution with bias and Keras initialisers.

  Args:
    in_channels: input channels Cin.
    out_channels: output channels Cout.
    kernel_size: square kernel side k (1 or 3 in these networks).
    rngs: NNX random streams for the kernel initialiser.
    layer: `nnx.Conv` or a subclass that computes it otherwise (`PatchConv`).

  Returns:
    A `layer` mapping [B, H, W, Cin] -> [B, H, W, Cout] (HWIO kernel).
  """
  return layer(
      in_channels,
      out_channels,
      (kernel_size, kernel_size),
      padding='SAME',
      kernel_init=KERNEL_INIT,
      bias_init=BIAS_INIT,
      rngs=rngs,
  )


class PatchConv(nnx.Conv):
  """A 3x3 'SAME' convolution of a narrow input (the image's 1 or 3
  channels) computed as one matrix product: the 3x3 neighbourhood of every
  pixel is gathered into 9·Cin channels (zero-padded at the border), then
  multiplied by the kernel read as a [9·Cin, Cout] matrix.

  The same parameters (an HWIO kernel and a bias, as `conv` makes) and the
  same sums as the convolution, in another order. On a TPU the
  convolution and its input gradient fill only Cin of a matrix unit's 128
  lanes; as a product they fill 9·Cin, and the TPU compiler estimates the
  first layer's forward pass and input gradient 3-5x faster
  (docs/performance.md). On CPU the convolution is faster: `conv_layer`
  picks by `stem`.
  """

  def __call__(self, x: jax.Array) -> jax.Array:
    kh, kw, cin, cout = self.kernel.shape
    _, height, width, _ = x.shape
    pad = ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0))
    padded = jnp.pad(x, pad)
    patches = jnp.concatenate(
        [
            padded[:, i : i + height, j : j + width, :]
            for i in range(kh)
            for j in range(kw)
        ],
        axis=-1,
    )  # [B, H, W, kh·kw·Cin], ordered as the HWIO kernel's leading axes
    kernel = self.kernel[...].reshape(kh * kw * cin, cout).astype(x.dtype)
    y = patches @ kernel
    if self.bias is not None:
      y = y + self.bias[...].astype(x.dtype)
    return y


STEMS = ('conv', 'patches')


def stem_conv(
    in_channels: int, out_channels: int, rngs: nnx.Rngs, stem: str = 'conv'
) -> nnx.Conv:
  """The hat network's first 3x3 convolution, on the image: `conv`, or with
  stem='patches' the same layer computed as a `PatchConv`.

  Raises:
    ValueError: for a stem not in STEMS.
  """
  if stem not in STEMS:
    raise ValueError(f'stem_conv={stem!r}: choose one of {STEMS}.')
  layer = PatchConv if stem == 'patches' else nnx.Conv
  return conv(in_channels, out_channels, 3, rngs, layer)


def dense(
    in_features: int, out_features: int, rngs: nnx.Rngs, use_bias: bool = True
) -> nnx.Linear:
  """A dense layer with Keras initialisers (docs/official_release.md §1.1)."""
  return nnx.Linear(
      in_features,
      out_features,
      use_bias=use_bias,
      kernel_init=KERNEL_INIT,
      bias_init=BIAS_INIT,
      rngs=rngs,
  )


def frozen_batch_norm(num_features: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
  """Generator batch norm that always uses its stored statistics.

  The official generator never runs batch norm in training mode, so each
  layer is the per-channel affine map gamma * (x - mean) / sqrt(var + 1e-3) +
  beta with mean 0 and var 1 kept at their initial values (stored as
  `nnx.BatchStat`, i.e. not trainable) and gamma, beta trainable
  (docs/official_release.md §0.1, §1.1).
  """
  return nnx.BatchNorm(
      num_features, use_running_average=True, epsilon=BN_EPSILON, rngs=rngs
  )


def avg_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 average pool, stride 2, VALID: [B, H, W, C] -> [B, H/2, W/2, C]."""
  return nnx.avg_pool(x, (2, 2), strides=(2, 2), padding='VALID')


def upsample_2x(x: jax.Array) -> jax.Array:
  """Bilinear 2x upsampling: [B, H, W, C] -> [B, 2H, 2W, C].

  Equal to Keras `UpSampling2D(interpolation='bilinear')` (half-pixel
  centres, no antialiasing, clamped edges; docs/official_release.md §1.1).
  """
  b, h, w, c = x.shape
  return jax.image.resize(x, (b, 2 * h, 2 * w, c), 'bilinear')


def count_params(state) -> int:
  """Total number of scalars in a pytree of arrays."""
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(state))
