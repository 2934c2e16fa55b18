"""The official release's TensorFlow checkpoints as exported models.

The official training scripts save each network with Keras
`save_weights('<dir>/ebm_<step>.ckpt')` (`gen_<step>.ckpt`, and for the
autoencoder `gen_<epoch>.ckpt` / `inf_<epoch>.ckpt`): TensorFlow's
object-based checkpoint, `<prefix>.index` plus `<prefix>.data-*-of-*`,
whose variables are named by attribute path, e.g.
`block2/conv_1/kernel/.ATTRIBUTES/VARIABLE_VALUE`. Kernels are HWIO and
[in, out] as in Flax, so each array is copied unchanged; only names differ,
and each network's registry entry maps ours to theirs
(`models.spec.Network.official_key`; docs/official_release.md §11).

`convert` reads the checkpoints of a config's networks, checks every name
and shape, and writes the project's exported model (`infra.file_format`),
which `load_pretrained`, `sample` and `evaluate` take like an exported run.
A generator alone (`--gen`, e.g. the release's SN-GAN generators for
refinement) is written as a file that a joint run takes as `gen_weights`.
"""

import dataclasses
import os
import re
from typing import Any, Optional

from absl import logging
from etils import epath
from flax import traverse_util
import jax
import ml_collections
import numpy as np

from hatebm_jax import models
from hatebm_jax import modes
from hatebm_jax import validation
from hatebm_jax.infra import file_format
from hatebm_jax.infra import remote
from hatebm_jax.modes import base
from hatebm_jax.serving import storage

# The command-line flag of each role's checkpoint, and the state fields its
# parameters and frozen statistics go to.
FLAGS = {'hat': 'ebm', 'generator': 'gen', 'encoder': 'inf'}
FIELDS = {
    'hat': ('hat_params', None),
    'generator': ('gen_params', 'gen_frozen'),
    'encoder': ('enc_params', None),
}
VARIABLE_SUFFIX = '/.ATTRIBUTES/VARIABLE_VALUE'
# Checkpoint files of a prefix; a path given with one of these is read as
# its prefix.
PREFIX_ENDINGS = re.compile(r'\.(index|data-\d+-of-\d+)$')
STEP_IN_NAME = re.compile(r'_(\d+)\.ckpt$')
SHOWN = 4  # names listed per kind of problem in an error


def checkpoint_prefix(flag: str, path: str) -> str:
  """The checkpoint prefix of `path` (`.index` / `.data-*` dropped).

  Raises:
    FileNotFoundError: no `<prefix>.index` there, naming the flag (and,
      for a folder, the checkpoints in it).
  """
  prefix = PREFIX_ENDINGS.sub('', str(path))
  if epath.Path(prefix + '.index').exists():
    return prefix
  folder = epath.Path(prefix)
  if folder.is_dir():
    found = sorted(str(p)[: -len('.index')] for p in folder.glob('*.index'))
    raise FileNotFoundError(
        f'--{flag}={path} is a folder: give the prefix of one checkpoint in '
        f'it ({", ".join(found[:4]) or "it holds no .index file"}).'
    )
  raise FileNotFoundError(
      f'--{flag}={path}: no TensorFlow checkpoint there ({prefix}.index '
      'does not exist). Give the prefix the official code saved, e.g. '
      '.../ebm_50000.ckpt for ebm_50000.ckpt.index and '
      'ebm_50000.ckpt.data-00000-of-00001.'
  )


