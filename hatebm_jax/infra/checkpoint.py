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
import re
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


class _Damage(Exception):
  """Raised inside `Checkpointer`: checkpoint damage, described by `what`
  ('its config (config/metadata) differs from what was saved'); the public
  methods turn it into a `DamagedCheckpointError` with advice."""

  def __init__(self, what: str):
    super().__init__(what)
    self.what = what


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
    the checkpoint's fingerprints (milliseconds); from Orbax's array
    metadata (a fraction of a second) for a checkpoint without them, and
    to confirm a difference the fingerprints show (a damaged fingerprint
    item is not a config mismatch).

    Raises:
      IOError: when the checkpoint's metadata cannot be read;
        `DamagedCheckpointError` when its fingerprints are missing,
        malformed or disagree with its arrays' metadata.
    """
    with self._reading(step):
      record = self._fingerprints(step)
      if record is None:
        return _differences(self._array_shapes(step), abstract_state)
      lines = _differences(
          {
              path: integrity.describe(leaf['dtype'], leaf['shape'])
              for path, leaf in record['leaves'].items()
          },
          abstract_state,
      )
      if lines and lines != _differences(
          self._array_shapes(step), abstract_state
      ):
        raise _Damage(
            'its fingerprints (fingerprints/metadata) disagree with its '
            f'arrays\' metadata (they list: {"; ".join(lines[:3])})'
        )
      return lines

  def _array_shapes(self, step: int) -> dict[str, str]:
    """'path' -> 'float32[8, 3]' of the arrays, from Orbax's metadata."""
    saved = _flat_shapes(self._manager.item_metadata(step)['state'])
    if not saved:
      raise ValueError('its state metadata is missing')
    return saved

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
    with self._reading(step, abstract_state):
      state, lines = self._restore_checked(abstract_state, step)
      if lines:
        shown = '; '.join(lines[:8]) + ('; ...' if len(lines) > 8 else '')
        raise _Damage(
            f'{len(lines)} of its entries differ from what was saved '
            f'({shown})'
        )
    self._checked.step = max(step, self._checked.step or step)
    return state

  def _restore_checked(self, abstract_state: Any, step: int):
    """(state at `step`, `integrity.problems` lines). Raises what reading
    raises, and `_Damage`."""
    record = self._fingerprints(step)
    restored = self._manager.restore(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)),
    ).state
    if record is None:
      logging.warning(
          'Checkpoint %s holds no content fingerprints (saved before '
          'hatebm_jax wrote them): only its entries and finiteness are '
          'checked.',
          self.directory / str(step),
      )
    return restored, integrity.problems(restored, record)

  def _intact(self, step: int, abstract_state: Any = None) -> bool:
    """Whether checkpoint `step` restores and checks: its fingerprints,
    config and state (into `abstract_state`, or as it was saved, on this
    process's first device)."""
    try:
      self._config_checked(step)
      if abstract_state is None:  # as saved
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        metadata = self._manager.item_metadata(step)['state']
        abstract_state = jax.tree.map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
            getattr(metadata, 'tree', metadata),
        )
      _, lines = self._restore_checked(abstract_state, step)
      return not lines
    except Exception:  # pylint: disable=broad-except
      return False

  def _fallback(self, step: int, abstract_state: Any = None) -> str:
    """What to do instead of using checkpoint `step`: the newest older
    checkpoint that restores and checks (`_intact`, tried newest first)."""
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
    for candidate in reversed(older):
      if self._intact(candidate, abstract_state):
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

  def _fingerprints(self, step: int) -> Optional[dict[str, Any]]:
    """The fingerprint record saved with checkpoint `step` (checked to be
    well-formed), or None for a checkpoint saved before hatebm_jax wrote
    them.

    Raises:
      _Damage: the record is malformed, or missing from a checkpoint whose
        Orbax metadata (`_CHECKPOINT_METADATA`) lists it.
    """
    folder = self.directory / str(step)
    if not (folder / 'fingerprints').exists():
      try:
        handlers = json.loads((folder / '_CHECKPOINT_METADATA').read_text())[
            'item_handlers'
        ]
        listed = 'fingerprints' in handlers
      except Exception:  # pylint: disable=broad-except
        listed = True  # cannot tell: refuse rather than trust
      if listed:
        raise _Damage(
            'its fingerprints (fingerprints/) are missing, though it was '
            'saved with them'
        )
      return None
    record = self._manager.restore(
        step, args=ocp.args.Composite(fingerprints=ocp.args.JsonRestore())
    ).fingerprints
    try:
      integrity.check_record(record)
    except ValueError as e:
      raise _Damage(
          f'its fingerprints (fingerprints/metadata) are malformed ({e})'
      ) from e
    return record

  def _config_checked(self, step: int) -> dict:
    """The config of checkpoint `step`, checked against its fingerprint.
    Raises what reading raises, and `_Damage`."""
    record = self._fingerprints(step)
    config = self._manager.restore(
        step, args=ocp.args.Composite(config=ocp.args.JsonRestore())
    ).config
    if record is not None and (
        integrity.config_crc32(config) != record['config_crc32']
    ):
      raise _Damage('its config (config/metadata) differs from what was saved')
    return config

  @contextlib.contextmanager
  def _reading(self, step: int, abstract_state: Any = None):
    """Turns damage (`_Damage`) into a `DamagedCheckpointError` and any
    other failure to read checkpoint `step` into an IOError, both naming
    the checkpoint and the newest older one that restores and checks
    (into `abstract_state` when given)."""
    try:
      yield
    except _Damage as e:
      raise DamagedCheckpointError(
          f'Checkpoint {self.directory / str(step)} is damaged: {e.what}; it '
          f'was not used. {self._fallback(step, abstract_state)}'
      ) from None
    except Exception as e:  # pylint: disable=broad-except
      raise IOError(
          f'Checkpoint {self.directory / str(step)} cannot be read '
          f'({_short(e)}). ' + self._fallback(step, abstract_state)
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
      return self._config_checked(step)

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
        f'({_short(error)}); '
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


def _short(error: BaseException) -> str:
  """'<type>: <message>' of an error's root cause (Orbax wraps TensorStore's
  own error in one that says only 'See full TensorStore details'), on one
  line, without the TensorStore spec appended to its messages, at most 500
  characters: the start (what failed) and the end (the system's reason)."""
  while error.__cause__ is not None:
    error = error.__cause__
  text = re.split(
      r' \[tensorstore_spec| \[os_error_code| See full TensorStore', str(error)
  )[0]
  text = ' '.join(text.split())
  if len(text) > 500:
    text = f'{text[:250]} ... {text[-250:]}'
  return f'{type(error).__name__}: {text}'


def _flat_shapes(tree: Any) -> dict[str, str]:
  """'a/b/c' -> 'float32[8, 3]' for every array leaf of a pytree (dicts,
  dataclasses, tuples and Orbax metadata trees alike)."""
  tree = getattr(tree, 'tree', tree)  # Orbax tree metadata
  return {
      path: integrity.describe(leaf.dtype, leaf.shape)
      for path, leaf in integrity.leaf_paths(tree)
      if hasattr(leaf, 'shape')
  }


def _differences(saved: dict[str, str], abstract_state: Any) -> list[str]:
  """'path: checkpoint <saved>, config <wanted>' for each entry that
  differs ('missing' where absent), in the state's order (networks before
  optimiser states), then entries only the checkpoint has."""
  wanted = _flat_shapes(abstract_state)
  lines = []
  for path in list(wanted) + [p for p in saved if p not in wanted]:
    a, b = saved.get(path, 'missing'), wanted.get(path, 'missing')
    if a != b:
      lines.append(f'{path}: checkpoint {a}, config {b}')
  return lines
