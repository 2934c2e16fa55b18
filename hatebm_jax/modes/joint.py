"""Joint Hat EBM: a hat network over a frozen pretrained generator.

Refinement (a pretrained SN-GAN generator, `gen_sngan`, gen_factor 1) and
retrofit (a deterministic autoencoder's decoder, `gen_decoder`) share one
training step (paper Sec. 3.2; docs/official_release.md §4.2):

1. z₀ = `init_scale_latent`·N(0, I), y₀ = `init_scale_res`·N(0, I) (0 in
   training): fresh short-run chains, no replay bank, no persistence;
2. K joint Langevin steps on (z, y) (`langevin.joint_langevin`, z then y);
3. x⁺ = data + `data_epsilon`·N(0, I), x⁻ = G(z_K) + y_K;
4. the synthesis hat update on (mean H(x⁺) − mean H(x⁻)) / T.

The generator's parameters are part of the state (so that checkpoints are
self-contained) but no gradient or optimiser ever touches them; a test
checks they stay bitwise unchanged. They come from a run of this project
(`gen_weights` = its workdir): an SN-GAN run for refinement, an autoencoder
run for retrofit; or from an exported model file holding a generator, such
as an official release's generator converted with `python -m
hatebm_jax.convert --gen`.
"""

import dataclasses
import json
from typing import Any, Optional

from etils import epath
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax

from hatebm_jax import config_base
from hatebm_jax import models
from hatebm_jax import optim
from hatebm_jax.hat_ebm import langevin
from hatebm_jax.hat_ebm import loss
from hatebm_jax.infra import checkpoint
from hatebm_jax.infra import file_format
from hatebm_jax.infra import parallel
from hatebm_jax.modes import autoencoder
from hatebm_jax.modes import base
from hatebm_jax.modes import sngan

Params = Any


class JointState(flax.struct.PyTreeNode):
  """State of a joint run.

  Attributes:
    step: int32 [], training iterations done.
    rng: the run's base key; iteration t uses fold_in(rng, t).
    hat_params, hat_opt_state: hat network θ and its Adam state.
    gen_params, gen_frozen: the frozen pretrained generator (never updated).
  """

  step: jax.Array = base.field(base.COUNTER)
  rng: jax.Array = base.field(base.KEY)
  hat_params: Params = base.field(base.NETWORK)
  hat_opt_state: optax.OptState = base.field(base.OPTIMIZER)
  gen_params: Params = base.field(base.NETWORK)
  gen_frozen: Params = base.field(base.NETWORK)


# The modes whose runs a joint run takes its generator from
# (`config.gen_weights`): an SN-GAN to refine, an autoencoder to retrofit.
GENERATOR_SOURCES = {
    'sngan': sngan.SNGANMode,
    'autoencoder': autoencoder.AutoencoderMode,
}
# Config keys that fix the generator: they must agree with its run.
GENERATOR_KEYS = (
    'gen_type',
    'gen_ngf',
    'gen_factor',
    'state_dims',
    'image_dims',
)


def _check_update_latents(config: ml_collections.ConfigDict) -> None:
  if config.update_latents is not True:
    raise config_base.invalid(
        'update_latents',
        config.update_latents,
        'a joint run moves z: set it True',
    )