def read_checkpoint(prefix: str, flag: str = 'ebm') -> dict[str, np.ndarray]:
  """{variable name: array} of a Keras object-based checkpoint.

  Names lose the `/.ATTRIBUTES/VARIABLE_VALUE` ending; the object graph
  and any optimiser slot are left out. Local or gs:// (TensorFlow's file
  systems).

  Raises:
    ValueError: a checkpoint TensorFlow cannot read (a damaged or partly
      downloaded `.index` or `.data-*` file, a missing `.data-*` file),
      naming `--<flag>`, the prefix and TensorFlow's reason.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  try:
    reader = tf.train.load_checkpoint(prefix)
    return {
        name[: -len(VARIABLE_SUFFIX)]: np.asarray(reader.get_tensor(name))
        for name in reader.get_variable_to_shape_map()
        if name.endswith(VARIABLE_SUFFIX) and '.OPTIMIZER_SLOT' not in name
    }
  except Exception as e:  # pylint: disable=broad-except  (TF raises many kinds)
    reason = ' '.join(str(getattr(e, 'message', None) or e).split())
    raise ValueError(
        f'--{flag}={prefix}: TensorFlow cannot read this checkpoint '
        f'({type(e).__name__}: {reason}). A damaged or partly downloaded '
        f'{prefix}.index or .data-* file? Download them again.'
    ) from e


def describe(variables: dict[str, np.ndarray]) -> str:
  """What an official checkpoint holds, from its names: e.g. 'an official
  32 px hat network (EBMSNGAN32), ngf 256' (docs/official_release.md §11)."""
  for size, head in ((32, 'lin_5'), (64, 'lin_6'), (128, 'lin_7')):
    if f'{head}/kernel' in variables and 'conv_1/conv_1/kernel' in variables:
      ngf = variables[f'{head}/kernel'].shape[0]
      return f'an official {size} px hat network (EBMSNGAN{size}), ngf {ngf}'
  if 'lin_1/kernel' in variables:
    ngf = variables['lin_1/kernel'].shape[1] // 16
    for size, out in ((32, 'conv_5'), (64, 'conv_6'), (128, 'conv_7')):
      if f'{out}/kernel' in variables:
        return f'an official {size} px generator (GenSNGAN{size}), ngf {ngf}'
  if 'conv2latent/kernel' in variables:
    ngf = variables['conv2latent/kernel'].shape[2]
    return f'an official autoencoder encoder (InfEncoder32), ngf {ngf}'
  if 'block1/bn_2/gamma' in variables and 'conv_5/kernel' in variables:
    ngf = variables['conv_5/kernel'].shape[2]
    return f'an official retrofit decoder (GenDecoder32), ngf {ngf}'
  return 'no official network this converter knows'


@dataclasses.dataclass(frozen=True)
class Converted:
  """One role's arrays, in our parameter trees.

  Attributes:
    role: 'hat', 'generator' or 'encoder'.
    params, frozen: nested dicts of float32 numpy arrays, in the trees the
      network's `init` returns.
  """

  role: str
  params: Any
  frozen: Any


def convert_network(
    role: str,
    config: ml_collections.ConfigDict,
    variables: dict[str, np.ndarray],
    source: str,
) -> Converted:
  """Maps one checkpoint's variables onto the config's network of `role`.

  Args:
    role: 'hat', 'generator' or 'encoder'.
    config: a validated config naming the network (`ebm_type`, `gen_type`,
      `inf_type`) and its sizes.
    variables: `read_checkpoint` of the official checkpoint.
    source: how the user named it, for messages (e.g. '--ebm=PATH').

  Returns:
    The arrays, float32, in the network's parameter trees.

  Raises:
    ValueError: one line naming every kind of mismatch (missing, unexpected
      and misshapen variables, the first few of each by name) and what the
      checkpoint holds; non-finite values.
  """
  entry = models.network(role, config)
  if entry.official_key is None:
    raise ValueError(
        f'{source}: {config[models.spec.ROLE_KEYS[role]]!r} has no '
        'counterpart in the official release.'
    )
  net = models.create(role, config)
  params, frozen = jax.eval_shape(net.init, jax.random.PRNGKey(0))
  wanted = {}  # official name -> (our tree index, our path, shape)
  for tree, part in enumerate((params, frozen)):
    for path, leaf in jax.tree_util.tree_flatten_with_path(part)[0]:
      keys = tuple(k.key for k in path)
      wanted[entry.official_key(config, keys)] = (tree, keys, leaf.shape)
  missing = sorted(n for n in wanted if n not in variables)
  extra = sorted(n for n in variables if n not in wanted)
  misshapen = [
      f'{n} {list(variables[n].shape)} (expected {list(shape)})'
      for n, (_, _, shape) in sorted(wanted.items())
      if n in variables and variables[n].shape != shape
  ]
  problems = [
      f'{what} {", ".join(names[:SHOWN])}'
      + (f' and {len(names) - SHOWN} more' if len(names) > SHOWN else '')
      for what, names in (
          ('missing', missing),
          ('unexpected', extra),
          ('wrong shape', misshapen),
      )
      if names
  ]
  if problems:
    raise ValueError(
        f'{source} holds {describe(variables)}; the config needs '
        f'{entry.describe(config)} ({len(wanted)} variables): '
        f'{"; ".join(problems)}.'
    )
  flat = ({}, {})  # (params, frozen): {path tuple: array}
  for name, (tree, keys, _) in wanted.items():
    value = variables[name].astype(np.float32)
    if not np.isfinite(value).all():
      raise ValueError(f'{source}: {name} holds non-finite values.')
    flat[tree][keys] = value
  params, frozen = (traverse_util.unflatten_dict(f) for f in flat)
  return Converted(role=role, params=params, frozen=frozen)


