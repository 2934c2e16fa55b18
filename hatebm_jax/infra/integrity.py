"""Content fingerprints of a training state: what a checkpoint must hold.

Orbax writes each array through TensorStore as zarr3 chunks in OCDBT data
files. TensorStore checks the OCDBT manifest and B-tree nodes and the zarr3
shard index (CRC-32C), but not the chunk data itself: the chunk codecs
Orbax 0.12 uses (`bytes`, then `zstd`) carry no checksum and Orbax offers no
option to add one, so a flipped byte in an array's data is restored without
any error (docs/checkpoints.md). This module adds the missing check.

`fingerprint(state)` computes, for every array leaf, its dtype, shape and
the CRC-32 (zlib) of its bytes in C order, on the host, from the shards
this process holds (zero-copy on CPU). It does not depend on the device or
process count: a leaf split over devices along its leading axis (the
replay bank's lanes) gets one CRC per row, and its fingerprint is the CRC
of those row CRCs, whoever held the rows; in a multi-process job the
processes exchange their row CRCs. `problems(state, saved)` recomputes
them for a restored state, checks that every float holds finite values
(the divergence guard never lets a non-finite state be saved,
`infra.divergence`), and lists every leaf that differs.

The record is a JSON-able dict, saved with the checkpoint's metadata
(`infra.checkpoint`): {'format': FORMAT, 'leaves': {path: {'dtype', 'shape',
'crc32', 'rows'}}}, paths written 'hat_params/block1/conv1/kernel'.
"""

import concurrent.futures
import json
import os
import zlib
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np

FORMAT = 'crc32-c-order-v1'
# Arrays of at least this many bytes are checked on a pool of threads, one
# per core (zlib's CRC and numpy's reductions release the GIL).
_PARALLEL_BYTES = 1 << 16
_pool = []


def leaf_paths(tree: Any) -> list[tuple[str, Any]]:
  """('a/b/c', leaf) for every leaf of a pytree (dicts, dataclasses,
  tuples and Orbax metadata trees alike), in the tree's order."""

  def name(entry):
    for attr in ('key', 'name', 'idx'):
      if hasattr(entry, attr):
        return str(getattr(entry, attr))
    return str(entry)

  return [
      ('/'.join(name(e) for e in path), leaf)
      for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
  ]


def describe(dtype: Any, shape: Any) -> str:
  """'float32[3, 3, 1, 8]'."""
  return f'{np.dtype(dtype).name}{list(shape)}'


def config_crc32(config: dict) -> int:
  """CRC-32 of a config dict as canonical JSON (sorted keys), the same
  before saving (tuples) and after restoring (lists)."""
  return zlib.crc32(json.dumps(config, sort_keys=True).encode())


def _as_numbers(x: Any) -> Any:
  """A typed PRNG key array as its uint32 key data; anything else as is."""
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    return jax.random.key_data(x)
  return x


def _split_rows(x: Any) -> bool:
  """Whether `x` is laid out split along its leading axis (the replay
  bank: `NamedSharding` with 'data' on axis 0), on any device count."""
  spec = getattr(getattr(x, 'sharding', None), 'spec', None)
  return bool(spec) and spec[0] is not None and np.ndim(x) > 0


def _crc(a: np.ndarray) -> int:
  return zlib.crc32(np.ascontiguousarray(a).reshape(-1).view(np.uint8))


def _map(fn: Callable[[np.ndarray], Any], arrays: Sequence[np.ndarray]):
  """[fn(a) for a in arrays], the large arrays on a thread pool."""
  large = [i for i, a in enumerate(arrays) if a.nbytes >= _PARALLEL_BYTES]
  out = [None] * len(arrays)
  if len(large) > 1:
    if not _pool:
      workers = max(1, min(8, os.cpu_count() or 1))
      _pool.append(concurrent.futures.ThreadPoolExecutor(workers))
    for i, value in zip(large, _pool[0].map(fn, [arrays[i] for i in large])):
      out[i] = value
  else:
    large = []
  for i, a in enumerate(arrays):
    if i not in large:
      out[i] = fn(a)
  return out


def _pieces(x: Any) -> list[tuple[slice, np.ndarray]]:
  """(rows along axis 0, host data) of the pieces of `x` this process
  holds as replica 0: over all processes, each element once."""
  if not isinstance(x, jax.Array):
    return [(slice(0, np.shape(x)[0] if np.ndim(x) else 0), np.asarray(x))]
  pieces = []
  for shard in x.addressable_shards:
    if shard.replica_id != 0:
      continue
    rows = slice(0, 0)
    if x.ndim:
      rows = slice(*shard.index[0].indices(x.shape[0])[:2])
    pieces.append((rows, np.asarray(shard.data)))
  return pieces


