"""Exported pretrained models: networks and config in one file.

A training checkpoint holds the whole state (networks, Adam moments, replay
bank, step, RNG key) in an Orbax folder. An exported model is what sampling
and evaluation need and nothing more: the network parameters and frozen
statistics of a run, the run's config (to rebuild the networks and the
sampler) and its step, in one msgpack file (`flax.serialization`), by
convention `<name>.hatebm`. It loads from a local path, gs:// or https://.

  python -m hatebm_jax.export --workdir=/tmp/hatebm_fmnist \
      --output=/tmp/fmnist_synth.hatebm

  model = hatebm_jax.load_pretrained('/tmp/fmnist_synth.hatebm')
  images = model.sample(16, seed=0)               # uint8 [16, 32, 32, 1]

Sampling an exported model gives the same images as sampling its training
checkpoint with the same seed (tests/test_pretrained.py).
"""

import json
from typing import Any, Optional
import urllib.request

from etils import epath
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from hatebm_jax import modes
from hatebm_jax import sampling

FORMAT = 'hatebm_jax.pretrained'
VERSION = 1
SUFFIX = '.hatebm'
NETWORK_SUFFIXES = ('_params', '_frozen', '_stats')


@jax.tree_util.register_pytree_node_class
class Networks:
  """The networks of a run: a pytree with one attribute per state field
  that holds network parameters or statistics (`hat_params`,
  `gen_params`, `gen_frozen`, `disc_params`, `disc_stats`, `enc_params`).

  Models' sampling methods read only these fields, so a `Networks` stands
  in for the training state there.
  """

  def __init__(self, fields: dict[str, Any]):
    self._fields = dict(fields)

  def __getattr__(self, name: str) -> Any:
    fields = self.__dict__.get('_fields', {})
    if name in fields:
      return fields[name]
    raise AttributeError(f'{name!r}: an exported model holds only the '
                         f'networks {sorted(fields)}.')

  def fields(self) -> dict[str, Any]:
    return dict(self._fields)

  def tree_flatten(self):
    keys = tuple(sorted(self._fields))
    return [self._fields[k] for k in keys], keys

  @classmethod
  def tree_unflatten(cls, keys, children):
    return cls(dict(zip(keys, children)))


def network_fields(state: Any) -> dict[str, Any]:
  """The network fields of a training state (see `Networks`)."""
  return {name: getattr(state, name) for name in sorted(vars(state))
          if name.endswith(NETWORK_SUFFIXES)}


def is_exported(path: str) -> bool:
  """Whether `path` names an exported model rather than a workdir: an
  http(s) URL, a name ending in `.hatebm`, or an existing file."""
  path = str(path)
  if path.startswith(('http://', 'https://')) or path.endswith(SUFFIX):
    return True
  try:
    return epath.Path(path).is_file()
  except Exception:  # pylint: disable=broad-except  (unreachable gs://)
    return False


def export(workdir: str, output: str, step: Optional[int] = None) -> dict:
  """Writes the networks and config of a training checkpoint to `output`.

  Args:
    workdir: the training run's folder (local or gs://).
    output: the file to write (local or gs://); written to a temporary
      name and renamed, so a reader never sees half a file.
    step: checkpoint step; None for the latest.

  Returns:
    {'output', 'step', 'mode', 'bytes', 'parameters'}.

  Raises:
    FileNotFoundError: the workdir holds no checkpoint.
    ValueError: `output` is empty or an existing folder.
  """
  if not output:
    raise ValueError('--output is empty: give the file to write, e.g. '
                     f'/tmp/model{SUFFIX} or gs://BUCKET/model{SUFFIX}.')
  target = epath.Path(output)
  if target.is_dir():
    raise ValueError(f'--output={output!r} is a folder: give a file name, '
                     f'e.g. {output.rstrip("/")}/model{SUFFIX}.')
  run = sampling.load_run(workdir, step)
  networks = jax.device_get(network_fields(run.state))
  payload = {'format': FORMAT, 'version': VERSION, 'step': run.step,
             'config': json.dumps(run.config.to_dict()),
             'networks': networks}
  data = flax.serialization.msgpack_serialize(payload)
  target.parent.mkdir(parents=True, exist_ok=True)
  temporary = target.parent / f'.{target.name}.tmp'
  temporary.write_bytes(data)
  temporary.rename(target)
  return {'output': str(target), 'step': run.step, 'mode': run.config.mode,
          'bytes': len(data), 'parameters': sum(
              np.size(a) for a in jax.tree.leaves(networks))}


