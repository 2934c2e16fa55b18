"""The mode contract: what a `config.mode` is, and how its state is laid out.

A *mode* is one kind of run (`synthesis`, `joint`, `sngan`, `autoencoder`):
its networks, optimisers and settings, with pure, jittable methods that
initialise its training state, train it one step and draw samples from it.
Every mode is a frozen dataclass deriving from `Mode`, built by
`Mode.from_config(config)`; the training loop, sampling, export, evaluation
and the AOT check use only what this module declares.

What a mode offers beyond training is declared as data, in its
`capabilities` (`Capabilities`): callers read those, never probe for
methods. The optional methods (`energy`, `chain_segment`, `test_loss`,
`generator_networks`) exist only where the capability says so; elsewhere
they raise `NotImplementedError`.

The training state of every mode is one `flax.struct.PyTreeNode` whose
fields each carry a *role* (`field(role)`): network parameters and frozen
statistics (`NETWORK`: exported, counted, restored for sampling), moving
averages of network weights (`AVERAGE`: field `<name>_ema` averages field
`<name>`, or is None when the config keeps no average), optimiser states
(`OPTIMIZER`), stored samples split over the devices (`SAMPLES`: the replay
bank), the step counter (`COUNTER`) and the base PRNG key (`KEY`). The
helpers below (`network_fields`, `sharded_fields`, `checked_fields`,
`networks_only`, `for_sampling`, `shardings`) are the one place that reads
the roles.
"""

import abc
import dataclasses
from typing import Any, ClassVar, Optional

import flax.struct
import jax
import ml_collections

from hatebm_jax import config_base
from hatebm_jax.infra import parallel

Params = Any  # a nested dict of arrays

# Roles of the fields of a training state.
NETWORK = 'network'  # parameters or frozen statistics of a network
AVERAGE = 'average'  # <name>_ema: moving average of NETWORK field <name>
OPTIMIZER = 'optimizer'  # an optax state
SAMPLES = 'samples'  # stored samples, split over the 'data' mesh axis
COUNTER = 'counter'  # int32 [], training steps done
KEY = 'key'  # the run's base PRNG key
ROLES = (NETWORK, AVERAGE, OPTIMIZER, SAMPLES, COUNTER, KEY)


def field(role: str) -> Any:
  """A training-state field with its role (a `flax.struct` pytree field);
  `AVERAGE` fields default to None (no average kept), so they come last.

  Raises:
    ValueError: for a role outside `ROLES`.
  """
  if role not in ROLES:
    raise ValueError(f'role={role!r}; choose one of {ROLES}.')
  if role == AVERAGE:  # None where the config keeps no average
    return flax.struct.field(default=None, metadata={'role': role})
  return flax.struct.field(metadata={'role': role})


def _fields(state: Any, roles: tuple[str, ...]) -> dict[str, Any]:
  return {
      f.name: getattr(state, f.name)
      for f in dataclasses.fields(state)
      if f.metadata.get('role') in roles
  }


def network_fields(state: Any) -> dict[str, Any]:
  """{name: value} of the `NETWORK` fields of a state (e.g. 'hat_params',
  'gen_params', 'gen_frozen'): what an exported model holds."""
  return _fields(state, (NETWORK,))


def sharded_fields(state: Any) -> tuple[str, ...]:
  """Names of the fields split over the 'data' mesh axis (`SAMPLES`)."""
  return tuple(_fields(state, (SAMPLES,)))


def checked_fields(state: Any) -> tuple[str, ...]:
  """Names of the fields of floats the divergence guard checks: networks,
  the averages it keeps, optimiser states and stored samples."""
  fields = _fields(state, (NETWORK, AVERAGE, OPTIMIZER, SAMPLES))
  return tuple(name for name, value in fields.items() if value is not None)


def averages(state: Any) -> dict[str, str]:
  """{network field: its average field} for the averages `state` keeps
  (`AVERAGE` fields that are not None), e.g. {'gen_params': 'gen_params_ema'}.
  """
  return {
      name[: -len('_ema')]: name
      for name, value in _fields(state, (AVERAGE,)).items()
      if value is not None
  }


