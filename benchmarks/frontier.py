r"""The one-hour frontier: record runs, then plot FCD against wall time by width.

  python benchmarks/frontier.py --record=docs/quality_frontier.json \
      /tmp/q35/w32b16n /tmp/q35/w32b8          # add (or update) these runs
  python benchmarks/frontier.py --record=docs/quality_frontier.json \
      --out=docs/quality_frontier.png          # plot and tabulate all runs

Each workdir is a run of `benchmarks/quality.py` (training, then
`hatebm_jax.evaluate` of its last checkpoint). From it this reads:
- the run's config, from its last checkpoint (hat and generator ngf, batch
  size, chains from noise, the energy penalty, the learning-rate schedules);
- its curve: the FCD of X that training logged (2,000 samples, every
  `eval_freq` steps) against the `uptime` scalar of the same step (seconds
  since the run started, compilation and in-run evaluations included);
- its final scores, from `quality.json`: FCD of X and of G(z) with
  --num_samples samples (10,000 for the frontier) and the AUROC of H(x) for
  MNIST, uniform noise and constant images.

A run stopped before its scores (a clip-bound or diverged one, stopped by
hand or by the divergence guard) has no `quality.json`: it is recorded with
its curve up to the last logged step and no scores.

The record file keeps every run under its workdir's name, so the frontier
can grow across machines whose /tmp does not survive; a run given again
replaces its entry. The plot draws FCD of X against wall minutes, one colour
per width, one line style per batch size, triangles for chains from noise;
stars are the final 10,000-sample scores. It prints the frontier table in
markdown. Wall times are this host's: record the host's quick-start speed
(`--host`) beside each run.
"""

import argparse
import json
import os
import re

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
from quality import UPTIME  # pylint: disable=g-import-not-at-top  (the log's wall times)

FCD = re.compile(r'\[(\d+)\] fcd=([0-9.]+)')
STYLES = {8: '-', 16: '--', 32: ':'}
COLOURS = {32: 'tab:blue', 64: 'tab:orange', 128: 'tab:green'}


def read_run(workdir: str, host: str) -> dict:
  """One run's entry: its settings, logged curve and final scores.

  Raises:
    FileNotFoundError: when the workdir has no checkpoint or training log
      (`quality.log`).
  """
  from hatebm_jax.infra import checkpoint  # pylint: disable=g-import-not-at-top

  config = checkpoint.Checkpointer(workdir, read_only=True).restore_config()
  log_path = os.path.join(workdir, 'quality.log')
  scores_path = os.path.join(workdir, 'quality.json')
  if not os.path.exists(log_path):
    raise FileNotFoundError(
        f'{log_path} is missing: run benchmarks/quality.py '
        f'--workdir={workdir} --num_samples=10000 --ood first.'
    )
  with open(log_path) as f:
    log = f.read()
  # A resumed run logs its steps again from the restored one: keep the last.
  uptime = {int(s): float(t) for s, t in UPTIME.findall(log)}
  curve = [
      [int(s), uptime.get(int(s)), float(v)]
      for s, v in dict(FCD.findall(log)).items()
  ]
  if os.path.exists(scores_path):
    with open(scores_path) as f:
      rows = json.load(f)
    last = max(rows, key=lambda r: (r['step'], r['weights'] == 'raw'))
  else:  # stopped before scoring: the last logged step, no scores
    step = max(uptime, default=0)
    last = dict(
        step=step, wall_s=uptime.get(step), fcd={}, ood=None, weights=None
    )
  return {
      'ebm_ngf': config['ebm_ngf'],
      'gen_ngf': config['gen_ngf'],
      'batch_size': config['batch_size'],
      'noise_init_fraction': config['noise_init_fraction'],
      'energy_l2': config['energy_l2'],
      'ebm_lr_info': config['ebm_lr_info'],
      'gen_lr_info': config['gen_lr_info'],
      'seed': config['seed'],
      'steps': last['step'],
      'wall_s': last['wall_s'] or max(uptime.values(), default=None),
      'curve': sorted(curve),
      'fcd_x': last['fcd'].get('ebm'),
      'fcd_g': last['fcd'].get('generator'),
      'auroc': last['ood'],
      'weights': last['weights'],
      'host': host,
  }