def _read_bytes(path: str) -> bytes:
  if path.startswith(('http://', 'https://')):
    try:
      with urllib.request.urlopen(path, timeout=60) as response:
        return response.read()
    except OSError as e:
      raise FileNotFoundError(f'Cannot download the model {path}: {e}') from e
  target = epath.Path(path)
  if not target.exists():
    raise FileNotFoundError(
        f'No exported model at {path}. Export one from a training run with '
        f'python -m hatebm_jax.export --workdir=<run> --output={path}')
  return target.read_bytes()


def load(path: str, **overrides) -> sampling.Run:
  """Loads an exported model as a `sampling.Run` (state: `Networks`).

  Args:
    path: local path, gs:// or http(s):// URL of a `.hatebm` file.
    **overrides: sampler settings by config name (`mcmc_steps`,
      `mcmc_temp`, `epsilon`, ...; see `sampling.load_run`); None keeps
      the model's own.

  Raises:
    FileNotFoundError: nothing at `path`.
    ValueError: not an exported model, a newer format, networks that do
      not fit the stored config, or invalid overrides.
  """
  data = _read_bytes(str(path))
  try:
    payload = flax.serialization.msgpack_restore(data)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f'{path} is not an exported hatebm_jax model '
                     f'(unreadable: {e}).') from e
  if not isinstance(payload, dict) or payload.get('format') != FORMAT:
    raise ValueError(f'{path} is not an exported hatebm_jax model (no '
                     f'{FORMAT!r} header).')
  if payload.get('version', 0) > VERSION:
    raise ValueError(f'{path} has format version {payload["version"]}; this '
                     f'hatebm_jax reads up to {VERSION}: update it.')
  config, model = sampling.configure(json.loads(payload['config']),
                                     **overrides)
  expected = network_fields(jax.eval_shape(
      model.init, jax.random.PRNGKey(config.seed),
      *modes.init_args(model, config, abstract=True)))
  stored = payload['networks']
  shapes = lambda t: jax.tree.map(lambda a: (tuple(a.shape), str(a.dtype)), t)
  if shapes(stored) != shapes(expected):
    raise ValueError(f'{path}: the stored networks do not fit the stored '
                     'config (damaged or hand-edited file).')
  networks = Networks(jax.tree.map(jnp.asarray, stored))
  return sampling.Run(config=config, model=model, state=networks,
                      step=int(payload['step']))


