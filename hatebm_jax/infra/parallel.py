"""Data parallelism over a device mesh, on one host or many.

Every training mode runs as one `jax.jit` over a `jax.sharding.Mesh` with a
single `'data'` axis: network parameters and optimiser states are
replicated, batches and the replay bank are split along their leading
(example / lane) axis. XLA's SPMD partitioner inserts the gradient
all-reduces; the replay bank is read and written inside `jax.shard_map`, so
it never leaves the device that holds it (`replay_bank`).

Randomness never depends on the device count: every per-example draw
(latents, Langevin noise, data noise, bank slots) uses the key folded with
the example's *global* index in the batch (`per_example_normal`), so a run
on 1 device and on 8 devices draws the same numbers for example i.

Multi-host: `initialize_distributed` (called by `main`) joins the processes
into one JAX job; each process feeds only its own rows of the global batch
(`process_rows`, `global_batch`), and only process 0 writes logs and images
(`is_lead`); checkpoints are written by all processes together (Orbax).
"""

import os
from typing import Any, Collection, Optional, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = 'data'


def per_example_normal(
    key: jax.Array,
    shape: Sequence[int],
    dtype=jnp.float32,
    offset: int | jax.Array = 0,
) -> jax.Array:
  """N(0, I) draws whose row i depends only on (key, global index i).

  Row i is `jax.random.normal(jax.random.fold_in(key, offset + i),
  shape[1:])`, whatever the batch size, the device count or the sharding
  (the rule that makes runs device-count independent: fold with the global
  example index, never with the device index).

  Args:
    key: a PRNG key.
    shape: (B, ...) with B ≥ 1 examples.
    dtype: a float dtype.
    offset: global index of row 0 (non-zero inside `shard_map`).

  Returns:
    `dtype` [B, ...] standard normal.
  """
  return _per_example(
      lambda k, s: jax.random.normal(k, s, dtype), key, shape, offset
  )


def _per_example(draw, key, shape, offset):
  """Row i of [B, ...] is draw(fold_in(key, offset + i), shape[1:])."""
  index = offset + jnp.arange(shape[0])
  return jax.vmap(lambda i: draw(jax.random.fold_in(key, i), tuple(shape[1:])))(
      index
  )


def per_example_uniform(
    key: jax.Array,
    shape: Sequence[int],
    minval: float = 0.0,
    maxval: float = 1.0,
    offset: int | jax.Array = 0,
) -> jax.Array:
  """float32 U[minval, maxval) draws whose row i depends only on (key,
  global index i), like `per_example_normal`."""
  return _per_example(
      lambda k, s: jax.random.uniform(k, s, jnp.float32, minval, maxval),
      key,
      shape,
      offset,
  )


def interleave(a: jax.Array, b: jax.Array) -> jax.Array:
  """[a₀, b₀, a₁, b₁, ...]: two batches [B, ...] as one [2B, ...].

  Unlike `jnp.concatenate`, rows 2i and 2i+1 come from row i of the
  inputs, so a batch split over devices keeps its rows on their device.
  """
  return jnp.stack([a, b], axis=1).reshape((2 * a.shape[0],) + a.shape[1:])


def make_mesh(num_devices: int = 0) -> jax.sharding.Mesh:
  """A 1-D mesh with axis 'data' over the first `num_devices` devices.

  Args:
    num_devices: how many of `jax.devices()` (all processes) to use; 0 for
      all. Multi-process jobs must use all.

  Raises:
    ValueError: for a count that is negative, above the devices available,
      or below them in a multi-process job.
  """
  devices = jax.devices()
  n = num_devices or len(devices)
  if not 1 <= n <= len(devices):
    raise ValueError(
        f'num_devices={num_devices} must be 0 (all) or between '
        f'1 and the {len(devices)} devices available.'
    )
  if jax.process_count() > 1 and n != len(devices):
    raise ValueError(
        f'num_devices={num_devices}: a job of '
        f'{jax.process_count()} processes uses all '
        f'{len(devices)} devices (set 0).'
    )
  return jax.sharding.Mesh(np.array(devices[:n]), (DATA_AXIS,))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Sharding of arrays held whole on every device (parameters, scalars)."""
  return NamedSharding(mesh, P())


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Sharding of arrays split along their leading (example) axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def _is_split(path, sharded_fields: Collection[str]) -> bool:
  """Whether the state leaf at `path` lies under one of `sharded_fields`
  (a state field is a `GetAttrKey` of the path)."""
  return any(
      isinstance(k, jax.tree_util.GetAttrKey) and k.name in sharded_fields
      for k in path
  )


def state_shardings(
    abstract_state: Any,
    mesh: jax.sharding.Mesh,
    sharded_fields: Collection[str],
) -> Any:
  """Shardings of a training state: the leaves of `sharded_fields` split
  on their leading axis, the rest replicated (the mode contract declares
  which fields: `modes.base.shardings`). `abstract_state` may hold arrays
  or ShapeDtypeStructs."""

  def sharding(path, leaf):
    del leaf
    return (
        batch_sharding(mesh)
        if _is_split(path, sharded_fields)
        else replicated(mesh)
    )

  return jax.tree_util.tree_map_with_path(sharding, abstract_state)


def with_shardings(abstract_state: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs of `abstract_state` carrying `shardings` (restore
  targets: Orbax reshards a checkpoint onto them)."""
  return jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      abstract_state,
      shardings,
  )


