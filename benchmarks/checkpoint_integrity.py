r"""What the checkpoint fingerprints cost against a checkpoint's save and
restore.

  python benchmarks/checkpoint_integrity.py       # quick start, cifar10_synth
  python benchmarks/checkpoint_integrity.py --configs=fashion_mnist_synth \
      --repeats=10 --folder=/tmp/ckpt_bench

For each config, a training state of its real shapes (networks, Adam
states, replay bank; random values) is laid out on a 1-device mesh as
training lays it out, then saved (until complete on disk) and restored
through `infra.checkpoint.Checkpointer` in --folder (a local disk),
--repeats times with the fingerprints computed and checked, and as many
times, interleaved, with both replaced by no-ops (the same fingerprint
record, precomputed, so the files written are the same). It prints the
medians of both, their difference as a share of the no-op save + restore
(the overhead a run pays), and the two functions timed on their own:

  fingerprint   `integrity.fingerprint(state)`, the work `save()` adds
  check         reading the fingerprint item and `integrity.problems`,
                the work `restore()` adds besides Orbax's own restore

Orbax's own metadata read, which checkpoints without fingerprints need for
their entry check (~0.2 s), is not part of either.
"""

import argparse
import contextlib
import copy
import shutil
import statistics
import time

import common  # pylint: disable=g-bad-import-order  (puts the checkout on sys.path)

import jax  # pylint: disable=g-import-not-at-top,g-bad-import-order
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

from hatebm_jax import modes  # pylint: disable=g-import-not-at-top
from hatebm_jax.infra import checkpoint  # pylint: disable=g-import-not-at-top
from hatebm_jax.infra import integrity  # pylint: disable=g-import-not-at-top
from hatebm_jax.infra import parallel  # pylint: disable=g-import-not-at-top
from hatebm_jax.modes import base  # pylint: disable=g-import-not-at-top


def random_state(config):
  """A state of the config's shapes and training layout, random floats."""
  mode = modes.build(config)
  abstract = mode.abstract_state(config.seed)
  mesh = parallel.make_mesh(1)
  shardings = base.shardings(abstract, mesh)
  leaves, tree = jax.tree.flatten(abstract)
  values = []
  for i, (leaf, sharding) in enumerate(zip(leaves, jax.tree.leaves(shardings))):
    if jnp.issubdtype(leaf.dtype, jnp.floating):
      value = jax.random.normal(jax.random.PRNGKey(i), leaf.shape, leaf.dtype)
    else:
      value = jnp.zeros(leaf.shape, leaf.dtype)
    values.append(jax.device_put(value, sharding))
  state = jax.tree.unflatten(tree, values)
  return state, parallel.with_shardings(abstract, shardings)


@contextlib.contextmanager
def no_fingerprints(record):
  """`integrity.fingerprint` returns `record` and `integrity.problems`
  finds nothing, without computing."""
  saved = integrity.fingerprint, integrity.problems
  integrity.fingerprint = lambda state: copy.deepcopy(record)
  integrity.problems = lambda state, saved: []
  try:
    yield
  finally:
    integrity.fingerprint, integrity.problems = saved


def save_and_restore(ckpt, step, state, abstract, config):
  """Seconds of a save until complete, and of a restore."""
  start = time.perf_counter()
  ckpt.save(step, state, config)
  ckpt.wait()
  save = time.perf_counter() - start
  start = time.perf_counter()
  jax.block_until_ready(ckpt.restore(abstract, step))
  return save, time.perf_counter() - start


def measure(config, folder, repeats):
  """Median seconds of save and restore with and without fingerprints,
  and of `fingerprint` and `check` alone."""
  state, abstract = random_state(config)
  jax.block_until_ready(state)
  record = integrity.fingerprint(state)
  names = ('save', 'restore', 'save_off', 'restore_off', 'fp', 'check')
  times = {k: [] for k in names}
  shutil.rmtree(folder, ignore_errors=True)
  ckpt = checkpoint.Checkpointer(folder, max_to_keep=2)
  step = 0
  for repeat in range(repeats + 1):  # the first round warms up
    row = list(save_and_restore(ckpt, step + 1, state, abstract, config))
    with no_fingerprints(record):
      row += save_and_restore(ckpt, step + 2, state, abstract, config)
    step += 2
    start = time.perf_counter()
    assert integrity.fingerprint(state) == record
    row.append(time.perf_counter() - start)
    start = time.perf_counter()
    lines = integrity.problems(state, ckpt._fingerprints(step))  # pylint: disable=protected-access
    row.append(time.perf_counter() - start)
    assert not lines, lines
    if repeat:
      for name, value in zip(names, row):
        times[name].append(value)
  ckpt.close()
  shutil.rmtree(folder, ignore_errors=True)
  m = {k: statistics.median(v) for k, v in times.items()}
  m['bytes'] = sum(x.nbytes for x in jax.tree.leaves(state))
  off = m['save_off'] + m['restore_off']
  m['overhead'] = (m['save'] + m['restore'] - off) / off
  m['share'] = (m['fp'] + m['check']) / off
  return m


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--configs', default='fashion_mnist_synth,cifar10_synth')
  parser.add_argument('--repeats', type=int, default=7)
  parser.add_argument('--folder', default='/tmp/hatebm_ckpt_bench')
  parser.add_argument(
      '--json', default=common.json_path('checkpoint_integrity.json')
  )
  args = parser.parse_args()
  if args.repeats < 1:
    parser.error(f'--repeats={args.repeats} must be >= 1.')
  info = common.machine()
  print(common.describe(info))
  common.print_header(
      [
          'config',
          'state MB',
          'save + restore s, no fingerprints',
          'with fingerprints',
          'overhead',
          'fingerprint ms',
          'check ms',
          '(fingerprint + check) / (save + restore)',
      ]
  )
  results = {}
  for name in args.configs.split(','):
    config = common.checked_config(parser, name, modes=('synthesis',))
    m = measure(config, args.folder, args.repeats)
    results[name] = m
    common.print_row(
        [
            name,
            f"{m['bytes'] / 1e6:.1f}",
            f"{m['save_off']:.3f} + {m['restore_off']:.3f}",
            f"{m['save']:.3f} + {m['restore']:.3f}",
            f"{100 * m['overhead']:+.1f}%",
            f"{1e3 * m['fp']:.1f}",
            f"{1e3 * m['check']:.1f}",
            f"{100 * m['share']:.1f}%",
        ]
    )
    common.write_json(
        args.json, {'machine': info, 'results': results}, quiet=True
    )
  print(f'# wrote {args.json}')


if __name__ == '__main__':
  main()