class Pretrained:
  """An exported model ready to sample from and to score images with.

  Attributes:
    run: the `sampling.Run` (config, model, networks as state, step).
  """

  def __init__(self, run: sampling.Run):
    self.run = run

  @property
  def config(self):
    return self.run.config

  @property
  def step(self) -> int:
    return self.run.step

  def __repr__(self) -> str:
    sizes = {k: sum(np.size(a) for a in jax.tree.leaves(v))
             for k, v in self.run.state.fields().items()}
    return (f'Pretrained({self.config.mode}, {self.config.data_type} '
            f'{tuple(self.config.image_dims)}, step {self.step}, '
            f'{sizes})')

  def with_settings(self, **settings) -> 'Pretrained':
    """The same networks with other sampler settings, by config name:
    `mcmc_steps` (K), `mcmc_temp` (T), `epsilon` (ε), `tau_res`,
    `init_scale_res`, `clip_langevin_grad_res`, `ddls_steps`, ...

    Raises:
      ValueError: an invalid value (`config_base.validate`).
    """
    config, model = sampling.configure(self.config.to_dict(), **settings)
    return Pretrained(sampling.Run(config=config, model=model,
                                   state=self.run.state, step=self.step))

  def sample(self, num_samples: int, seed: int = 0, batch_size: int = 64,
             source: Optional[str] = None, **settings) -> np.ndarray:
    """uint8 samples [N, S, S, C] (see `sampling.draw_images`).

    Args:
      num_samples: N ≥ 1.
      seed: seed of latents, y₀ and chain noise; the same seed gives the
        same images as `python -m hatebm_jax.sample --seed` on the
        training checkpoint.
      batch_size: chains per compiled call.
      source: 'ebm' (default for Hat EBMs), 'generator' (G(z) alone), ...
      **settings: sampler settings for this call (see `with_settings`).
    """
    model = self.with_settings(**settings) if settings else self
    return sampling.draw_images(model.run, num_samples, batch_size, seed,
                                source)

  def langevin_path(self, num_chains: int = 8, seed: int = 0,
                    **settings) -> dict[str, np.ndarray]:
    """Chains followed step by step (the paper's Figure 3).

    Latents z ~ `init_scale_latent`·N(0, I) and y₀ = `init_scale_res`·N(0,
    I) from `seed`; then K Langevin steps (`model.chain_segment`, one step
    per call, so the noise differs from a one-shot chain with the same
    seed), recording the state after each.

    Args:
      num_chains: N ≥ 1 chains.
      seed: seed of z, y₀ and the noise.
      **settings: sampler settings (see `with_settings`).

    Returns:
      'steps' int [K+1] (0..K); 'x_gen' G(z_k) and 'y' y_k, float32
      [K+1, N, S, S, C] (X = x_gen + y, unclipped); 'energy' H(X_k)
      float32 [K+1, N].

    Raises:
      ValueError: for a model without a Langevin chain on a hat network.
    """
    model = self.with_settings(**settings) if settings else self
    net, config, state = model.run.model, model.config, model.run.state
    if not (hasattr(net, 'chain_segment') and hasattr(net, 'energy')):
      raise ValueError(f'a {config.mode!r} model has no hat-network chain.')
    if num_chains < 1:
      raise ValueError(f'num_chains={num_chains} must be >= 1.')
    k_z, k_y0, k_chain = jax.random.split(jax.random.PRNGKey(seed), 3)
    z = config.init_scale_latent * jax.random.normal(
        k_z, (num_chains,) + tuple(net.latent_shape))
    steps = list(range(config.mcmc_steps + 1))
    path = sampling.chain_path(net, state, z, k_y0, k_chain, steps,
                               config.init_scale_res)
    x_gen = np.stack([x for x, _ in path])
    y = np.stack([y for _, y in path])
    energy = sampling.jitted(net, 'energy')
    return {'steps': np.asarray(steps), 'x_gen': x_gen, 'y': y,
            'energy': np.stack([np.asarray(energy(state.hat_params, x))
                                for x in x_gen + y])}

  def energy(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """H(x) of images: lower is more probable under the model.

    Args:
      images: [N, S, S, C], uint8 (0..255) or float in [-1, 1].
      batch_size: images per compiled call.

    Returns:
      float32 [N] energies.

    Raises:
      ValueError: for a model without a hat network, or images of another
        shape.
    """
    model = self.run.model
    if not hasattr(model, 'energy'):
      raise ValueError(f'a {self.config.mode!r} model has no hat network.')
    images = np.asarray(images)
    shape = tuple(self.config.image_dims)
    if images.ndim != 4 or images.shape[1:] != shape:
      raise ValueError(f'images of shape {images.shape}; this model takes '
                       f'[N, {", ".join(map(str, shape))}].')
    if images.dtype == np.uint8:
      images = images.astype(np.float32) / 127.5 - 1.0
    energy = sampling.jitted(model, 'energy')
    hat = self.run.state.hat_params
    return np.concatenate([
        np.asarray(energy(hat, jnp.asarray(images[i:i + batch_size],
                                           jnp.float32)))
        for i in range(0, len(images), batch_size)])


def load_pretrained(path: str, **settings) -> Pretrained:
  """Loads an exported model (local path, gs:// or https://).

  Args:
    path: a `.hatebm` file written by `python -m hatebm_jax.export`.
    **settings: sampler settings (see `Pretrained.with_settings`).

  Raises:
    FileNotFoundError, ValueError: see `load`.
  """
  return Pretrained(load(path, **settings))


def eval_folder(source: str, step: int) -> epath.Path:
  """Default output folder of sampling and evaluation.

  `<workdir>/eval/step_<step>` for a training run; `<name>_eval/step_<step>`
  beside an exported `<name>.hatebm` (in the current folder for a URL).
  """
  source = str(source)
  if not is_exported(source):
    return epath.Path(source) / 'eval' / f'step_{step}'
  name = source.rstrip('/').rsplit('/', 1)[-1].removesuffix(SUFFIX)
  folder = (epath.Path('.') if source.startswith(('http://', 'https://'))
            else epath.Path(source).parent)
  return folder / f'{name}_eval' / f'step_{step}'
