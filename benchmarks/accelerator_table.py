r"""Every config compiled for the accelerators of the paper, a current TPU slice and 8xH100.

  python benchmarks/accelerator_table.py                       # all configs (hours on 2 cores)
  python benchmarks/accelerator_table.py --configs=cifar10_synth --targets=v5litepod-8

Runs `python -m hatebm_jax.aot --config=configs/<config>.py --topology=<target> --json=...` for
each pair (needs the `[aot]` extra; nothing runs on an accelerator) and prints the table of
docs/performance.md ("Accelerators, compiled here"). The reports are kept in
benchmarks/accelerator_table/<config>@<target>.json; an existing report is reused (delete it to
compile again).
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, 'benchmarks', 'accelerator_table')

# The hardware each config ran on in the paper (docs/official_release.md §5, §6.5): ImageNet
# ngf 1024 on "8 GPUs" (the model is not named; 8xA100 here), ngf 2048 on a TPU v3-32; the
# release ships every other config for one GPU ("device gpu"; 1xA100 here). The Fashion-MNIST
# configs are this project's CPU runs: not in the paper.
PAPER = {
    'imagenet_scaled': 'v3-32',
    'imagenet_synth': '8xA100',
    'cifar10_synth': '1xA100',
    'celeba_synth': '1xA100',
    'cifar10_refine': '1xA100',
    'celeba_refine': '1xA100',
    'cifar10_retrofit': '1xA100',
    'cifar10_ae': '1xA100',
    'cifar10_sngan': '1xA100',
}
CURRENT = ('v6e-8', '8xH100')
EXTRA = {'imagenet_scaled': ('v5p-32',), 'cifar10_synth': ('v5litepod-8',)}


def configs():
  """Every config: the paper's synthesis runs first, this project's
  Fashion-MNIST configs (CPU runs, not in the paper) last."""
  first = ['imagenet_scaled', 'imagenet_synth', 'cifar10_synth', 'celeba_synth']
  names = sorted(
      n[:-3]
      for n in os.listdir(os.path.join(ROOT, 'configs'))
      if n.endswith('.py')
  )
  rest = [n for n in names if n not in first]
  return first + sorted(rest, key=lambda n: n.startswith('fashion_mnist'))


def targets_of(config):
  """The paper's hardware (where the paper used this config), then CURRENT and EXTRA."""
  names = (PAPER.get(config),) + CURRENT + EXTRA.get(config, ())
  return tuple(n for n in dict.fromkeys(names) if n)


def run(config, target, sampling, timeout):
  """The aot report of one pair; None if it failed, the timeout in seconds
  if its compiles took longer."""
  path = os.path.join(OUT, f'{config}@{target}.json')
  if not os.path.exists(path) and timeout == 0:
    return 0
  if not os.path.exists(path):
    os.makedirs(OUT, exist_ok=True)
    try:
      proc = subprocess.run(
          [
              sys.executable,
              '-m',
              'hatebm_jax.aot',
              f'--config=configs/{config}.py',
              f'--topology={target}',
              f'--json={path}',
              '--sampling' if sampling else '--nosampling',
          ],
          cwd=ROOT,
          capture_output=True,
          text=True,
          timeout=timeout,
      )
    except subprocess.TimeoutExpired:
      return timeout
    print(proc.stdout, proc.stderr, file=sys.stderr, flush=True)
    if not os.path.exists(path):
      return None
  with open(path) as f:
    return json.load(f)


def row(config, target, r, sampling):
  """One line of the table from a report (None: it failed to compile; a
  number: not compiled within that many seconds, 0: not compiled yet)."""
  columns = len(header(sampling))
  if r is None or isinstance(r, (int, float)):
    if r is None:
      why = 'failed to compile'
    elif r == 0:
      why = 'not compiled yet'
    else:
      why = f'not compiled within {r:.0f} s here'
    return (
        '| '
        + ' | '.join([f'`{config}`', target, why] + [''] * (columns - 3))
        + ' |'
    )
  paper = ' (paper)' if PAPER.get(config) == r['target'] else ''
  est, util = r['estimated_iteration_s'], r['estimated_bf16_utilization']
  hours = r['estimated_training_hours']
  fits = {True: 'yes', False: 'no', None: ''}[r['fits']]
  largest = r.get('largest_fitting_batch')
  largest = f', fits up to {largest}' if largest else ''
  na = lambda v, fmt: 'n/a' if v is None else fmt.format(v)
  cells = [
      f'`{config}`',
      f"{r['target']}{paper}",
      f"{r['global_batch']} ({r['per_device_batch']})",
      f"{r['peak_gib']:.2f} of {r['usable_memory_gib']:.3g} GiB: {fits}{largest}",
      f"{r['model_tflop_per_iteration']:.4g}",
      na(est, '{:.4g}'),
      na(util and 100 * util, '{:.2g}%'),
      'n/a' if hours is None else duration(hours),
  ]
  if sampling:
    samples = (r.get('sampling') or {}).get('estimated_samples_per_s')
    cells.append(na(samples, '{:.4g}'))
  cells.append(f"{r['compile_s']:.0f}")
  return '| ' + ' | '.join(cells) + ' |'


def duration(hours):
  """Hours as hours, minutes or seconds, 4 significant digits."""
  if hours >= 1:
    return f'{hours:.4g} h'
  if hours * 60 >= 1:
    return f'{hours * 60:.3g} min'
  return f'{hours * 3600:.3g} s'


def header(sampling):
  """The table's column names."""
  names = [
      'config',
      'target',
      'batch (per device)',
      'peak of usable memory per device: fits',
      'model TFLOP / iteration',
      'est. s / iteration',
      'est. share of bf16 peak',
      'est. training time',
  ]
  if sampling:
    names.append('est. samples / s (one device)')
  return names + ['compile s']


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--configs', default=','.join(configs()))
  parser.add_argument(
      '--targets',
      default='',
      help='default: per config (PAPER, CURRENT, EXTRA)',
  )
  parser.add_argument(
      '--sampling',
      action='store_true',
      help='also compile the sampling program (slower)',
  )
  parser.add_argument(
      '--timeout',
      type=float,
      default=None,
      help='seconds for the compiles of one pair (default: no limit; 0: print'
      ' the reports kept, compile nothing)',
  )
  args = parser.parse_args()
  names = header(args.sampling)
  print('| ' + ' | '.join(names) + ' |')
  print('|' + '---|' * len(names))
  for config in args.configs.split(','):
    for target in (
        args.targets.split(',') if args.targets else targets_of(config)
    ):
      print(
          row(
              config,
              target,
              run(config, target, args.sampling, args.timeout),
              args.sampling,
          ),
          flush=True,
      )


if __name__ == '__main__':
  main()