def _whole(x: Any) -> Optional[np.ndarray]:
  """All of `x` on the host when this process holds it in one piece (a
  replicated leaf), else None."""
  if not isinstance(x, jax.Array):
    return np.asarray(x)
  for shard in x.addressable_shards:
    if shard.data.shape == x.shape:
      return np.asarray(shard.data)
  return np.asarray(x) if x.is_fully_addressable else None


def _row_crcs(x: Any) -> tuple[np.ndarray, np.ndarray]:
  """(CRC-32 of each row along axis 0 that this process holds, mask of
  the rows it holds): uint32 [R], bool [R]."""
  crcs = np.zeros(x.shape[0], np.uint32)
  held = np.zeros(x.shape[0], bool)
  rows = [
      (i, row)
      for span, data in _pieces(x)
      for i, row in zip(range(span.start, span.stop), data)
  ]
  for (i, _), crc in zip(rows, _map(_crc, [row for _, row in rows])):
    crcs[i], held[i] = crc, True
  return crcs, held


def _gather_rows(
    crcs: list[np.ndarray], held: list[np.ndarray]
) -> list[Optional[np.ndarray]]:
  """Row CRCs of every process combined (one collective for all leaves in
  a multi-process job); None for a leaf whose rows no process holds all
  of."""
  if not crcs:
    return []
  sizes = [len(c) for c in crcs]
  crc, mask = np.concatenate(crcs), np.concatenate(held)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    all_crc = multihost_utils.process_allgather(crc.view(np.int32))
    all_mask = multihost_utils.process_allgather(mask.astype(np.int32))
    all_crc = np.asarray(all_crc).view(np.uint32).reshape(-1, len(crc))
    all_mask = np.asarray(all_mask).reshape(-1, len(crc)).astype(bool)
    first = all_mask.argmax(axis=0)  # a process that holds the row
    crc = all_crc[first, np.arange(len(crc))]
    mask = all_mask.any(axis=0)
  out, start = [], 0
  for size in sizes:
    piece = slice(start, start + size)
    out.append(crc[piece] if mask[piece].all() else None)
    start += size
  return out


def _crcs(leaves: list[tuple[str, Any, bool]]) -> dict[str, Optional[int]]:
  """path -> fingerprint of each (path, array, by rows) leaf: the CRC-32
  of its bytes, or of its row CRCs; None where this process cannot see
  the whole leaf."""
  out, by_rows, wholes = {}, [], []
  for path, x, rows in leaves:
    if rows:
      by_rows.append((path, x))
    else:
      whole = _whole(x)
      if whole is None:
        out[path] = None
      else:
        wholes.append((path, whole))
  for (path, _), crc in zip(wholes, _map(_crc, [a for _, a in wholes])):
    out[path] = crc
  row_crcs = [_row_crcs(x) for _, x in by_rows]
  gathered = _gather_rows([c for c, _ in row_crcs], [h for _, h in row_crcs])
  for (path, _), row_crcs in zip(by_rows, gathered):
    out[path] = None if row_crcs is None else _crc(row_crcs)
  return out


def check_record(record: Any) -> None:
  """Checks that `record` is a well-formed fingerprint record of this
  version (as `fingerprint` writes it, plus 'config_crc32').

  Raises:
    ValueError: naming what is wrong (another format, a missing or
      ill-typed field, an unknown dtype).
  """
  if not isinstance(record, dict):
    raise ValueError(f'a {type(record).__name__}, not a JSON object')
  if record.get('format') != FORMAT:
    raise ValueError(f'format {record.get("format")!r}, not {FORMAT!r}')
  crc = (
      lambda v: isinstance(v, int)
      and not isinstance(v, bool)
      and (0 <= v < 2**32)
  )
  if not crc(record.get('config_crc32')):
    raise ValueError('no config CRC-32')
  leaves = record.get('leaves')
  if not isinstance(leaves, dict) or not leaves:
    raise ValueError('no leaves')
  for path, leaf in leaves.items():
    try:
      ok = (
          jax.numpy.dtype(leaf['dtype']) is not None
          and isinstance(leaf['shape'], list)
          and all(isinstance(n, int) and n >= 0 for n in leaf['shape'])
          and crc(leaf['crc32'])
          and isinstance(leaf['rows'], bool)
      )
    except (KeyError, TypeError):
      ok = False
    if not ok:
      raise ValueError(f'entry {path!r} is {leaf!r}')


