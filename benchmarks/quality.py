r"""Sample quality against training compute: train, then score checkpoints.

  python benchmarks/quality.py --config=configs/fashion_mnist_synth.py \
      --workdir=/tmp/quality/quick --label=quick-start
  python benchmarks/quality.py --config=configs/fashion_mnist_synth.py \
      --workdir=/tmp/quality/k5 --label='K = 5' -- --config.mcmc_steps=5
  python benchmarks/quality.py --config=configs/fashion_mnist_synth.py \
      --workdir=/tmp/quality/quick --steps=all    # re-scores every kept step

Runs `python -m hatebm_jax.main` with the config and any flags after `--`
(skipped when the run has already finished: rerunning only re-scores), reads
the wall time of every logged step from its output (the `uptime` scalar,
seconds since the run started, compilation included), then runs
`python -m hatebm_jax.evaluate` on the last checkpoint (or every kept one,
--steps=all): FCD and KID of X = G(z) + y and of G(z) alone, --num_samples
samples against the 10,000 Fashion-MNIST test images, with the run's
training sampler, for each kind of weights the run keeps (its moving
averages and its raw weights). Prints one markdown row per checkpoint and
weights, and writes them to <workdir>/quality.json. With --ood it also
reports the AUROC of H(x) for MNIST, uniform noise and constant images.

The numbers are wall-clock measurements of this machine: run it on an idle
one.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UPTIME = re.compile(r'\[(\d+)\] uptime=([0-9.]+)')
TRAINED = re.compile(r'Trained steps (\d+)-(\d+) in ([0-9.]+) s')


def _run(argv: list[str], log_path: str) -> str:
  """Runs a command with its output appended to `log_path` as it comes;
  returns that output."""
  with open(log_path, 'a') as log:
    start = log.tell()
    proc = subprocess.run(
        argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=False
    )
  with open(log_path) as log:
    log.seek(start)
    out = log.read()
  if proc.returncode:
    sys.exit(f'{" ".join(argv)} failed:\n{out[-3000:]}')
  return out


def _kept_steps(workdir: str) -> list[int]:
  folder = os.path.join(workdir, 'checkpoints')
  return sorted(int(n) for n in os.listdir(folder) if n.isdigit())


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--config', required=True)
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--label', default='')
  parser.add_argument('--num_samples', type=int, default=10_000)
  parser.add_argument(
      '--steps', default='last', help="'last', 'all' or steps: 1000,2000"
  )
  parser.add_argument(
      '--sources',
      default='ebm,generator',
      help="what to score: 'ebm,generator' for a Hat EBM, 'generator' (and "
      "'ddls') for an SN-GAN",
  )
  parser.add_argument('--ood', action='store_true')
  parser.add_argument('flags', nargs='*', help='flags for hatebm_jax.main')
  args = parser.parse_args()
  os.makedirs(args.workdir, exist_ok=True)
  log_path = os.path.join(args.workdir, 'quality.log')

  start = time.time()
  out = _run(
      [
          sys.executable,
          '-m',
          'hatebm_jax.main',
          f'--config={args.config}',
          f'--workdir={args.workdir}',
          *args.flags,
      ],
      log_path,
  )
  train_wall = time.time() - start
  with open(log_path) as f:
    logged = f.read()
  uptime = {int(s): float(t) for s, t in UPTIME.findall(logged)}
  trained = TRAINED.findall(out)

  kept = _kept_steps(args.workdir)
  if args.steps == 'last':
    steps = kept[-1:]
  elif args.steps == 'all':
    steps = kept
  else:
    steps = [int(s) for s in args.steps.split(',')]
    missing = sorted(set(steps) - set(kept))
    if missing:
      sys.exit(f'--steps: {missing} not kept in {args.workdir} (kept: {kept})')
  metrics = 'fcd,kid,ood' if args.ood else 'fcd,kid'
  rows = []
  for step in steps:
    for weights in ('ema', 'raw'):
      output = os.path.join(args.workdir, f'quality_{weights}_{step}.json')
      _run(
          [
              sys.executable,
              '-m',
              'hatebm_jax.evaluate',
              f'--workdir={args.workdir}',
              f'--step={step}',
              f'--metrics={metrics}',
              f'--sources={args.sources}',
              f'--num_samples={args.num_samples}',
              f'--sample_weights={weights}',
              f'--output={output}',
          ],
          log_path,
      )
      with open(output) as f:
        result = json.load(f)
      rows.append(_row(args.label, step, result['weights'], uptime, result))
      if result['weights'] != weights:
        break  # a run without averages: 'ema' sampled the raw weights
  print(
      '| run | weights | step | wall s | FCD X | FCD G(z) | KID X | KID G(z) |'
      + (' AUROC MNIST | noise | constant |' if args.ood else '')
  )
  print('|---' * (11 if args.ood else 8) + '|')
  for row in rows:
    print(row['markdown'])
  if trained:
    print(f'# training this call: {trained[-1]} (wall {train_wall:.0f} s)')
  with open(os.path.join(args.workdir, 'quality.json'), 'w') as f:
    json.dump(rows, f, indent=1)


def _row(label, step, weights, uptime, result) -> dict:
  """One table row: X is 'ebm' (or an SN-GAN's 'ddls'), G(z) 'generator'."""
  samples = result['samples']
  fcd = {s: samples[s]['fcd'] for s in samples}
  kid = {s: samples[s]['kid'] for s in samples}
  x = next((s for s in ('ebm', 'ddls') if s in samples), None)
  number = lambda d, s, f: f'{d[s]:{f}}' if s in d else '-'
  wall = uptime.get(step)
  cells = [
      label,
      weights,
      str(step),
      f'{wall:.0f}' if wall is not None else '?',
      number(fcd, x, '.1f'),
      number(fcd, 'generator', '.1f'),
      number(kid, x, '.2f'),
      number(kid, 'generator', '.2f'),
  ]
  ood = result.get('ood', {}).get('auroc', {})
  for name in ('mnist', 'uniform_noise', 'constant') if ood else ():
    cells.append(f'{ood[name]:.3f}')
  return {
      'label': label,
      'weights': weights,
      'step': step,
      'wall_s': wall,
      'fcd': fcd,
      'kid': kid,
      'ood': ood,
      'markdown': '| ' + ' | '.join(cells) + ' |',
  }


if __name__ == '__main__':
  main()