def for_sampling(state: Any, weights: str) -> Any:
  """The weights sampling, plots, FCD and export use.

  Args:
    state: a training state (or a restored one).
    weights: 'ema' (each network field that has an average is replaced by
      it) or 'raw' (the trained weights, the official protocol,
      docs/official_release.md §4.4).

  Returns:
    `state` with its `AVERAGE` fields set to None and, for 'ema', the
    averages in place of their networks; unchanged apart from that, and
    unchanged for a state that keeps no average.

  Raises:
    ValueError: for `weights` outside `config_base.WEIGHTS`.
  """
  if weights not in config_base.WEIGHTS:
    raise ValueError(
        f'weights={weights!r}: choose one of {config_base.WEIGHTS}.'
    )
  swapped = {
      name: getattr(state, average) for name, average in averages(state).items()
  }
  cleared = {name: None for name in _fields(state, (AVERAGE,))}
  return state.replace(**cleared, **(swapped if weights == 'ema' else {}))


def networks_only(state: Any) -> Any:
  """`state` with every field but the `NETWORK` ones set to None: what
  sampling needs, and what an exported model restores."""
  return state.replace(
      **{
          f.name: None
          for f in dataclasses.fields(state)
          if f.metadata.get('role') != NETWORK
      }
  )


def shardings(abstract_state: Any, mesh: jax.sharding.Mesh) -> Any:
  """Shardings of a training state on `mesh`: `SAMPLES` fields split on
  their leading (lane) axis, everything else replicated."""
  return parallel.state_shardings(
      abstract_state, mesh, sharded_fields(abstract_state)
  )


@dataclasses.dataclass(frozen=True)
class Capabilities:
  """What a mode offers beyond `train_step`, `draw` and `generate`.

  Attributes:
    sources: what `draw` can make, the mode's own samples first: 'ebm' (X =
      G(z) + y after the Langevin chain), 'generator' (G(z) alone),
      'initial' (G(z) of the untrained generator), 'ddls' (DDLS samples of
      an SN-GAN).
    energy: the mode has a hat network: `energy(hat_params, x)` scores
      images (OOD AUROC, `Pretrained.energy`).
    chain: `draw('ebm')` is a Langevin chain on the hat network that
      `chain_segment` continues step by step (Figure-3 paths).
    test_loss: `test_loss(state, images)` scores the test split (the
      `test_loss` evaluator, `hatebm_jax.evaluators`).
    generator_source: a joint run can take this mode's generator
      (`generator_networks`), e.g. an SN-GAN to refine or an autoencoder's
      decoder to retrofit.
  """

  sources: tuple[str, ...]
  energy: bool = False
  chain: bool = False
  test_loss: bool = False
  generator_source: bool = False


