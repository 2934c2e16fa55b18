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
checkpoint with the same seed and batch size (tests/test_pretrained.py).

File layout (msgpack map): 'format' ('hatebm_jax.pretrained'), 'version'
(2), 'step', 'config' (JSON of the run's config) and 'networks', a flat map
from key paths (`jax.tree_util.keystr`, e.g. "['hat_params']['head']
['kernel']") to arrays.
"""

import json
import os
from typing import Any, Optional
import urllib.parse
import urllib.request
import warnings

from etils import epath
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from hatebm_jax import modes
from hatebm_jax import sampling

FORMAT = 'hatebm_jax.pretrained'
# Version 1 stored the networks as nested dicts, which cannot hold the
# spectral-norm statistics' tuple keys; version 2 stores a flat
# {key path: array} map (`jax.tree_util.keystr`). Both are read.
VERSION = 2
SUFFIX = '.hatebm'
NETWORK_SUFFIXES = ('_params', '_frozen', '_stats')
URL_SCHEMES = ('http://', 'https://')
# Float images beyond ±FLOAT_IMAGE_BOUND are on another scale (0..255, ...).
FLOAT_IMAGE_BOUND = 2.0


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
  """The network fields of a training state or a `Networks`."""
  if isinstance(state, Networks):
    return state.fields()
  return {name: getattr(state, name) for name in sorted(vars(state))
          if name.endswith(NETWORK_SUFFIXES)}


def flat_arrays(fields: dict[str, Any]) -> dict[str, Any]:
  """{key path: leaf} of network fields, e.g. "['hat_params']['head']
  ['kernel']" (`jax.tree_util.keystr`); the export file's layout."""
  return {jax.tree_util.keystr(path): leaf for path, leaf in
          jax.tree_util.tree_flatten_with_path(fields)[0]}


def _non_finite(flat: dict[str, Any]) -> list[str]:
  return [name for name, a in flat.items()
          if np.issubdtype(np.asarray(a).dtype, np.inexact)
          and not np.isfinite(np.asarray(a)).all()]


def is_exported(path: str) -> bool:
  """Whether `path` names an exported model rather than a workdir: an
  http(s) URL, a name ending in `.hatebm`, or an existing file."""
  path = _local(str(path))
  if path.startswith(URL_SCHEMES) or path.endswith(SUFFIX):
    return True
  try:
    return epath.Path(path).is_file()
  except Exception:  # pylint: disable=broad-except  (unreachable gs://)
    return False


def export(workdir: str, output: str, step: Optional[int] = None) -> dict:
  """Writes the networks and config of a training checkpoint to `output`.

  Args:
    workdir: the training run's folder (local or gs://), or an exported
      model (re-exported as it is, e.g. to copy it to gs://).
    output: the file to write (local or gs://); written to a temporary
      name and renamed over any existing file, so a reader never sees half
      a file.
    step: checkpoint step; None for the latest.

  Returns:
    {'output', 'step', 'mode', 'bytes', 'parameters'}.

  Raises:
    FileNotFoundError: the workdir holds no checkpoint (of `step`).
    ValueError: `output` is empty, a URL, an existing folder or under a
      file; the networks hold non-finite values.
  """
  if not output:
    raise ValueError('--output is empty: give the file to write, e.g. '
                     f'/tmp/model{SUFFIX} or gs://BUCKET/model{SUFFIX}.')
  if str(output).startswith(URL_SCHEMES):
    raise ValueError(f'--output={output!r}: export writes a local path or '
                     'gs://; upload the file to a web server yourself.')
  target = epath.Path(output)
  if target.is_dir():
    raise ValueError(f'--output={output!r} is a folder: give a file name, '
                     f'e.g. {output.rstrip("/")}/model{SUFFIX}.')
  run = sampling.load_run(workdir, step)
  flat = flat_arrays(jax.device_get(network_fields(run.state)))
  if not flat:
    raise ValueError(f'{workdir} holds no networks to export.')
  bad = _non_finite(flat)
  if bad:
    raise ValueError(f'{workdir} step {run.step}: {", ".join(bad[:5])} hold '
                     'non-finite values; export an earlier step (--step).')
  payload = {'format': FORMAT, 'version': VERSION, 'step': run.step,
             'config': json.dumps(run.config.to_dict()), 'networks': flat}
  data = flax.serialization.msgpack_serialize(payload)
  try:
    target.parent.mkdir(parents=True, exist_ok=True)
  except (FileExistsError, NotADirectoryError) as e:
    raise ValueError(f'--output={output!r}: a part of {target.parent} is a '
                     'file, not a folder.') from e
  temporary = target.parent / f'.{target.name}.tmp'
  try:
    temporary.write_bytes(data)
    temporary.replace(target)  # an existing file is overwritten
  finally:
    if temporary.exists():
      temporary.unlink()
  return {'output': str(target), 'step': run.step, 'mode': run.config.mode,
          'bytes': len(data),
          'parameters': sum(np.size(a) for a in flat.values())}


def _local(path: str) -> str:
  """`path` with a file:// prefix removed."""
  return path[len('file://'):] if path.startswith('file://') else path


def _read_bytes(path: str) -> bytes:
  path = _local(path)
  if not path:
    raise ValueError('The model path is empty: give a .hatebm file, an '
                     'https:// URL or a gs:// path.')
  if path.startswith(URL_SCHEMES):
    try:
      with urllib.request.urlopen(path, timeout=60) as response:
        return response.read()
    except OSError as e:
      raise FileNotFoundError(f'Cannot download the model {path}: {e}') from e
  target = epath.Path(path)
  if target.is_dir():
    workdir, kind = path, 'a folder'
    if (target / 'checkpoints').exists():
      kind = 'a training workdir'
    elif target.name == 'checkpoints':
      workdir, kind = str(target.parent), 'a checkpoints folder'
    raise ValueError(
        f'{path} is {kind}, not an exported model. Export one with '
        f'python -m hatebm_jax.export --workdir={workdir} '
        f'--output=model{SUFFIX} (the sample and evaluate entry points also '
        'take a workdir).')
  if not target.exists():
    raise FileNotFoundError(
        f'No exported model at {path}. Export one from a training run with '
        f'python -m hatebm_jax.export --workdir=<run> --output={path}')
  return target.read_bytes()


def _parse(path: str, data: bytes) -> tuple[dict, int, dict]:
  """(config dict, step, {key path: array}) of an export file's bytes."""
  try:
    payload = flax.serialization.msgpack_restore(data)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f'{path} is not an exported hatebm_jax model '
                     f'(unreadable: {e}).') from e
  if not isinstance(payload, dict) or payload.get('format') != FORMAT:
    raise ValueError(f'{path} is not an exported hatebm_jax model (no '
                     f'{FORMAT!r} header).')
  version = payload.get('version')
  if isinstance(version, bool):
    version = None
  if isinstance(version, int) and version > VERSION:
    raise ValueError(f'{path} has format version {version}; this '
                     f'hatebm_jax reads up to {VERSION}: update it.')
  try:
    if version not in range(1, VERSION + 1):
      raise ValueError(f'version {version!r}')
    config = json.loads(payload['config'])
    step = payload['step']
    networks = payload['networks']
    if not isinstance(config, dict) or not isinstance(networks, dict):
      raise TypeError('config and networks must be maps')
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
      raise TypeError(f'step {step!r}')
    flat = flat_arrays(networks) if version == 1 else networks
    if not all(isinstance(a, np.ndarray) for a in flat.values()):
      raise TypeError('networks must hold arrays')
  except (KeyError, TypeError, ValueError) as e:
    raise ValueError(f'{path} is a damaged exported model ({e}).') from e
  return config, step, flat


def load(path: str, **overrides) -> sampling.Run:
  """Loads an exported model as a `sampling.Run` (state: `Networks`).

  Args:
    path: local path, gs:// or http(s):// URL of a `.hatebm` file.
    **overrides: sampler settings (`sampling.SAMPLER_SETTINGS`:
      `mcmc_steps`, `mcmc_temp`, `epsilon`, ...); None keeps the model's
      own.

  Raises:
    FileNotFoundError: nothing at `path`, or a URL that cannot be read.
    ValueError: an empty path, a folder, not an exported model, a newer
      format, a damaged file (missing entries, networks that do not fit the
      stored config, non-finite values), or invalid overrides.
  """
  path = str(path)
  config, step, stored = _parse(path, _read_bytes(path))
  try:
    config = sampling.override(config)
  except ValueError as e:
    raise ValueError(f'{path}: its config does not fit this hatebm_jax (a '
                     f'newer version, or a damaged file): {e}') from e
  config, model = sampling.configure(config.to_dict(), **overrides)
  expected = network_fields(jax.eval_shape(
      model.init, jax.random.PRNGKey(config.seed),
      *modes.init_args(model, config, abstract=True)))
  paths, treedef = jax.tree_util.tree_flatten_with_path(expected)
  wanted = {jax.tree_util.keystr(p): a for p, a in paths}
  problems = [f'{name} missing' for name in wanted if name not in stored]
  problems += [f'{name} unexpected' for name in stored if name not in wanted]
  problems += [
      f'{name} {stored[name].dtype}{list(stored[name].shape)}, expected '
      f'{a.dtype}{list(a.shape)}' for name, a in wanted.items()
      if name in stored and (stored[name].shape, stored[name].dtype) !=
      (a.shape, a.dtype)]
  if problems:
    raise ValueError(f'{path}: the stored networks do not fit the stored '
                     f'config (damaged or hand-edited file): '
                     f'{"; ".join(problems[:5])}.')
  bad = _non_finite(stored)
  if bad:
    raise ValueError(f'{path}: {", ".join(bad[:5])} hold non-finite values.')
  networks = jax.tree_util.tree_unflatten(
      treedef, [jnp.asarray(stored[name]) for name in wanted])
  return sampling.Run(config=config, model=model, state=Networks(networks),
                      step=step)


class Pretrained:
  """An exported model ready to sample from and to score images with.

  Attributes:
    run: the `sampling.Run` (config, model, networks as state, step).
  """

  def __init__(self, run: sampling.Run):
    self.run = run
    self._variants = {}  # sampler settings -> Pretrained (compiled once)

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
    """The same networks with other sampler settings
    (`sampling.SAMPLER_SETTINGS`): `mcmc_steps` (K), `mcmc_temp` (T),
    `epsilon` (ε), `tau_res`, `init_scale_res`, `clip_langevin_grad_res`,
    `ddls_steps`, ...; None keeps this model's value.

    The result is kept per setting, so calling again with the same
    settings reuses its compiled sampler; no settings (or this model's
    own) return this model.

    Raises:
      ValueError: a name that is not a sampler setting, a value of the
        wrong type or an invalid value (`config_base.validate`).
    """
    if all(v is None for v in settings.values()):
      return self
    config = sampling.override(self.config.to_dict(), **settings)
    key = tuple(config[k] for k in sampling.SAMPLER_SETTINGS)
    if key == tuple(self.config[k] for k in sampling.SAMPLER_SETTINGS):
      return self
    if key not in self._variants:  # the model is built (and compiled) once
      self._variants[key] = Pretrained(sampling.Run(
          config=config, model=modes.build_model(config),
          state=self.run.state, step=self.step))
    return self._variants[key]

  def sample(self, num_samples: int, seed: int = 0, batch_size: int = 64,
             source: Optional[str] = None, **settings) -> np.ndarray:
    """uint8 samples [N, S, S, C] (see `sampling.draw_images`).

    Args:
      num_samples: N ≥ 1.
      seed: seed of latents, y₀ and chain noise.
      batch_size: chains per compiled call. The images depend on it (each
        batch draws its latents together), and N below it still runs one
        whole batch. The same seed and batch size give the same images as
        `python -m hatebm_jax.sample --seed --batch_size` on the training
        checkpoint.
      source: 'ebm' (default for Hat EBMs), 'generator' (G(z) alone), ...
      **settings: sampler settings for this call (see `with_settings`).

    Raises:
      ValueError: see `with_settings` and `sampling.draw_images`.
    """
    return sampling.draw_images(self.with_settings(**settings).run,
                                num_samples, batch_size, seed, source)

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
    model = self.with_settings(**settings)
    net, config, state = model.run.model, model.config, model.run.state
    if not (hasattr(net, 'chain_segment') and hasattr(net, 'energy')):
      raise ValueError(f'a {config.mode!r} model has no hat-network chain.')
    sampling.check_integer('num_chains', num_chains, minimum=1)
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
      images: [N, S, S, C] with N ≥ 1: uint8 (0..255), or float in
        [-1, 1]. Floats up to ±2 are taken (unclipped Langevin states X
        leave [-1, 1] a little); beyond that, and other integer types, are
        refused. Floats all within [0, 1] get a warning (map [0, 1] images
        to [-1, 1] first: 2x − 1).
      batch_size: images per compiled call, ≥ 1.

    Returns:
      float32 [N] energies.

    Raises:
      ValueError: for a model without a hat network, images of another
        shape, dtype or range, non-finite values, or batch_size < 1.
    """
    model = self.run.model
    if not hasattr(model, 'energy'):
      raise ValueError(f'a {self.config.mode!r} model has no hat network.')
    sampling.check_integer('batch_size', batch_size, minimum=1)
    images = np.asarray(images)
    shape = tuple(self.config.image_dims)
    if images.ndim != 4 or images.shape[1:] != shape or not len(images):
      raise ValueError(f'images of shape {images.shape}; this model takes '
                       f'[N, {", ".join(map(str, shape))}] with N >= 1.')
    if images.dtype == np.uint8:
      images = images.astype(np.float32) / 127.5 - 1.0
    elif jnp.issubdtype(images.dtype, jnp.floating):  # bfloat16 included
      images = images.astype(np.float32)
      if not np.isfinite(images).all():
        raise ValueError('images hold non-finite values.')
      low, high = float(images.min()), float(images.max())
      if low < -FLOAT_IMAGE_BOUND or high > FLOAT_IMAGE_BOUND:
        raise ValueError(f'float images in [{low:.4g}, {high:.4g}]; this '
                         'model takes [-1, 1] (or uint8 0..255).')
      if low >= 0.0 and high > 0.0:  # not all-zero: mid-grey is valid
        warnings.warn(f'every pixel is in [0, 1] ([{low:.3g}, {high:.3g}]): '
                      'the model takes [-1, 1]; map [0, 1] images with '
                      '2x - 1.', stacklevel=2)
    else:
      raise ValueError(f'images of dtype {images.dtype}; give uint8 (0..255) '
                       'or float in [-1, 1].')
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
  beside an exported `<name>.hatebm`, or in the current folder for a URL
  and for the models shipped inside the package.
  """
  source = str(source)
  if not is_exported(source):
    return epath.Path(source) / 'eval' / f'step_{step}'
  if source.startswith(URL_SCHEMES):
    file_name, folder = urllib.parse.urlparse(source).path, epath.Path('.')
  else:
    file_name, folder = source, epath.Path(source).parent
    package = os.path.dirname(os.path.abspath(__file__))
    if (not source.startswith('gs://') and
        os.path.abspath(source).startswith(package + os.sep)):
      folder = epath.Path('.')
  name = file_name.rstrip('/').rsplit('/', 1)[-1].removesuffix(SUFFIX)
  return folder / f'{name or "model"}_eval' / f'step_{step}'