def _name(run: dict) -> str:
  width = (
      f'ngf {run["ebm_ngf"]}'
      if run['ebm_ngf'] == run['gen_ngf']
      else f'ngf {run["ebm_ngf"]}/{run["gen_ngf"]}'
  )
  noise = ', noise' if run['noise_init_fraction'] else ''
  return f'{width}, batch {run["batch_size"]}{noise}, seed {run["seed"]}'


def _cell(value, form) -> str:
  return '-' if value is None else f'{value:{form}}'


def plot(runs: dict, out: str) -> None:
  """Draws FCD of X against wall minutes, and prints the frontier table."""
  fig, axes = plt.subplots(figsize=(8, 4.8))
  print(
      '| run | hat/gen ngf | batch | chains from noise, energy_l2 | steps |'
      ' wall min | FCD X | FCD G(z) | AUROC MNIST | uniform | constant |'
      ' host |'
  )
  print('|---' * 12 + '|')
  for key, run in sorted(runs.items(), key=lambda kv: _name(kv[1])):
    colour = COLOURS.get(run['ebm_ngf'], 'tab:gray')
    style = STYLES.get(run['batch_size'], '-.')
    marker = '^' if run['noise_init_fraction'] else 'o'
    points = [(w / 60, v) for _, w, v in run['curve'] if w is not None]
    if points:
      axes.plot(
          *zip(*points),
          style,
          marker=marker,
          markersize=3,
          color=colour,
          label=f'{key}: {_name(run)}',
      )
    if run['fcd_x'] is not None and run['wall_s']:
      axes.plot(
          run['wall_s'] / 60, run['fcd_x'], '*', color=colour, markersize=11
      )
    auroc = run['auroc'] or {}
    noise = (
        f'{run["noise_init_fraction"]:g}, {run["energy_l2"]:g}'
        if run['noise_init_fraction']
        else 'no'
    )
    steps = f'{run["steps"]:,}' + ('' if run['weights'] else ', stopped')
    print(
        f'| {key} | {run["ebm_ngf"]}/{run["gen_ngf"]} | {run["batch_size"]} |'
        f' {noise} | {steps} | {_cell(run["wall_s"] and run["wall_s"] / 60, ".1f")} |'
        f' {_cell(run["fcd_x"], ".1f")} | {_cell(run["fcd_g"], ".1f")} |'
        f' {_cell(auroc.get("mnist"), ".3f")} |'
        f' {_cell(auroc.get("uniform_noise"), ".3f")} |'
        f' {_cell(auroc.get("constant"), ".3f")} | {run["host"]} |'
    )
  axes.axvline(60, color='k', alpha=0.3, linewidth=1)
  axes.axhline(15, color='k', alpha=0.3, linewidth=1, linestyle='--')
  axes.set_xlabel(
      'wall time (minutes, 2 idle CPU cores; compilation and in-run '
      'evaluations included)'
  )
  axes.set_ylabel('FCD of X to Fashion-MNIST test')
  axes.set_ylim(0, 100)
  axes.grid(alpha=0.3)
  axes.legend(fontsize=7)
  axes.set_title(
      'lines: 2,000-sample FCD logged in training; stars: 10,000 samples',
      fontsize=9,
  )
  fig.tight_layout()
  fig.savefig(out, dpi=110)
  print(f'# wrote {out}')


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('workdirs', nargs='*', help='runs to add to the record')
  parser.add_argument('--record', required=True, help='JSON of all runs')
  parser.add_argument('--out', help='PNG to write')
  parser.add_argument(
      '--host',
      default='',
      help="this host, e.g. 'AMD EPYC, quick start 12.2 it/s'",
  )
  args = parser.parse_args()
  runs = {}
  if os.path.exists(args.record):
    with open(args.record) as f:
      runs = json.load(f)
  for workdir in args.workdirs:
    runs[os.path.basename(os.path.normpath(workdir))] = read_run(
        workdir, args.host
    )
  if args.workdirs:
    with open(args.record, 'w') as f:
      json.dump(runs, f, indent=1)
  if args.out:
    plot(runs, args.out)


if __name__ == '__main__':
  main()
