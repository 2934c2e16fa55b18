"""Checkpoints of the whole training state, through Orbax only.

`<workdir>/checkpoints/<step>/` holds the state pytree (networks, optimiser
states, replay bank, step, RNG key), the config as JSON and, for runs that
read their data through grain, each process's data iterator state
(`data/process_<i>-of-<n>.json`, grain's Orbax handler). Orbax writes
each checkpoint to a temporary folder and renames it when complete, so an
interrupted save is never restored; saving is asynchronous.
"""

import contextlib
import json
from typing import Any, Optional

from etils import epath
import grain
import jax
import ml_collections
import orbax.checkpoint as ocp


class Checkpointer:
  """Saves and restores training states under `<workdir>/checkpoints`."""

  def __init__(
      self, workdir: str, max_to_keep: int = 3, read_only: bool = False
  ):
    """Opens the checkpoint folder (creating it unless `read_only`).

    Args:
      workdir: the run's folder, a local path or gs://.
      max_to_keep: number of most recent checkpoints kept.
      read_only: only read (sampling, a joint run's pretrained generator):
        nothing is created, saved or deleted.
    """
    self.directory = epath.Path(workdir) / 'checkpoints'
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        create=not read_only,
        enable_async_checkpointing=True,
    )
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=options,
        item_handlers={
            'state': ocp.StandardCheckpointHandler(),
            'config': ocp.JsonCheckpointHandler(),
            'data': grain.checkpoint.CheckpointHandler(),
        },
    )

  def latest_step(self) -> Optional[int]:
    """Step of the newest complete checkpoint, or None.

    Unfinished saves (a crash or `kill -9` while writing) are not
    checkpoints: Orbax writes into a temporary folder and renames it when
    complete (on GCS: marks it complete with a commit file)."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """Steps of all complete checkpoints, oldest first."""
    return sorted(self._manager.all_steps())

  def reached_preemption(self, step: int) -> bool:
    """Multi-process jobs: True at the step all processes stop at after
    any of them got SIGTERM (JAX's preemption service, through Orbax);
    always False in a single process."""
    return self._manager.reached_preemption(step)

  def structure_mismatches(self, abstract_state: Any, step: int) -> list[str]:
    """Entries whose path, shape or dtype differ between the checkpoint at
    `step` and `abstract_state` (a pytree of arrays or ShapeDtypeStructs),
    as 'path: checkpoint float32[3, 3, 1, 8], config float32[3, 3, 1, 16]'
    lines ('missing' for an absent entry); [] when they fit.

    Raises:
      IOError: when the checkpoint's metadata cannot be read.
    """
    with self._reading(step):
      saved = _flat_shapes(self._manager.item_metadata(step)['state'])
      if not saved:
        raise ValueError('its state metadata is missing')
    wanted = _flat_shapes(abstract_state)
    lines = []
    # In the state's order (networks before optimiser states), then entries
    # only the checkpoint has.
    for path in list(wanted) + [p for p in saved if p not in wanted]:
      a, b = saved.get(path, 'missing'), wanted.get(path, 'missing')
      if a != b:
        lines.append(f'{path}: checkpoint {a}, config {b}')
    return lines

  def save(
      self,
      step: int,
      state: Any,
      config: ml_collections.ConfigDict,
      data_state: Optional[dict[str, Any]] = None,
  ) -> None:
    """Starts an asynchronous save of `state` and `config` at `step`, with
    this process's data iterator state (a JSON-able dict, e.g. grain's
    `get_state()` taken at `step`) when given."""
    items = dict(
        state=ocp.args.StandardSave(state),
        config=ocp.args.JsonSave(config.to_dict()),
    )
    if data_state is not None:
      items['data'] = grain.checkpoint.CheckpointSave(_Snapshot(data_state))
    self._manager.save(step, args=ocp.args.Composite(**items), force=True)

  def restore_data_state(self, step: int) -> Optional[dict[str, Any]]:
    """This process's data iterator state saved at `step`, or None when the
    checkpoint holds none (a tf.data or Fashion-MNIST run, or one saved
    with another process count: the position is then the step itself).

    Raises:
      IOError: when the saved state cannot be read.
    """
    process = f'process_{jax.process_index()}-of-{jax.process_count()}.json'
    if not (self.directory / str(step) / 'data' / process).exists():
      return None
    with self._reading(step):
      snapshot = self._manager.restore(
          step,
          args=ocp.args.Composite(
              data=grain.checkpoint.CheckpointRestore(_Snapshot())
          ),
      ).data
    return snapshot.state

  def restore(self, abstract_state: Any, step: Optional[int] = None) -> Any:
    """Restores a state shaped like `abstract_state` (default: latest).

    Args:
      abstract_state: a pytree of `jax.ShapeDtypeStruct` (e.g. from
        `jax.eval_shape` of the init function) or of arrays; their
        shardings say where the arrays go (Orbax reshards a checkpoint
        saved on another device or process count); leaves without one go
        to this process's first device.
      step: which checkpoint; the latest when None.

    Raises:
      FileNotFoundError: when there is no checkpoint to restore.
      IOError: when it cannot be read (naming the older checkpoints).
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'No checkpoint in {self.directory}.')
    # Leaves without a sharding go to this process's first device, so a
    # checkpoint saved on any number of devices restores for sampling.
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract_state = jax.tree.map(
        lambda a: a
        if getattr(a, 'sharding', None) is not None
        else jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
        abstract_state,
    )
    with self._reading(step):
      restored = self._manager.restore(
          step,
          args=ocp.args.Composite(
              state=ocp.args.StandardRestore(abstract_state)
          ),
      )
    return restored.state

  @contextlib.contextmanager
  def _reading(self, step: int):
    """Turns any failure to read checkpoint `step` into an IOError that
    names the checkpoint and the older ones to fall back on."""
    try:
      yield
    except Exception as e:  # pylint: disable=broad-except
      older = [s for s in self.all_steps() if s < step]
      raise IOError(
          f'Checkpoint {self.directory / str(step)} cannot be read '
          f'({type(e).__name__}: {str(e)[:500]}). '
          + (
              f'Older checkpoints: steps {older}: move the broken folder '
              'out of the way to resume from the newest of them.'
              if older
              else 'There is no older checkpoint.'
          )
      ) from e

  def restore_config(self, step: Optional[int] = None) -> dict:
    """The config saved with a checkpoint, as a dict."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'No checkpoint in {self.directory}.')
    with self._reading(step):
      return self._manager.restore(
          step, args=ocp.args.Composite(config=ocp.args.JsonRestore())
      ).config

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are complete."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves, then releases the manager."""
    self._manager.wait_until_finished()
    self._manager.close()


class _Snapshot:
  """A data iterator state as grain's Orbax handler saves and restores it
  (`get_state()` -> bytes, `set_state(bytes)`): taken when the save starts,
  so the live iterator can move on while Orbax writes."""

  def __init__(self, state: Optional[dict[str, Any]] = None):
    self.state = state

  def get_state(self) -> bytes:
    return json.dumps(self.state, indent=2).encode()

  def set_state(self, state: bytes) -> None:
    self.state = json.loads(state)

  def start_prefetch(self) -> None:
    pass


def _flat_shapes(tree: Any) -> dict[str, str]:
  """'a/b/c' -> 'float32[8, 3]' for every array leaf of a pytree (dicts,
  dataclasses, tuples and Orbax metadata trees alike)."""

  def name(entry):
    for attr in ('key', 'name', 'idx'):
      if hasattr(entry, attr):
        return str(getattr(entry, attr))
    return str(entry)

  tree = getattr(tree, 'tree', tree)  # Orbax tree metadata
  flat = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if hasattr(leaf, 'shape'):
      flat['/'.join(name(e) for e in path)] = (
          f'{jax.numpy.dtype(leaf.dtype).name}{list(leaf.shape)}'
      )
  return flat
