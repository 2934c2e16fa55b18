"""What a config trains: one model class per `config.mode`.

Every model has `init(key, *init_args)`, `train_step(state, images)`,
`draw(state, z, key, source) -> (G-part [B, S, S, C], residual y)`,
`SOURCES` (what `draw` can make; the first is the model's own samples) and
`latent_shape`; the training loop, sampling and evaluation use only these.
"""

import json
from typing import Any

import jax
import ml_collections

from hatebm_jax import ae
from hatebm_jax import checkpoint
from hatebm_jax import config_base
from hatebm_jax import gan
from hatebm_jax import joint
from hatebm_jax import parallel
from hatebm_jax import synthesis

MODEL_CLASSES = {
    'synthesis': synthesis.SynthesisModel,
    'joint': joint.JointModel,
    'sngan': gan.SNGANModel,
    'autoencoder': ae.AEModel,
}
GENERATOR_KEYS = ('gen_type', 'gen_ngf', 'gen_factor', 'state_dims',
                  'image_dims')


def build_model(config: ml_collections.ConfigDict) -> Any:
  """The model of `config.mode` (see MODEL_CLASSES)."""
  return MODEL_CLASSES[config.mode].from_config(config)


def with_defaults(saved: dict) -> ml_collections.ConfigDict:
  """A config restored from a checkpoint, with keys added since filled in
  from the defaults and JSON lists turned back into tuples."""
  saved = dict(saved)
  for key in ('image_dims', 'state_dims'):
    if key in saved:
      saved[key] = tuple(saved[key])
  config = ml_collections.ConfigDict(saved)
  for key, value in config_base.get_base_config().items():
    if key not in config:
      config[key] = value
  return config


def load_generator(config: ml_collections.ConfigDict,
                   mesh: jax.sharding.Mesh | None = None) -> tuple[Any, Any]:
  """The pretrained generator of a joint run, from `config.gen_weights`.

  Reads the newest checkpoint of that workdir (an 'sngan' run for
  refinement, an 'autoencoder' run for retrofit) and returns its
  (gen_params, gen_frozen), replicated over `mesh` when one is given (on
  any device count: Orbax reshards).

  Raises:
    FileNotFoundError: when the workdir holds no checkpoint, saying which
      stage to run first.
    ValueError: when that run is not an sngan/autoencoder run or its
      generator differs from this config's (listing the keys).
  """
  ckpt = checkpoint.Checkpointer(config.gen_weights, read_only=True)
  try:
    step = ckpt.latest_step()
    if step is None:
      raise FileNotFoundError(
          f'gen_weights={config.gen_weights!r} holds no checkpoint. Train '
          'the generator first (configs/*_sngan.py for refinement, '
          'configs/*_ae.py for retrofit) with --workdir set to that path.')
    source = with_defaults(ckpt.restore_config(step))
    if source.mode not in ('sngan', 'autoencoder'):
      raise ValueError(f'gen_weights={config.gen_weights!r} is a '
                       f'{source.mode!r} run; a joint run builds on an '
                       "'sngan' or 'autoencoder' run.")
    as_json = lambda c: json.loads(json.dumps(c.to_dict()))
    theirs, ours = as_json(source), as_json(config)
    mismatched = [f'{k}: generator run {theirs[k]!r}, this config '
                  f'{ours[k]!r}' for k in GENERATOR_KEYS
                  if theirs[k] != ours[k]]
    if mismatched:
      raise ValueError('The pretrained generator does not fit this config:\n'
                       '  ' + '\n  '.join(mismatched))
    model = build_model(source)
    abstract = jax.eval_shape(model.init, jax.random.PRNGKey(source.seed))
    if mesh is not None:
      abstract = parallel.with_shardings(abstract, jax.tree.map(
          lambda _: parallel.replicated(mesh), abstract))
    state = ckpt.restore(abstract, step)
  finally:
    ckpt.close()
  return state.gen_params, state.gen_frozen


def init_args(model: Any, config: ml_collections.ConfigDict,
              abstract: bool = False,
              mesh: jax.sharding.Mesh | None = None) -> tuple:
  """Extra arguments of `model.init` beyond the key.

  Joint runs take the pretrained generator: loaded for a new run, or only
  its shapes when restoring (the checkpoint holds it).
  """
  if not isinstance(model, joint.JointModel):
    return ()
  if abstract:
    return jax.eval_shape(model.gen.init, jax.random.PRNGKey(0))
  return load_generator(config, mesh)
