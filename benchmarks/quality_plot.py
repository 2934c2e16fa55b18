r"""Quality against compute: FCD of X and of G(z) over wall time and iterations.

  python benchmarks/quality_plot.py --out=docs/quality_vs_compute.png \
      /tmp/q/long/quality.json /tmp/q/sngan/quality.json

Reads the quality.json files that `benchmarks/quality.py` writes (one row
per scored checkpoint and kind of weights) and draws, for every run (its
label), FCD against wall time in minutes (left) and against training
iterations (right): solid lines for X (the Hat EBM's samples G(z) + y, or an
SN-GAN's DDLS samples), dashed for G(z) alone. Rows of the same run with
other weights ('ema', 'raw') are drawn as separate lines. Prints the points
it drew as a markdown table.
"""

import argparse
import json

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top


def _series(rows):
  """{(label, weights): sorted [(step, wall_s, fcd_x, fcd_g)]}."""
  out = {}
  for row in rows:
    fcd = row['fcd']
    x = fcd.get('ebm', fcd.get('ddls'))
    key = (row['label'], row['weights'])
    out.setdefault(key, []).append(
        (row['step'], row['wall_s'], x, fcd.get('generator'))
    )
  return {k: sorted(v) for k, v in out.items()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('files', nargs='+', help='quality.json files')
  parser.add_argument('--out', required=True, help='PNG to write')
  args = parser.parse_args()
  rows = []
  for path in args.files:
    with open(path) as f:
      rows += json.load(f)
  series = _series(rows)
  fig, (by_time, by_step) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
  print('| run | weights | step | wall min | FCD X | FCD G(z) |')
  print('|---|---|---|---|---|---|')
  for (label, weights), points in series.items():
    name = (
        label
        if len(series) == len({k[0] for k in series})
        else (f'{label} ({weights})')
    )
    steps = [p[0] for p in points]
    minutes = [(p[1] or 0) / 60 for p in points]
    for index, (kind, style) in enumerate((('X', '-o'), ('G(z)', '--s'))):
      values = [p[2 + index] for p in points]
      if all(v is None for v in values):
        continue
      line = by_time.plot(minutes, values, style, label=f'{name}: {kind}')[0]
      by_step.plot(steps, values, style, color=line.get_color())
    for step, wall, x, g in points:
      g_text = f'{g:.1f}' if g is not None else '-'
      print(
          f'| {label} | {weights} | {step} | {(wall or 0) / 60:.1f} | '
          f'{x:.1f} | {g_text} |'
      )
  by_time.set_xlabel(
      'wall time (minutes, 2-core CPU, compilation and ' 'evaluations included)'
  )
  by_step.set_xlabel('training iterations')
  by_time.set_ylabel('FCD to Fashion-MNIST test (lower is better)')
  for axes in (by_time, by_step):
    axes.grid(alpha=0.3)
  by_time.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(args.out, dpi=110)
  print(f'# wrote {args.out}')


if __name__ == '__main__':
  main()
