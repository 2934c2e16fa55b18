"""A trained run, restored for sampling: from a checkpoint or an export.

`load_run(source)` takes a training workdir (its newest checkpoint, or
`step`) or an exported model (`file_format`: a `.hatebm` file, local,
gs:// or http(s)://) and returns a `Run`: the config with sampler
overrides, its mode and the state. A run restored from an exported file
has a `networks_only` state (`modes.base`): the network fields, None
elsewhere; sampling reads nothing else. `export` writes such a file.
Where a run keeps moving averages of its weights, `config.sample_weights`
chooses which weights the `Run` holds (`base.for_sampling`); an exported
file holds the ones chosen when it was written.
"""

import dataclasses
from typing import Any, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hatebm_jax.infra import checkpoint
from hatebm_jax.infra import remote
from hatebm_jax.modes import base
from hatebm_jax.infra import file_format
from hatebm_jax.serving import registry
from hatebm_jax.serving import settings
from hatebm_jax.serving import storage


@dataclasses.dataclass(frozen=True)
class Run:
  """A restored training run.

  Attributes:
    config: its config, with sampler overrides.
    mode: its `hatebm_jax.modes` mode, built from `config`.
    state: the training state with the weights sampling uses
      (`base.for_sampling`: averages swapped in or not, per
      `config.sample_weights`), or `networks_only` of it.
    step: the checkpoint's step.
  """

  config: ml_collections.ConfigDict
  mode: base.Mode
  state: Any
  step: int


def load_run(source: str, step: Optional[int] = None, **overrides) -> Run:
  """Restores a checkpoint of any mode, or an exported model.

  Args:
    source: the training run's folder (local or gs://), or an exported
      model (a `.hatebm` file, local, gs:// or http(s)://).
    step: checkpoint step, or None for the latest (None for an exported
      model, which holds one step).
    **overrides: sampler settings (`settings.SAMPLER_SETTINGS`, e.g.
      `mcmc_steps`, `mcmc_temp`, `epsilon`); None keeps the run's own.

  Raises:
    FileNotFoundError: when the workdir holds no checkpoint, or none of
      `step` (the message lists the steps it holds); nothing at an
      exported model's path.
    ValueError: for invalid overrides (`validation.validate`), before any
      compute; a damaged exported model.
  """
  remote.check_reachable(source)
  if storage.is_exported(source):
    if step is not None:
      raise ValueError(
          f'step={step}: an exported model ({source}) holds '
          'one step; export another step with '
          'python -m hatebm_jax.export --step=N.'
      )
    return load_exported(str(source), **overrides)
  ckpt = checkpoint.Checkpointer(source, read_only=True)
  try:
    steps = ckpt.all_steps()
    if not steps:
      raise FileNotFoundError(
          f'No checkpoint in {ckpt.directory}'
          f'{registry.did_you_mean(str(source))}: train first with python '
          '-m hatebm_jax.main.'
      )
    step = steps[-1] if step is None else step
    if step not in steps:
      raise FileNotFoundError(
          f'No checkpoint of step {step} in '
          f'{ckpt.directory}; it holds steps {steps}.'
      )
    config, mode = settings.configure(ckpt.restore_config(step), **overrides)
    state = ckpt.restore(mode.abstract_state(config.seed), step)
  finally:
    ckpt.close()
  state = base.for_sampling(state, config.sample_weights)
  return Run(config=config, mode=mode, state=state, step=int(step))


def load_exported(path: str, **overrides) -> Run:
  """`load_run` of an exported model (see `file_format`): its state is
  `networks_only`.

  Raises:
    FileNotFoundError, ValueError: see `load_run`.
  """
  config, step, stored = file_format.decode(path, storage.read_bytes(path))
  try:
    config = settings.override(config)
  except ValueError as e:
    raise ValueError(
        f'{path}: its config does not fit this hatebm_jax (a '
        f'newer version, or a damaged file): {e}'
    ) from e
  written = config.sample_weights
  config, mode = settings.configure(config.to_dict(), **overrides)
  abstract = mode.abstract_state(config.seed)
  if base.averages(abstract) and config.sample_weights != written:
    raise ValueError(
        f'sample_weights={config.sample_weights!r}: {path} holds the '
        f"{written!r} weights only (it was exported so); the run's "
        'checkpoints hold both.'
    )
  abstract = base.networks_only(abstract)
  held = {name.split("'")[1] for name in stored}
  if held == {'gen_params', 'gen_frozen'} < set(base.network_fields(abstract)):
    raise ValueError(
        f'{path} holds a generator only (python -m hatebm_jax.convert '
        '--gen): it is not sampled on its own; train a refinement or '
        f'retrofit run on it with --config.gen_weights={path}.'
    )
  networks = file_format.fitted_networks(
      path, stored, base.network_fields(abstract)
  )
  state = abstract.replace(**jax.tree.map(jnp.asarray, networks))
  return Run(config=config, mode=mode, state=state, step=step)


def export(source: str, output: str, step: Optional[int] = None) -> dict:
  """Writes the networks and config of a training checkpoint to `output`.

  Args:
    source: the training run's folder (local or gs://), or an exported
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
  remote.check_reachable(output)
  target = storage.checked_output(output)
  run = load_run(source, step)
  flat = file_format.flat_arrays(jax.device_get(base.network_fields(run.state)))
  if not flat:
    raise ValueError(f'{source} holds no networks to export.')
  bad = file_format.non_finite(flat)
  if bad:
    raise ValueError(
        f'{source} step {run.step}: {", ".join(bad[:5])} hold '
        'non-finite values; export an earlier step (--step).'
    )
  data = file_format.encode(run.config.to_dict(), run.step, flat)
  storage.write_atomically(target, data, output)
  return {
      'output': str(target),
      'step': run.step,
      'mode': run.config.mode,
      'bytes': len(data),
      'parameters': sum(np.size(a) for a in flat.values()),
  }
