"""Checkpoints of the whole training state, through Orbax only.

`<workdir>/checkpoints/<step>/` holds the state pytree (networks, optimiser
states, replay bank, step, RNG key), the config as JSON and, for runs that
read their data through grain, each process's data iterator state
(`data/process_<i>-of-<n>.json`, grain's Orbax handler). Orbax writes
each checkpoint to a temporary folder and renames it when complete, so an
interrupted save is never restored; saving is asynchronous.

Every checkpoint also carries the content fingerprint of each state leaf
and of the config (`infra.integrity`), as one more JSON item beside the
config (`fingerprints/metadata`). `restore` checks the restored state against
it (and its dtypes, shapes and finiteness against what the caller expects)
and refuses a damaged checkpoint with one error that names the step, the
leaves and the newest older checkpoint that checks. Rotation (`max_to_keep`)
never deletes the newest checkpoint that a restore has checked while the
newer ones have not been (docs/checkpoints.md).
"""

import contextlib
import dataclasses
import json
from typing import Any, Optional, Sequence

from absl import logging
from etils import epath
import grain
import jax
import ml_collections
import orbax.checkpoint as ocp

from hatebm_jax.infra import integrity


class DamagedCheckpointError(IOError):
  """A complete checkpoint whose contents differ from what was saved."""


@dataclasses.dataclass
class _KeepChecked:
  """Orbax preservation policy: keeps checkpoint `step` (the newest one a
  restore has checked), whatever `max_to_keep` says."""

  step: Optional[int] = None

  def should_preserve(self, checkpoints: Sequence[Any], *, context: Any):
    del context
    return [info.step == self.step for info in checkpoints]


