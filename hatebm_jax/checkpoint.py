"""Checkpoints of the whole training state, through Orbax only.

`<workdir>/checkpoints/<step>/` holds the state pytree (networks, optimiser
states, replay bank, step, RNG key) and the config as JSON. Orbax writes
each checkpoint to a temporary folder and renames it when complete, so an
interrupted save is never restored; saving is asynchronous.
"""

from typing import Any, Optional

from etils import epath
import jax
import ml_collections
import orbax.checkpoint as ocp


class Checkpointer:
  """Saves and restores training states under `<workdir>/checkpoints`."""

  def __init__(self, workdir: str, max_to_keep: int = 3):
    """Opens (and creates) the checkpoint folder.

    Args:
      workdir: the run's folder, a local path or gs://.
      max_to_keep: number of most recent checkpoints kept.
    """
    self.directory = epath.Path(workdir) / 'checkpoints'
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True,
        enable_async_checkpointing=True)
    self._manager = ocp.CheckpointManager(
        self.directory, options=options, item_names=('state', 'config'))

  def latest_step(self) -> Optional[int]:
    """Step of the newest complete checkpoint, or None."""
    return self._manager.latest_step()

  def save(self, step: int, state: Any,
           config: ml_collections.ConfigDict) -> None:
    """Starts an asynchronous save of `state` and `config` at `step`."""
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        config=ocp.args.JsonSave(config.to_dict())), force=True)

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
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'No checkpoint in {self.directory}.')
    # Leaves without a sharding go to this process's first device, so a
    # checkpoint saved on any number of devices restores for sampling.
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract_state = jax.tree.map(
        lambda a: a if getattr(a, 'sharding', None) is not None else
        jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
        abstract_state)
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state)))
    return restored.state

  def restore_config(self, step: Optional[int] = None) -> dict:
    """The config saved with a checkpoint, as a dict."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'No checkpoint in {self.directory}.')
    return self._manager.restore(step, args=ocp.args.Composite(
        config=ocp.args.JsonRestore())).config

  def close(self) -> None:
    """Waits for pending saves, then releases the manager."""
    self._manager.wait_until_finished()
    self._manager.close()
