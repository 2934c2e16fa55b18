"""Networks of Hat EBM, built as Flax NNX modules and used as pure functions.

Each network is built once, split into a static graph definition and two
plain pytrees (nested dicts of arrays): trainable parameters (`nnx.Param`)
and frozen state (the generator's batch-norm statistics, `nnx.BatchStat`).
Training code only sees `net.apply(params, frozen, x)` and the pytrees, which
go through `jax.jit`, optax and Orbax unchanged.
"""

import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
from flax import nnx
import ml_collections

from hatebm_jax import config_base
from hatebm_jax.models.autoencoder import Decoder
from hatebm_jax.models.autoencoder import Encoder
from hatebm_jax.models.generator import SNGANGenerator
from hatebm_jax.models.hat import HatNetwork

Params = Any  # nested dict of arrays


@dataclasses.dataclass(frozen=True, eq=False)
class FunctionalNet:
  """A network as a pure function of (params, frozen state, input).

  Attributes:
    graphdef: the NNX graph definition (static structure, no arrays).
    init: `key -> (params, frozen)`, pure and jittable; `key` is a
      `jax.random.PRNGKey`.
    name: a readable name for logs.
    build: `nnx.Rngs -> module`, the constructor it was made from (e.g. to
      derive a training-mode graph definition).
    compute_dtype: dtype of the arithmetic inside the network (None or
      float32: as stored). With bfloat16, `apply` casts the float32
      parameters, frozen statistics and input to bfloat16 and the output
      back to float32: parameters, their gradients and everything outside
      the network stay float32 (mixed precision; the hat network computes
      its final linear energy head in float32, see `HatNetwork`).
  """

  graphdef: nnx.GraphDef
  init: Callable[[jax.Array], tuple[Params, Params]]
  name: str
  build: Callable[[nnx.Rngs], nnx.Module] | None = None
  compute_dtype: Any = None

  def apply(self, params: Params, frozen: Params, x: jax.Array) -> jax.Array:
    """Runs the network: `nnx.merge` of the pytrees, then a forward pass.

    Args:
      params, frozen: float32 pytrees of `init`.
      x: the input batch, float32.

    Returns:
      The output batch, float32 whatever `compute_dtype` is.
    """
    dtype = self.compute_dtype
    if dtype is None or dtype == jnp.float32:
      return nnx.merge(self.graphdef, params, frozen)(x)
    cast = lambda t: jax.tree.map(
        lambda a: a.astype(dtype)
        if jnp.issubdtype(a.dtype, jnp.floating)
        else a,
        t,
    )
    out = nnx.merge(self.graphdef, cast(params), cast(frozen))(x.astype(dtype))
    return out.astype(jnp.float32)


def compute_dtype(config: ml_collections.ConfigDict) -> Any:
  """`config.compute_dtype` ('float32' or 'bfloat16') as a jnp dtype."""
  return jnp.dtype(config.get('compute_dtype', 'float32'))


def functionalize(
    build: Callable[[nnx.Rngs], nnx.Module], name: str, dtype: Any = None
) -> FunctionalNet:
  """Turns an NNX module constructor into a `FunctionalNet`.

  The graph definition comes from an abstract (shape-only) build, so no
  weights are materialised here. `dtype` is the `compute_dtype`.
  """
  abstract = nnx.eval_shape(lambda: build(nnx.Rngs(0)))
  graphdef, _, _ = nnx.split(abstract, nnx.Param, ...)

  def init(key: jax.Array) -> tuple[Params, Params]:
    _, params, frozen = nnx.split(build(nnx.Rngs(key)), nnx.Param, ...)
    return nnx.to_pure_dict(params), nnx.to_pure_dict(frozen)

  if dtype is not None and jnp.dtype(dtype) != jnp.float32:
    name = f'{name}, {jnp.dtype(dtype).name} compute'
  return FunctionalNet(
      graphdef=graphdef, init=init, name=name, build=build, compute_dtype=dtype
  )


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


def create_hat_network(config: ml_collections.ConfigDict) -> FunctionalNet:
  """The hat network H named by `config.ebm_type` ('ebm_sngan').

  Reads `image_dims` ([S, S, C]), `ebm_ngf` and `stem_conv`. Raises
  ValueError for an unknown type or unsupported size (see
  `hat.hat_architecture`).
  """
  config_base.check('ebm_type', config.ebm_type)
  size, _, channels = config.image_dims
  stem = stem_conv(config)
  return functionalize(
      lambda rngs: HatNetwork(size, channels, config.ebm_ngf, rngs, stem),
      f'hat network {size}x{size}x{channels}, ngf {config.ebm_ngf}',
      compute_dtype(config),
  )


def create_generator(config: ml_collections.ConfigDict) -> FunctionalNet:
  """The generator G named by `config.gen_type`.

  'gen_sngan' (SN-GAN ResNet generator, latent [nz]) reads `image_dims`,
  `gen_ngf`, `state_dims` ([nz]) and `gen_factor`; 'gen_decoder' (the
  autoencoder's decoder, latent [16, 16, 1], 32x32 images) reads
  `image_dims`, `gen_ngf` and `gen_factor`.

  Raises:
    ValueError: for an unknown type, an unsupported size or a latent shape
      the generator cannot take.
  """
  size, _, channels = config.image_dims
  config_base.check_generator(config.gen_type, config.state_dims, size)
  if config.gen_type == 'gen_decoder':
    return functionalize(
        lambda rngs: Decoder(channels, config.gen_ngf, config.gen_factor, rngs),
        f'decoder 16x16x1 -> 32x32x{channels}, ngf {config.gen_ngf}',
        compute_dtype(config),
    )
  return functionalize(
      lambda rngs: SNGANGenerator(
          size,
          channels,
          config.gen_ngf,
          config.state_dims[0],
          config.gen_factor,
          rngs,
      ),
      f'SN-GAN generator {size}x{size}x{channels}, ngf {config.gen_ngf}',
      compute_dtype(config),
  )


def create_encoder(config: ml_collections.ConfigDict) -> FunctionalNet:
  """The autoencoder's encoder named by `config.inf_type` ('inf_encoder').

  Reads `image_dims` (32x32 only) and `inf_ngf`.
  """
  config_base.check('inf_type', config.inf_type)
  size, _, channels = config.image_dims
  if size != 32:
    raise config_base.invalid(
        'image_dims',
        tuple(config.image_dims),
        "'inf_encoder' takes 32x32 images",
    )
  return functionalize(
      lambda rngs: Encoder(channels, config.inf_ngf, rngs),
      f'encoder 32x32x{channels} -> 16x16x1, ngf ' f'{config.inf_ngf}',
      compute_dtype(config),
  )