@dataclasses.dataclass(frozen=True, eq=False)
class JointMode(base.HatEBMMode):
  """Networks, optimiser and settings of a joint run (all static)."""

  capabilities = base.Capabilities(
      sources=('ebm', 'generator'), energy=True, chain=True
  )
  options = base.HatEBMMode.options + ('gen_weights',)

  @classmethod
  def check_config(cls, config: ml_collections.ConfigDict) -> None:
    """Langevin moves z too (`update_latents`); `gen_weights` names the
    run whose generator is refined."""
    _check_update_latents(config)
    if not config.gen_weights:
      raise config_base.invalid(
          'gen_weights',
          config.gen_weights,
          'a joint run needs the workdir of a trained sngan or autoencoder '
          'run (its generator / decoder is refined)',
      )

  hat: models.FunctionalNet
  gen: models.FunctionalNet
  hat_opt: optax.GradientTransformation
  sampler: langevin.LangevinConfig
  batch_size: int
  latent_shape: tuple[int, ...]
  image_shape: tuple[int, ...]
  data_epsilon: float
  init_scale_res: float
  init_scale_latent: float
  energy_l2: float = 0.0

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> 'JointMode':
    """Builds the mode; `update_latents` must be on (joint sampler).

    Raises:
      ValueError: for `update_latents` False.
    """
    _check_update_latents(config)
    return cls(
        hat=models.create_hat_network(config),
        gen=models.create_generator(config),
        hat_opt=optim.adam(
            config.ebm_lr_info,
            config.max_grad_norm if config.clip_ebm_grad else None,
        ),
        sampler=langevin.LangevinConfig.from_config(config),
        batch_size=config.batch_size,
        latent_shape=tuple(config.state_dims),
        image_shape=tuple(config.image_dims),
        data_epsilon=config.data_epsilon,
        init_scale_res=config.init_scale_res,
        init_scale_latent=config.init_scale_latent,
        energy_l2=config.energy_l2,
    )

  def init_args(
      self,
      config: ml_collections.ConfigDict,
      mesh: Optional[jax.sharding.Mesh] = None,
  ) -> tuple:
    """The pretrained generator (gen_params, gen_frozen) of
    `config.gen_weights` (`load_generator`)."""
    return load_generator(config, mesh)

  def abstract_init_args(self) -> tuple:
    """Shapes of the pretrained generator (no reading)."""
    return jax.eval_shape(self.gen.init, jax.random.PRNGKey(0))

  def init(
      self, key: jax.Array, gen_params: Params, gen_frozen: Params
  ) -> JointState:
    """A fresh hat network over the given pretrained generator."""
    k_init, k_train = jax.random.split(key)
    hat_params, _ = self.hat.init(k_init)
    return JointState(
        step=jnp.zeros((), jnp.int32),
        rng=k_train,
        hat_params=hat_params,
        hat_opt_state=self.hat_opt.init(hat_params),
        gen_params=gen_params,
        gen_frozen=gen_frozen,
    )

  def sample(
      self,
      hat_params: Params,
      gen_params: Params,
      gen_frozen: Params,
      z: jax.Array,
      key: jax.Array,
      sampler: langevin.LangevinConfig | None = None,
  ) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
    """Joint Hat EBM samples from initial latents z₀.

    Returns:
      (G(z_K), y_K, diagnostics incl. 'z': z_K); the sample is
      X = G(z_K) + y_K.
    """
    sampler = sampler or self.sampler
    k_y0, k_chain = jax.random.split(key)
    y0 = self.init_scale_res * parallel.per_example_normal(
        k_y0, (z.shape[0],) + self.image_shape
    )
    frozen_hat = jax.lax.stop_gradient(hat_params)
    frozen_gen = jax.lax.stop_gradient((gen_params, gen_frozen))
    z_k, y, x_gen, diagnostics = langevin.joint_langevin(
        lambda x: self.energy(frozen_hat, x),
        lambda z: self.generate(*frozen_gen, z),
        z,
        y0,
        k_chain,
        sampler,
    )
    return x_gen, y, {**diagnostics, 'z': z_k}

  def draw(
      self, state: JointState, z: jax.Array, key: jax.Array, source: str
  ) -> tuple[jax.Array, jax.Array]:
    """'ebm': (G(z_K), y_K) of the joint chain from z; 'generator': (G(z),
    0), the frozen generator's own samples."""
    if source == 'ebm':
      x_gen, y, _ = self.sample(
          state.hat_params, state.gen_params, state.gen_frozen, z, key
      )
      return x_gen, y
    x_gen = self.generate(state.gen_params, state.gen_frozen, z)
    return x_gen, jnp.zeros_like(x_gen)

  def chain_segment(
      self,
      state: JointState,
      z: jax.Array,
      y: jax.Array,
      key: jax.Array,
      num_steps: int,
  ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Continues a joint chain from (z, y): -> (z, y, G(z))."""
    hat = jax.lax.stop_gradient(state.hat_params)
    gen = jax.lax.stop_gradient((state.gen_params, state.gen_frozen))
    z, y, x_gen, _ = langevin.joint_langevin(
        lambda x: self.energy(hat, x),
        lambda z: self.generate(*gen, z),
        z,
        y,
        key,
        dataclasses.replace(self.sampler, num_steps=num_steps),
    )
    return z, y, x_gen

  def train_step(
      self, state: JointState, x_data: jax.Array
  ) -> tuple[JointState, dict[str, jax.Array]]:
    """One joint iteration: fresh chains, then the hat update (docs/official_release.md §4.2).

    Returns:
      (new state, metrics): 'ebm_loss', 'energy_pos', 'energy_neg',
      'hat_grad_norm' as in synthesis; 'latent_drift_norm',
      'residual_drift_norm', 'residual_clip_fraction', 'latent_norm' (mean
      ‖z_K‖, the official "Z Norm"), 'residual_norm'.
    """
    key = jax.random.fold_in(state.rng, state.step)
    k_z, k_chain, k_data = jax.random.split(key, 3)
    z0 = self.init_scale_latent * parallel.per_example_normal(
        k_z, (x_data.shape[0],) + self.latent_shape
    )
    x_gen, y, diagnostics = self.sample(
        state.hat_params, state.gen_params, state.gen_frozen, z0, k_chain
    )
    diagnostics.pop('z')
    x_pos = x_data + self.data_epsilon * parallel.per_example_normal(
        k_data, x_data.shape, x_data.dtype
    )
    hat_params, hat_opt_state, metrics = loss.hat_update(
        self.hat_opt,
        lambda p, x: self.energy(p, x),
        state.hat_params,
        state.hat_opt_state,
        x_pos,
        x_gen + y,
        self.sampler.temperature,
        self.energy_l2,
    )
    new_state = state.replace(
        step=state.step + 1, hat_params=hat_params, hat_opt_state=hat_opt_state
    )
    return new_state, {
        **metrics,
        **diagnostics,
        'residual_norm': langevin.per_image_norm(y).mean(),
    }


def load_generator(
    config: ml_collections.ConfigDict, mesh: Optional[jax.sharding.Mesh] = None
) -> tuple[Params, Params]:
  """The pretrained generator of a joint run, from `config.gen_weights`.

  `gen_weights` is either a workdir, whose newest checkpoint is read (a mode
  of `GENERATOR_SOURCES`: an 'sngan' run for refinement, an 'autoencoder'
  run for retrofit), or an exported model file (`infra.file_format`, local
  or gs://) holding a generator: any exported Hat EBM, SN-GAN or
  autoencoder, or an official generator converted with `python -m
  hatebm_jax.convert --gen`. Returns its (gen_params, gen_frozen),
  replicated over `mesh` when one is given (on any device count).

  Raises:
    FileNotFoundError: when the workdir holds no checkpoint, saying which
      stage to run first, or the file does not exist.
    ValueError: when that run is not an sngan/autoencoder run, the file
      holds no generator, or its generator differs from this config's
      (listing the keys).
  """
  if _is_file(config.gen_weights):
    return _exported_generator(config, mesh)
  ckpt = checkpoint.Checkpointer(config.gen_weights, read_only=True)
  try:
    step = ckpt.latest_step()
    if step is None:
      raise FileNotFoundError(
          f'gen_weights={config.gen_weights!r} holds no checkpoint. Train '
          'the generator first (configs/*_sngan.py for refinement, '
          'configs/*_ae.py for retrofit) with --workdir set to that path, '
          'or convert an official one (python -m hatebm_jax.convert --gen).'
      )
    source = config_base.from_saved(ckpt.restore_config(step))
    if source.mode not in GENERATOR_SOURCES:
      raise ValueError(
          f'gen_weights={config.gen_weights!r} is a '
          f'{source.mode!r} run; a joint run builds on an '
          "'sngan' or 'autoencoder' run."
      )
    _check_fits(config, source)
    mode = GENERATOR_SOURCES[source.mode].from_config(source)
    abstract = mode.abstract_state(source.seed)
    if mesh is not None:
      abstract = parallel.with_shardings(
          abstract, jax.tree.map(lambda _: parallel.replicated(mesh), abstract)
      )
    state = ckpt.restore(abstract, step)
  finally:
    ckpt.close()
  return mode.generator_networks(state)


def _is_file(path: str) -> bool:
  """Whether `gen_weights` names an exported model file, not a workdir."""
  return str(path).endswith('.hatebm') or epath.Path(path).is_file()


def _check_fits(config, source) -> None:
  """The generator keys of `source` (the generator's config) equal ours."""
  as_json = lambda c: json.loads(json.dumps(c.to_dict()))
  theirs, ours = as_json(source), as_json(config)
  mismatched = [
      f'{k}: generator {theirs[k]!r}, this config {ours[k]!r}'
      for k in GENERATOR_KEYS
      if theirs[k] != ours[k]
  ]
  if mismatched:
    raise ValueError(
        f'The pretrained generator gen_weights={config.gen_weights!r} does '
        'not fit this config: ' + '; '.join(mismatched) + '.'
    )


def _exported_generator(config, mesh) -> tuple[Params, Params]:
  """`load_generator` of an exported model file."""
  path = epath.Path(config.gen_weights)
  if not path.exists():
    raise FileNotFoundError(
        f'gen_weights={config.gen_weights!r} does not exist: give a workdir '
        'of an sngan or autoencoder run, or an exported model (.hatebm).'
    )
  saved, _, stored = file_format.decode(str(path), path.read_bytes())
  source = config_base.from_saved(saved)
  fields = ('gen_params', 'gen_frozen')
  generator = {
      name: a
      for name, a in stored.items()
      if name.startswith(tuple(f"['{f}']" for f in fields))
  }
  if not generator:
    raise ValueError(
        f'gen_weights={config.gen_weights!r} holds no generator (a '
        f'{source.mode!r} model of {sorted(stored)[:3]}...).'
    )
  _check_fits(config, source)
  abstract = dict(
      zip(
          fields,
          jax.eval_shape(
              models.create_generator(config).init, jax.random.PRNGKey(0)
          ),
      )
  )
  networks = file_format.fitted_networks(str(path), generator, abstract)
  if mesh is None:
    return networks['gen_params'], networks['gen_frozen']
  sharding = parallel.replicated(mesh)
  put = lambda a: jax.make_array_from_callback(
      a.shape, sharding, lambda index: a[index]
  )
  networks = jax.tree.map(put, networks)
  return networks['gen_params'], networks['gen_frozen']