def _fields(converted: list[Converted]) -> dict[str, Any]:
  """The state fields (e.g. 'hat_params') of converted networks."""
  fields = {}
  for c in converted:
    params_field, frozen_field = FIELDS[c.role]
    fields[params_field] = c.params
    if frozen_field:
      fields[frozen_field] = c.frozen
  return fields


def step_of(prefix: str) -> int:
  """The training step in an official name (`ebm_50000.ckpt` -> 50000);
  0 when the name has none."""
  match = STEP_IN_NAME.search(os.path.basename(prefix))
  return int(match.group(1)) if match else 0


def convert(
    config: ml_collections.ConfigDict,
    output: str,
    *,
    ebm: Optional[str] = None,
    gen: Optional[str] = None,
    inf: Optional[str] = None,
    config_name: str = 'the config',
) -> dict:
  """Converts official checkpoints into one exported model file.

  Args:
    config: the experiment's config (e.g. configs/cifar10_synth.py), whose
      network types and widths must be those of the checkpoints; not
      modified. The written config says `sample_weights='raw'` (the
      official scripts save the raw weights) and, for a joint model with
      no `gen_weights`, names the generator's checkpoint there.
    output: the `.hatebm` file to write (local or gs://); written
      atomically, and only when every check passed.
    ebm, gen, inf: checkpoint prefixes (local or gs://; a path ending in
      `.index` or `.data-*` is read as its prefix) of the hat network, the
      generator (or retrofit decoder) and the autoencoder's encoder. Give
      the networks of the config's mode (`modes.MODES`: synthesis and
      joint: ebm and gen; autoencoder: gen and inf), or `gen` alone: a
      generator file, the `gen_weights` of a joint run.
    config_name: how the user named the config, for messages.

  Returns:
    {'output', 'step', 'mode', 'networks' (the roles written), 'bytes',
    'parameters', 'generator_only'}.

  Raises:
    ValueError: an invalid config, checkpoints that are not the mode's
      networks, or a checkpoint that does not fit its network (one line,
      see `convert_network`); nothing is written.
    FileNotFoundError: a prefix with no checkpoint.
  """
  given = {
      role: path
      for role, path in (('hat', ebm), ('generator', gen), ('encoder', inf))
      if path
  }
  remote.check_reachable(output, *given.values())
  target = storage.checked_output(output)
  config = ml_collections.ConfigDict(config.to_dict())
  if config.mode == 'joint' and not config.gen_weights and gen:
    config.gen_weights = str(gen)  # where the frozen generator came from
  config.sample_weights = 'raw'
  validation.validate(config)
  mode_class = modes.lookup(config.mode)
  generator_only = set(given) == {'generator'}
  if not generator_only and set(given) != set(mode_class.networks):
    takes = ' and '.join(f'--{FLAGS[r]}' for r in mode_class.networks)
    raise ValueError(
        f'{config_name} is a model of mode {config.mode!r}, of {takes}; got '
        f'{" and ".join(f"--{FLAGS[r]}" for r in given) or "none"} (or give '
        '--gen alone for a generator file, the gen_weights of a joint run).'
    )
  prefixes = {r: checkpoint_prefix(FLAGS[r], p) for r, p in given.items()}
  converted, problems = [], []
  for role, prefix in prefixes.items():
    try:
      converted.append(
          convert_network(
              role,
              config,
              read_checkpoint(prefix, FLAGS[role]),
              f'--{FLAGS[role]}={given[role]}',
          )
      )
    except ValueError as e:
      problems.append(str(e))
  if problems:
    raise ValueError(' '.join(problems))
  fields = _fields(converted)
  if not generator_only:
    abstract = base.networks_only(modes.build(config).abstract_state(0))
    needed = set(base.network_fields(abstract))
    if needed != set(fields):
      raise ValueError(
          f'{config_name}: a model of mode {config.mode!r} also holds '
          f'{sorted(needed - set(fields))}, which the official release has '
          'not; convert --gen alone for its generator.'
      )
  flat = file_format.flat_arrays(fields)
  steps = {FLAGS[r]: step_of(p) for r, p in prefixes.items() if step_of(p)}
  if len(set(steps.values())) > 1:  # one official run saves all at a step
    logging.warning(
        'The checkpoints are of different steps (%s): from different runs '
        'or steps of one run? The file records the first.',
        ', '.join(f'--{flag} {step}' for flag, step in steps.items()),
    )
  step = next(iter(steps.values()), 0)
  data = file_format.encode(config.to_dict(), step, flat)
  storage.write_atomically(target, data, output)
  return {
      'output': str(target),
      'step': step,
      'mode': config.mode,
      'networks': sorted(fields),
      'bytes': len(data),
      'parameters': sum(a.size for a in flat.values()),
      'generator_only': generator_only,
  }
