r"""Peak memory of a synthesis training iteration against the chain length K.

  python benchmarks/memory.py                               # cifar10_synth, B 128
  python benchmarks/memory.py --steps=10,100 --unroll=1     # rolled chain
  python benchmarks/memory.py --batch=32 --steps=10,100 --run   # also measure

For each K it compiles the training loop's step (`train.Program`:
one-device mesh, donated state, divergence guard) and reports XLA's buffer
assignment: arguments, outputs, donated (aliased) bytes, temporaries, and
their peak. Nothing of the chain is stored, so the peak must not grow with K.
With --run each K also runs one iteration in a fresh process and reports
the measured high-water mark: the device allocator's peak on GPU/TPU, the
process's peak resident memory on CPU (which includes the Python process,
the compiled code and compilation itself). Writes JSON.
"""

import argparse
import json
import os
import resource
import subprocess
import sys

import common  # pylint: disable=g-bad-import-order  (sets XLA flags first)

import jax  # pylint: disable=g-import-not-at-top

from hatebm_jax.infra import parallel
from hatebm_jax import train  # pylint: disable=g-import-not-at-top


def compiled_step(config):
  """(model, compiled loop step, its arguments' shapes) of `config`."""
  mesh = parallel.make_mesh(1)
  program = train.Program.build(config, mesh)
  health = program.fresh_health(mesh)
  images = jax.ShapeDtypeStruct(
      (config.batch_size,) + tuple(config.image_dims), 'float32'
  )
  with jax.set_mesh(mesh):
    compiled = program.step.lower(program.abstract, images, health).compile()
  return program.mode, mesh, program.shardings, compiled, health


def run_once(config):
  """Runs one iteration; the measured peak in GiB."""
  model, mesh, shardings, compiled, health = compiled_step(config)
  state = jax.jit(model.init, out_shardings=shardings)(jax.random.PRNGKey(0))
  images = jax.random.uniform(
      jax.random.PRNGKey(1),
      (config.batch_size,) + tuple(config.image_dims),
      minval=-1.0,
  )
  with jax.set_mesh(mesh):
    jax.block_until_ready(compiled(state, images, health))
  device = common.device_peak_gib()
  if device is not None:
    return device, 'device allocator peak'
  return (
      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
      'process peak RSS',
  )


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', default='cifar10_synth')
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--steps', default='10,20,50,100')
  parser.add_argument(
      '--unroll',
      type=int,
      default=-1,
      help='langevin_unroll (-1: the backend default)',
  )
  parser.add_argument('--bank_batches', type=int, default=2)
  parser.add_argument(
      '--run',
      action='store_true',
      help='also run one iteration per K in a fresh process',
  )
  parser.add_argument('--json', default=common.json_path('memory.json'))
  parser.add_argument('--child_k', type=int, default=0, help=argparse.SUPPRESS)
  args = parser.parse_args()

  def config_for(k):
    return common.checked_config(
        parser,
        args.config,
        modes=('synthesis',),
        batch_size=args.batch,
        mcmc_steps=k,
        langevin_unroll=args.unroll,
        persistent_size=args.bank_batches * args.batch,
    )

  if args.child_k:
    peak, what = run_once(config_for(args.child_k))
    print('RESULT ' + json.dumps({'peak_gib': peak, 'what': what}))
    return
  if args.bank_batches < 1:
    parser.error(f'--bank_batches={args.bank_batches} must be >= 1.')
  steps = common.parse_ints(parser, 'steps', args.steps, 1)
  for k in steps:  # every setting is checked before anything compiles
    config_for(k)

  info = common.machine()
  print(common.describe(info), flush=True)
  print(
      f'# {args.config}, batch {args.batch}, langevin_unroll '
      f'{args.unroll}; GiB',
      flush=True,
  )
  common.print_header(
      [
          'K',
          'arguments',
          'outputs',
          'donated',
          'temporaries',
          'XLA peak',
          'vs first K',
      ]
      + (['measured peak'] if args.run else [])
  )
  rows = []
  for k in steps:
    _, _, _, compiled, _ = compiled_step(config_for(k))
    row = {'steps': k, **common.memory(compiled)}
    if args.run:
      proc = subprocess.run(
          [
              sys.executable,
              os.path.abspath(__file__),
              f'--config={args.config}',
              f'--batch={args.batch}',
              f'--unroll={args.unroll}',
              f'--bank_batches={args.bank_batches}',
              f'--child_k={k}',
          ],
          capture_output=True,
          text=True,
          check=True,
      )
      result = json.loads(
          [
              line
              for line in proc.stdout.splitlines()
              if line.startswith('RESULT ')
          ][-1][7:]
      )
      row['measured_peak_gib'], row['measured'] = (
          result['peak_gib'],
          result['what'],
      )
    rows.append(row)
    ratio = row['peak_gib'] / rows[0]['peak_gib']
    common.print_row(
        [str(k)]
        + [
            f'{row[c]:.4g}'
            for c in (
                'arguments_gib',
                'outputs_gib',
                'aliased_gib',
                'temporaries_gib',
                'peak_gib',
            )
        ]
        + [f'{ratio:.3f}']
        + (
            [f"{row['measured_peak_gib']:.4g} ({row['measured']})"]
            if args.run
            else []
        )
    )
    common.write_json(
        args.json,
        {
            'machine': info,
            'config': args.config,
            'batch': args.batch,
            'unroll': args.unroll,
            'results': rows,
        },
        quiet=True,
    )
  print(f'# wrote {args.json}')


if __name__ == '__main__':
  main()
