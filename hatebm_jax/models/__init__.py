"""Networks of Hat EBM, built as Flax NNX modules and used as pure functions.

Each network is built once, split into a static graph definition and two
plain pytrees (nested dicts of arrays): trainable parameters (`nnx.Param`)
and frozen state (the generator's batch-norm statistics, `nnx.BatchStat`).
Training code only sees `net.apply(params, frozen, x)` and the pytrees, which
go through `jax.jit`, optax and Orbax unchanged.
"""

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx
import ml_collections

from hatebm_jax import config_base
from hatebm_jax.models import autoencoder
from hatebm_jax.models import generator
from hatebm_jax.models import hat
from hatebm_jax.models import spec

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


# Every network type a config can name, by name (`spec.Network`: its role,
# builder, image sizes and latent shape). A new network is a module of this
# package with its entry, and one line here.
NETWORKS: dict[str, spec.Network] = {
    'ebm_sngan': hat.NETWORK,
    'gen_sngan': generator.NETWORK,
    'gen_decoder': autoencoder.DECODER,
    'inf_encoder': autoencoder.ENCODER,
}
PATCHES_FROM_SIZE = hat.PATCHES_FROM_SIZE
stem_conv = hat.stem_conv


def network(role: str, config: ml_collections.ConfigDict) -> spec.Network:
  """The registry entry the config names for `role` ('hat': `ebm_type`,
  'generator': `gen_type`, 'encoder': `inf_type`).

  Raises:
    ValueError: for a name outside `NETWORKS` or of another role.
  """
  key = spec.ROLE_KEYS[role]
  entry = NETWORKS.get(config[key])
  if entry is None or entry.role != role:
    names = tuple(n for n, e in NETWORKS.items() if e.role == role)
    raise config_base.invalid(key, config[key], f'choose one of {names}')
  return entry


def check_config(config: ml_collections.ConfigDict, roles: tuple[str, ...]):
  """The network rules of a config whose mode builds the networks of
  `roles`: each is a registered type of its role that takes the image size
  and the latent shape, plus its own rules (`spec.Network.check`).

  Raises:
    ValueError: naming the key, its value and what is allowed.
  """
  size = config.image_dims[0]
  latent = tuple(config.state_dims)
  for role in roles:
    key, entry = spec.ROLE_KEYS[role], network(role, config)
    if size not in entry.image_sizes:
      raise config_base.invalid(
          'image_dims',
          tuple(config.image_dims),
          f'{config[key]!r} takes images of side {entry.image_sizes}',
      )
    if role != 'hat' and entry.latent_shape not in (None, latent):
      raise config_base.invalid(
          'state_dims',
          latent,
          f'{config[key]!r} takes latents {entry.latent_shape}',
      )
    if role != 'hat' and entry.latent_shape is None and len(latent) != 1:
      raise config_base.invalid(
          'state_dims', latent, f'{config[key]!r} takes a latent vector [nz]'
      )
    if entry.check:
      entry.check(config)


def create(role: str, config: ml_collections.ConfigDict) -> FunctionalNet:
  """The network the config names for `role`, as a `FunctionalNet` in the
  config's `compute_dtype`.

  Raises:
    ValueError: see `check_config`.
  """
  check_config(config, (role,))
  entry = network(role, config)
  return functionalize(
      lambda rngs: entry.build(config, rngs),
      entry.describe(config),
      compute_dtype(config),
  )


def create_hat_network(config: ml_collections.ConfigDict) -> FunctionalNet:
  """The hat network H of `config.ebm_type` (images [B, S, S, C] ->
  energies [B])."""
  return create('hat', config)


def create_generator(config: ml_collections.ConfigDict) -> FunctionalNet:
  """The generator G of `config.gen_type` (latents [B, *state_dims] ->
  images [B, S, S, C])."""
  return create('generator', config)


def create_encoder(config: ml_collections.ConfigDict) -> FunctionalNet:
  """The autoencoder's encoder of `config.inf_type` (images -> latents)."""
  return create('encoder', config)