def fingerprint(state: Any) -> dict[str, Any]:
  """The fingerprint record of `state` (see the module docstring).

  Call it on every process of a job (it exchanges the row CRCs of split
  leaves); it blocks until the state's arrays are computed.

  Args:
    state: a pytree of `jax.Array`s (any sharding) or numpy arrays.

  Returns:
    {'format': FORMAT, 'leaves': {path: {'dtype': str, 'shape': [int],
    'crc32': int, 'rows': bool}}}.

  Raises:
    ValueError: for a leaf this process can see neither whole nor by rows
      of its leading axis (no state of this project is laid out so).
  """
  leaves = [
      (path, _as_numbers(x), _split_rows(x)) for path, x in leaf_paths(state)
  ]
  crcs = _crcs(leaves)
  unseen = [path for path, crc in crcs.items() if crc is None]
  if unseen:
    raise ValueError(
        f'Cannot fingerprint {unseen[:3]}: split over processes other than '
        'along their leading axis.'
    )
  return {
      'format': FORMAT,
      'leaves': {
          path: {
              'dtype': np.dtype(x.dtype).name,
              'shape': list(np.shape(x)),
              'crc32': crcs[path],
              'rows': rows,
          }
          for path, x, rows in leaves
      },
  }


def _non_finite(data: np.ndarray) -> int:
  """Number of non-finite values of a float array (0 for other dtypes):
  two reductions, max and min, which NaN and ±inf reach; counted only
  when one of them does."""
  if not np.issubdtype(data.dtype, np.inexact) or not data.size:
    return 0
  if np.isfinite(data.max()) and np.isfinite(data.min()):
    return 0
  return int(data.size - np.count_nonzero(np.isfinite(data)))


def problems(state: Any, saved: Optional[dict[str, Any]]) -> list[str]:
  """What differs between a restored `state` and its saved fingerprint
  record, one line per leaf: 'bank/images: CRC-32 0x1a2b3c4d, saved
  0x5e6f7a8b', 'gen_params/dense/kernel: 214 non-finite values', 'x:
  float32[8] restored, bfloat16[8] saved', 'x: missing from the
  checkpoint'; [] when every leaf checks. Finiteness is counted for the
  leaves whose CRC does not match or cannot be computed here (a matching
  CRC means the saved bytes, which were finite); with `saved` None (a
  checkpoint written before fingerprints) for every leaf.

  Call it on every process of a job: the answer is the same on all.

  Args:
    state: the restored pytree.
    saved: `fingerprint(...)` of the state that was saved, or None.

  Raises:
    ValueError: for a malformed record (`check_record`; its config CRC may
      be left out).
  """
  if saved is not None:
    check_record(dict(saved, config_crc32=saved.get('config_crc32', 0)))
  leaves = [(path, _as_numbers(x)) for path, x in leaf_paths(state)]
  records = (saved or {}).get('leaves', {})
  lines, restored = [], dict(leaves)
  for path in records:
    if path not in restored:
      lines.append(f'{path}: saved, but not in the restored state')
  checked = []
  for path, x in leaves:
    record = records.get(path)
    if saved is not None and record is None:
      lines.append(f'{path}: missing from the saved fingerprints')
    elif record is not None and (
        record['dtype'] != np.dtype(x.dtype).name
        or list(record['shape']) != list(np.shape(x))
    ):
      lines.append(
          f'{path}: {describe(x.dtype, np.shape(x))} restored, '
          f'{describe(record["dtype"], record["shape"])} saved'
      )
    elif record is not None:
      checked.append((path, x, record['rows']))
  crcs = _crcs(checked)
  matched = set()
  for path, x, _ in checked:
    want = records[path]['crc32']
    if crcs[path] is not None and want is not None:
      if crcs[path] == want:
        matched.add(path)
      else:
        lines.append(
            f'{path}: CRC-32 {crcs[path]:#010x} restored, {want:#010x} saved'
        )
  # A leaf whose CRC matches holds the saved bytes, so the saved
  # finiteness (training never saves a non-finite state); the others are
  # counted.
  pieces = [
      (i, data)
      for i, (path, x) in enumerate(leaves)
      if path not in matched
      for _, data in _pieces(x)
  ]
  counts = np.zeros(len(leaves) + 1, np.int64)
  for (i, _), count in zip(pieces, _map(_non_finite, [d for _, d in pieces])):
    counts[i] += count
  counts[-1] = len(lines)
  if jax.process_count() > 1:  # every process gives the same answer
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    counts = np.asarray(
        multihost_utils.process_allgather(counts.astype(np.int32))
    ).reshape(-1, len(counts))
    if counts[:, -1].any() and not lines:
      lines.append('another process of this job found damaged entries')
    counts = counts.sum(axis=0)
  for (path, _), count in zip(leaves, counts):
    if count:
      lines.append(f'{path}: {count} non-finite values')
  return lines