def check_divisible(name: str, size: int, mesh: jax.sharding.Mesh) -> None:
  """Raises ValueError unless `size` splits evenly over the mesh's devices
  (and so over the processes, which hold equal numbers of them)."""
  if size % mesh.size:
    raise ValueError(
        f'{name}={size} must be divisible by the number of '
        f'devices, {mesh.size}: each device takes an equal '
        'share of the global batch.'
    )


def process_rows(
    global_size: int, mesh: Optional[jax.sharding.Mesh] = None
) -> slice:
  """The rows of a global batch that this process feeds.

  With a mesh: the rows its devices hold under `batch_sharding(mesh)`
  (what `jax.make_array_from_process_local_data` expects), whatever the
  order of the devices in the mesh. Without one: block
  `jax.process_index()` of `jax.process_count()` equal blocks.

  Raises:
    ValueError: when the batch does not split evenly, or this process's
      rows are not one contiguous block.
  """
  count = jax.process_count()
  if global_size % count:
    raise ValueError(
        f'A global batch of {global_size} does not split over '
        f'{count} processes.'
    )
  if mesh is None:
    local = global_size // count
    start = jax.process_index() * local
    return slice(start, start + local)
  index_map = batch_sharding(mesh).addressable_devices_indices_map(
      (global_size,)
  )
  rows = sorted(
      {
          (i[0].start or 0, global_size if i[0].stop is None else i[0].stop)
          for i in index_map.values()
      }
  )
  start, stop = rows[0][0], rows[-1][1]
  if sum(b - a for a, b in rows) != stop - start:
    raise ValueError(
        f'The devices of process {jax.process_index()} hold '
        f'rows {rows} of the batch, not one block: order the '
        'mesh devices by process.'
    )
  return slice(start, stop)


def global_batch(local: np.ndarray, mesh: jax.sharding.Mesh) -> jax.Array:
  """This process's rows -> one global array split on 'data' (all
  processes call this with their own rows, in step)."""
  return jax.make_array_from_process_local_data(batch_sharding(mesh), local)


def is_lead() -> bool:
  """True on the process that writes logs, metrics and images."""
  return jax.process_index() == 0


def to_host(tree: Any) -> Any:
  """Replicated (or fully addressable) arrays -> numpy, in any process."""
  return jax.tree.map(
      lambda a: np.asarray(a.addressable_data(0))
      if isinstance(a, jax.Array)
      else a,
      tree,
  )


def local_view(state: Any, sharded_fields: Collection[str]) -> Any:
  """The replicated leaves of `state` as arrays on this process's first
  device (no copy); leaves of `sharded_fields` (the replay bank) become
  None.

  For work that one process does alone (sample grids, FCD, test loss): a
  jitted function of a multi-process global array would need every
  process to call it.
  """

  def local(path, leaf):
    if _is_split(path, sharded_fields):
      return None
    if isinstance(leaf, jax.Array):
      return leaf.addressable_data(0)  # one copy, not one per device
    return leaf

  return jax.tree_util.tree_map_with_path(local, state)


def _env_int(name: str) -> int:
  try:
    return int(os.environ.get(name, '1'))
  except ValueError:
    return 1


def initialize_distributed(
    coordinator_address: Optional[str] = None,
    num_processes: Optional[int] = None,
    process_id: Optional[int] = None,
    detect: bool = False,
) -> bool:
  """Joins this process to a multi-process JAX job when there is one.

  - Explicit: all three of coordinator_address, num_processes, process_id
    (any cluster, e.g. two processes on localhost).
  - `detect=True` (`--distributed`, what launch/tpu_pod.sh passes):
    `jax.distributed.initialize()` finds the job itself on Cloud TPU VM
    pods, SLURM and Open MPI.
  - Without either, an `srun` job step of more than one task
    (`SLURM_STEP_NUM_TASKS` > 1) or a GKE TPU slice
    (`TPU_PROCESS_ADDRESSES` or `TPU_WORKER_HOSTNAMES` lists several
    hosts) is detected from the environment; anything else (including a
    plain `python` inside a many-task allocation) runs as one process.
    Under SLURM, JAX gives each process the devices of its local task
    rank: run one task per GPU (launch/slurm.sbatch).

  Must run before JAX touches a device.

  Returns:
    True when the process joined a multi-process job.

  Raises:
    ValueError: when only some of the explicit arguments are given, or
      process_id is not in [0, num_processes).
  """
  explicit = (coordinator_address, num_processes, process_id)
  if any(v is not None for v in explicit):
    if any(v is None for v in explicit):
      raise ValueError(
          'Set all of --coordinator_address, --num_processes and '
          f'--process_id, or none (got {coordinator_address!r}, '
          f'{num_processes!r}, {process_id!r}).'
      )
    if not 0 <= process_id < num_processes:
      raise ValueError(
          f'--process_id={process_id} must be in [0, '
          f'--num_processes={num_processes}).'
      )
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  elif (
      detect
      or _env_int('SLURM_STEP_NUM_TASKS') > 1
      or ',' in os.environ.get('TPU_PROCESS_ADDRESSES', '')
      or ',' in os.environ.get('TPU_WORKER_HOSTNAMES', '')
  ):
    jax.distributed.initialize()
  else:
    return False
  logging.info(
      'Process %d of %d; %d local and %d global devices.',
      jax.process_index(),
      jax.process_count(),
      jax.local_device_count(),
      jax.device_count(),
  )
  return True