class Mode(abc.ABC):
  """The contract of every mode (see the module docstring).

  Subclasses are frozen dataclasses with at least the fields `batch_size`
  (global batch B), `latent_shape` (one latent z) and `image_shape`
  ([S, S, C]); all methods are pure and jittable unless said otherwise.
  """

  capabilities: ClassVar[Capabilities]
  # The roles of the registered networks it builds (`models.NETWORKS`):
  # 'hat', 'generator', 'encoder'.
  networks: ClassVar[tuple[str, ...]] = ()
  # Config keys only some modes read: the ones this mode reads. A config of
  # another mode must leave them at their defaults (`validation.validate`).
  options: ClassVar[tuple[str, ...]] = ()
  batch_size: int
  latent_shape: tuple[int, ...]
  image_shape: tuple[int, ...]

  @classmethod
  def check_config(cls, config: ml_collections.ConfigDict) -> None:
    """The mode's own rules across config keys (`validation.validate`
    calls it after the one-value rules, the data and network checks).

    Raises:
      ValueError: `config_base.invalid(key, value, what is allowed)`.
    """
    del config

  @classmethod
  @abc.abstractmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> 'Mode':
    """Builds the mode of a validated experiment config."""

  @abc.abstractmethod
  def init(self, key: jax.Array, *init_args: Any) -> Any:
    """A fresh training state from the run's base key
    (`jax.random.PRNGKey(config.seed)`) and `init_args`."""

  def init_args(
      self,
      config: ml_collections.ConfigDict,
      mesh: Optional[jax.sharding.Mesh] = None,
  ) -> tuple:
    """Inputs of `init` beyond the key for a new run, read now (e.g. a
    joint run's pretrained generator); () for most modes. Not jittable."""
    del config, mesh
    return ()

  def abstract_init_args(self) -> tuple:
    """Shapes and dtypes of `init_args` (no reading, no compute)."""
    return ()

  def abstract_state(self, seed: int) -> Any:
    """Shapes and dtypes of the training state (`jax.eval_shape`)."""
    return jax.eval_shape(
        self.init, jax.random.PRNGKey(seed), *self.abstract_init_args()
    )

  @property
  def images_per_step(self) -> int:
    """Training images one `train_step` takes: B unless said otherwise."""
    return self.batch_size

  @property
  def chain_settings(self) -> Optional[Any]:
    """Settings of the mode's sampling chain (`LangevinConfig`,
    `DDLSConfig`), or None for a mode without one."""
    return None

  @abc.abstractmethod
  def train_step(
      self, state: Any, images: jax.Array
  ) -> tuple[Any, dict[str, jax.Array]]:
    """One training step on images [images_per_step, S, S, C] in [-1, 1]:
    (new state, scalar metrics)."""

  def generate(
      self, gen_params: Params, gen_frozen: Params, z: jax.Array
  ) -> jax.Array:
    """G(z) of the mode's generator `gen` (the SN-GAN generator, or the
    autoencoder's decoder) in inference mode: latents [B, *latent_shape]
    float32 -> images [B, S, S, C] float32."""
    return self.gen.apply(gen_params, gen_frozen, z)

  @abc.abstractmethod
  def draw(
      self, state: Any, z: jax.Array, key: jax.Array, source: str
  ) -> tuple[jax.Array, jax.Array]:
    """(G-part [B, S, S, C], residual y [B, S, S, C]) of one of
    `capabilities.sources` (y = 0 without a residual); the sample is their
    sum. `state` may be `networks_only`."""

  def _missing(self, what: str) -> NotImplementedError:
    return NotImplementedError(
        f'{type(self).__name__} has no {what} (see ' 'its capabilities).'
    )

  def energy(self, hat_params: Params, x: jax.Array) -> jax.Array:
    """H(x; θ): images [B, S, S, C] -> energies [B] (`capabilities.energy`)."""
    raise self._missing('hat network')

  def chain_segment(
      self,
      state: Any,
      z: jax.Array,
      y: jax.Array,
      key: jax.Array,
      num_steps: int,
  ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Continues chains from (z, y) for `num_steps` Langevin steps:
    -> (z, y, G(z)) (`capabilities.chain`)."""
    raise self._missing('Langevin chain on a hat network')

  def test_loss(self, state: Any, images: Any) -> float:
    """The test-split loss (`capabilities.test_loss`)."""
    raise self._missing('test loss')

  def generator_networks(self, state: Any) -> tuple[Params, Params]:
    """(gen_params, gen_frozen) a joint run takes from this run's state
    (`capabilities.generator_source`)."""
    raise self._missing('generator for a joint run')


class HatEBMMode(Mode):
  """A mode with a hat network H (field `hat`) and a Langevin chain on it
  (field `sampler`, a `hat_ebm.langevin.LangevinConfig`): synthesis and
  joint."""

  hat: Any
  sampler: Any
  networks = ('hat', 'generator')
  options = ('energy_l2',)

  @property
  def chain_settings(self) -> Any:
    """The training-time Langevin chain (`sampler`)."""
    return self.sampler

  def energy(self, hat_params: Params, x: jax.Array) -> jax.Array:
    """H(x; θ): images [B, S, S, C] float32 -> energies [B] float32."""
    return self.hat.apply(hat_params, {}, x)