class Checkpointer:
  """Saves and restores training states under `<workdir>/checkpoints`."""

  def __init__(
      self, workdir: str, max_to_keep: int = 3, read_only: bool = False
  ):
    """Opens the checkpoint folder; nothing is created before the first
    save.

    Args:
      workdir: the run's folder, a local path or gs://.
      max_to_keep: number of most recent checkpoints kept, besides the
        newest one a restore has checked (`checked_step`), which is kept
        until a newer one is checked.
      read_only: only read (sampling, a joint run's pretrained generator):
        `save` is refused, so nothing is created or deleted.
    """
    self.directory = epath.Path(workdir) / 'checkpoints'
    self._read_only = read_only
    self._checked = _KeepChecked()
    self._saving = None  # step of the save in flight, if any
    managers = ocp.checkpoint_managers
    options = ocp.CheckpointManagerOptions(
        create=False,  # the first save creates the folder
        enable_async_checkpointing=True,
        preservation_policy=managers.AnyPreservationPolicy(
            [managers.LatestN(n=max_to_keep), self._checked]
        ),
    )
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=options,
        item_handlers={
            'state': ocp.StandardCheckpointHandler(),
            'config': ocp.JsonCheckpointHandler(),
            'data': grain.checkpoint.CheckpointHandler(),
            'fingerprints': ocp.JsonCheckpointHandler(),
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
    lines ('missing' for an absent entry); [] when they fit. Read from
    the checkpoint's fingerprints (milliseconds), or for a checkpoint
    without them from Orbax's array metadata (a fraction of a second).

    Raises:
      IOError: when the checkpoint's metadata cannot be read.
    """
    with self._reading(step):
      record = self._fingerprints(step)
      if record is not None:
        saved = {
            path: integrity.describe(leaf['dtype'], leaf['shape'])
            for path, leaf in record['leaves'].items()
        }
      else:
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

  @property
  def checked_step(self) -> Optional[int]:
    """The newest checkpoint a restore of this manager has checked (kept
    by rotation), or None."""
    return self._checked.step

  def save(
      self,
      step: int,
      state: Any,
      config: ml_collections.ConfigDict,
      data_state: Optional[dict[str, Any]] = None,
  ) -> None:
    """Starts an asynchronous save of `state` and `config` at `step`, with
    this process's data iterator state (a JSON-able dict, e.g. grain's
    `get_state()` taken at `step`) when given, and the fingerprints of
    both (`integrity`: computed on the host before this returns, about
    1 ms per 3 MB of state and core on CPU).

    Raises:
      ValueError: for a read-only checkpointer.
      OSError: when the previous save failed (`wait`).
    """
    if self._read_only:
      raise ValueError(f'{self.directory} was opened read-only: not saving.')
    config = config.to_dict()
    record = integrity.fingerprint(state)
    record['config_crc32'] = integrity.config_crc32(config)
    items = dict(
        state=ocp.args.StandardSave(state),
        config=ocp.args.JsonSave(config),
        fingerprints=ocp.args.JsonSave(record),
    )
    if data_state is not None:
      items['data'] = grain.checkpoint.CheckpointSave(_Snapshot(data_state))
    with self._finishing():  # the previous save's failure surfaces here
      self._manager.save(step, args=ocp.args.Composite(**items), force=True)
    self._saving = step

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
    """Restores a state shaped like `abstract_state` (default: latest),
    checked against what was saved.

    Checks, in this order: that the checkpoint's entries have the paths,
    dtypes and shapes of `abstract_state` (from its metadata, before
    reading any array); then, after reading, that every leaf has the
    content fingerprint saved with it and holds finite floats
    (`integrity.problems`). A checkpoint that passes becomes
    `checked_step`.

    Args:
      abstract_state: a pytree of `jax.ShapeDtypeStruct` (e.g. from
        `jax.eval_shape` of the init function) or of arrays; their
        shardings say where the arrays go (Orbax reshards a checkpoint
        saved on another device or process count); leaves without one go
        to this process's first device.
      step: which checkpoint; the latest when None.

    Raises:
      FileNotFoundError: when there is no checkpoint to restore.
      ValueError: when its entries do not fit `abstract_state` (naming
        each entry with both dtypes and shapes).
      IOError: when it cannot be read; `DamagedCheckpointError` when its
        contents differ from what was saved (naming the leaves). Both name
        the newest older checkpoint that restores and checks.
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
    entries = self.structure_mismatches(abstract_state, step)
    if entries:
      raise ValueError(
          f'Checkpoint {self.directory / str(step)} does not hold the state '
          f'its config describes ({len(entries)} entries differ: '
          + '; '.join(entries[:10])
          + ('; ...' if len(entries) > 10 else '')
          + '); nothing was read from it.'
      )
    try:
      state, lines = self._restore_checked(abstract_state, step)
    except IOError as e:
      raise IOError(
          f'{e} {self._fallback(step, abstract_state)}'
      ) from e.__cause__
    if lines:
      shown = '; '.join(lines[:8]) + ('; ...' if len(lines) > 8 else '')
      raise DamagedCheckpointError(
          f'Checkpoint {self.directory / str(step)} is damaged: '
          f'{len(lines)} of its entries differ from what was saved '
          f'({shown}); it was not used. ' + self._fallback(step, abstract_state)
      )
    self._checked.step = max(step, self._checked.step or step)
    return state

  def _restore_checked(self, abstract_state: Any, step: int):
    """(state at `step`, `integrity.problems` lines); IOError when it
    cannot be read."""
    with self._reading(step, hint=False):
      record = self._fingerprints(step)
      restored = self._manager.restore(
          step,
          args=ocp.args.Composite(
              state=ocp.args.StandardRestore(abstract_state)
          ),
      ).state
    if record is None:
      logging.warning(
          'Checkpoint %s holds no content fingerprints (saved before '
          'hatebm_jax checked them): only its shapes, dtypes and '
          'finiteness are checked.',
          self.directory / str(step),
      )
    return restored, integrity.problems(restored, record)

  def _fallback(self, step: int, abstract_state: Any = None) -> str:
    """What to do instead of using checkpoint `step`: the newest older
    checkpoint that restores and checks (all of them are tried, newest
    first, when `abstract_state` is given), or the list of older ones."""
    older = [s for s in self.all_steps() if s < step]
    broken = self.directory / str(step)
    tool = 'gcloud storage mv' if str(broken).startswith('gs://') else 'mv'
    move = (
        f'move {broken} out of the way (e.g. {tool} {broken} '
        f'{self.directory.parent / f"damaged_checkpoint_{step}"})'
    )
    if not older:
      return (
          'There is no older checkpoint: '
          f'{move} and rerun to start the run afresh.'
      )
    if abstract_state is not None:
      for candidate in reversed(older):
        try:
          _, lines = self._restore_checked(abstract_state, candidate)
        except Exception:  # pylint: disable=broad-except
          continue
        if not lines:
          between = [s for s in older if s > candidate]
          return (
              f'The newest intact checkpoint is step {candidate} (checked): '
              f'{move}'
              + (f' and the damaged steps {between}' if between else '')
              + f' and rerun to resume from step {candidate}, or pass '
              f'--step={candidate} to sample or export it.'
          )
      return (
          f'None of the older checkpoints (steps {older}) is intact either: '
          'start a new run.'
      )
    return (
        f'Older checkpoints: steps {older}: {move} to resume from the '
        'newest of them.'
    )

  def _fingerprints(self, step: int) -> Optional[dict[str, Any]]:
    """The fingerprint record saved with checkpoint `step`, or None for a
    checkpoint saved before hatebm_jax wrote them."""
    if not (self.directory / str(step) / 'fingerprints').exists():
      return None
    return self._manager.restore(
        step, args=ocp.args.Composite(fingerprints=ocp.args.JsonRestore())
    ).fingerprints

  @contextlib.contextmanager
  def _reading(self, step: int, hint: bool = True):
    """Turns any failure to read checkpoint `step` into an IOError that
    names the checkpoint (and, with `hint`, the older ones to fall back
    on)."""
    try:
      yield
    except Exception as e:  # pylint: disable=broad-except
      raise IOError(
          f'Checkpoint {self.directory / str(step)} cannot be read '
          f'({type(e).__name__}: {_short(e)}).'
          + (f' {self._fallback(step)}' if hint else '')
      ) from e

  def restore_config(self, step: Optional[int] = None) -> dict:
    """The config saved with a checkpoint, as a dict, checked against its
    fingerprint.

    Raises:
      FileNotFoundError: when there is no checkpoint.
      IOError: when it cannot be read; `DamagedCheckpointError` when it
        differs from what was saved.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'No checkpoint in {self.directory}.')
    with self._reading(step):
      want = (self._fingerprints(step) or {}).get('config_crc32')
      config = self._manager.restore(
          step, args=ocp.args.Composite(config=ocp.args.JsonRestore())
      ).config
    if want is not None and integrity.config_crc32(config) != want:
      raise DamagedCheckpointError(
          f'Checkpoint {self.directory / str(step)} is damaged: its config '
          '(config/metadata) differs from what was saved; it was not used. '
          + self._fallback(step)
      )
    return config

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are complete.

    Raises:
      OSError: when a save failed (a full or read-only disk), naming the
        step, the newest complete checkpoint and what became of the
        unfinished one (`_save_failed`).
    """
    with self._finishing():
      self._manager.wait_until_finished()
    self._saving = None

  def close(self) -> None:
    """Waits for pending saves, then releases the manager.

    Raises:
      OSError: see `wait`.
    """
    try:
      self.wait()
    finally:
      self._manager.close()

  @contextlib.contextmanager
  def _finishing(self):
    """Turns the failure of the save in flight, which Orbax raises at the
    next save or wait, into `_save_failed`."""
    try:
      yield
    except Exception as e:  # pylint: disable=broad-except
      step, self._saving = self._saving, None
      if step is None:
        raise
      raise self._save_failed(step, e) from e

  def _save_failed(self, step: int, error: Exception) -> OSError:
    """The one-line error of a failed save of `step`, after deleting its
    unfinished temporary folder (lead process; named if it cannot be
    deleted)."""
    leftovers = []
    if jax.process_index() == 0:
      for path in self.directory.glob(f'{step}.orbax-checkpoint-tmp*'):
        try:
          path.rmtree()
        except OSError:
          leftovers.append(str(path))
    try:
      self._manager.reload()
      complete = [s for s in self.all_steps() if s != step]
    except Exception:  # pylint: disable=broad-except
      complete = []
    return OSError(
        f'Saving checkpoint {step} in {self.directory} failed '
        f'({type(error).__name__}: {_short(error)}); '
        + (
            f'its unfinished folder is left at {leftovers[0]} (delete it). '
            if leftovers
            else 'its unfinished folder was deleted. '
        )
        + (
            f'The newest complete checkpoint is step {complete[-1]}: '
            if complete
            else 'There is no complete checkpoint yet: '
        )
        + 'make room (or make the folder writable) and rerun the same '
        'command to continue from it.'
    )


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


def _short(error: Exception) -> str:
  """An error's message on one line, without the TensorStore spec that
  TensorStore appends to its errors, at most 500 characters: its start
  (what failed) and its end (the operating system's reason)."""
  text = str(error).split(' [tensorstore_spec')[0].split(' [os_error_code')[0]
  text = ' '.join(text.split())
  return text if len(text) <= 500 else f'{text[:250]} ... {text[-250:]}'


def _flat_shapes(tree: Any) -> dict[str, str]:
  """'a/b/c' -> 'float32[8, 3]' for every array leaf of a pytree (dicts,
  dataclasses, tuples and Orbax metadata trees alike)."""
  tree = getattr(tree, 'tree', tree)  # Orbax tree metadata
  return {
      path: integrity.describe(leaf.dtype, leaf.shape)
      for path, leaf in integrity.leaf_paths(tree)
      if hasattr(leaf, 'shape')
  }
