r"""Where a training iteration spends its time on a TPU, by the compiler's own estimates.

  python benchmarks/accelerator_estimates.py --config=imagenet_scaled --topology=v5p-32
  python benchmarks/accelerator_estimates.py --config=cifar10_synth --topology=v5litepod-8 \
      --overrides=compute_dtype=bfloat16
  python benchmarks/accelerator_estimates.py --peaks     # the cost model's matmul rate per TPU

Needs the `[aot]` extra; runs on a CPU (JAX pinned to its CPU platform), nothing executed.
Compiles the config's training step for the target, laid out and rolled as training runs it
(`hatebm_jax.compiled.compile_step`), and reads the TPU compiler's `estimated_cycles` of every
instruction the step executes (`hatebm_jax.infra.hlo.timed`: the entry computation and the
Langevin loop's body, the body counted K times), by kind of operation (convolution, matmul,
pooling, reduction, elementwise, copy/layout, collective) with its share, and the instructions
the compiler gave no estimate for (their runs and result bytes). The total, at
`hatebm_jax.compiled.seconds_per_cycle`, is the estimate `python -m hatebm_jax.aot` reports.
These are the compiler's estimates, not measurements. Writes JSON next to itself.
"""

import argparse
import collections
import json
import os
import sys

os.environ['JAX_PLATFORMS'] = 'cpu'
os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')

import common  # pylint: disable=g-bad-import-order,wrong-import-position

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from hatebm_jax import compiled  # pylint: disable=g-import-not-at-top,wrong-import-position
from hatebm_jax.infra import hlo  # pylint: disable=g-import-not-at-top,wrong-import-position
from hatebm_jax.infra import parallel  # pylint: disable=g-import-not-at-top,wrong-import-position
from hatebm_jax.infra import runtime  # pylint: disable=g-import-not-at-top,wrong-import-position
from hatebm_jax.infra import targets  # pylint: disable=g-import-not-at-top,wrong-import-position

TOP = 15


def breakdown(module: hlo.Module) -> dict:
  """{kind: {'cycles', 'instructions', 'unestimated_runs', 'unestimated_mib'}}
  of an iteration, loop bodies counted per trip."""
  rows = collections.defaultdict(
      lambda: {
          'cycles': 0,
          'instructions': 0,
          'unestimated_runs': 0,
          'unestimated_mib': 0.0,
      }
  )
  for t in hlo.timed(module):
    row = rows[t.kind]
    row['instructions'] += 1
    if t.cycles is None:
      row['unestimated_runs'] += t.runs
      row['unestimated_mib'] += t.bytes * t.runs / 2**20
    else:
      row['cycles'] += t.cycles * t.runs
  return dict(rows)


def estimate(config, target, devices) -> dict:
  """The breakdown of `config`'s step on `target` by kind of operation."""
  mesh = jax.sharding.Mesh(np.array(devices), (parallel.DATA_AXIS,))
  build, _ = compiled.compile_step(config, mesh, 1)
  per_cycle, model_peak = compiled.seconds_per_cycle(devices[0])
  rows = breakdown(build.module)
  total = sum(r['cycles'] for r in rows.values())
  flops = compiled.corrected(
      {u: compiled.training_flops(config, u)[0] for u in (1, 2)},
      (1, 2),
      compiled.chain_length(compiled.training_flops(config, 2)[1], 2),
  )
  top = sorted(
      (t for t in hlo.timed(build.module) if t.cycles),
      key=lambda t: -t.cycles * t.runs,
  )[:TOP]
  instructions = {
      i.name: i for c in build.module.computations.values() for i in c
  }
  return {
      'top': [
          {
              'name': t.name,
              'kind': t.kind,
              'runs': t.runs,
              'share': t.cycles * t.runs / total,
              'convolutions': hlo.convolutions(
                  build.module, instructions[t.name]
              ),
          }
          for t in top
      ],
      'target': target.name,
      'device_kind': devices[0].device_kind,
      'num_devices': target.num_devices,
      'per_device_batch': config.batch_size // target.num_devices,
      'kinds': rows,
      'cycles': total,
      'estimated_iteration_s': total * per_cycle,
      'model_tflop_per_iteration': flops / 1e12,
      'estimated_bf16_utilization': flops
      / (total * per_cycle * target.num_devices * target.peak_tflops * 1e12),
      'model_matmul_tflops': model_peak,
  }


def print_estimate(name, config, r) -> None:
  print(
      f"# {name} on {r['target']}: {r['num_devices']} x {r['device_kind']}, batch "
      f"{config.batch_size} ({r['per_device_batch']} per device), K = "
      f'{config.mcmc_steps}, {config.compute_dtype}'
  )
  print(
      '| kind | instructions | share of the estimated cycles | no estimate: runs (MiB) |'
  )
  print('|---|---|---|---|')
  total = r['cycles']
  for kind, row in sorted(r['kinds'].items(), key=lambda kv: -kv[1]['cycles']):
    print(
        f"| {kind} | {row['instructions']} | {100 * row['cycles'] / total:.1f}% | "
        f"{row['unestimated_runs']} ({row['unestimated_mib']:.1f}) |"
    )
  print(f'\nThe {TOP} instructions with the most estimated cycles:\n')
  print('| instruction | kind | runs | share | convolutions (dots) it runs |')
  print('|---|---|---|---|---|')
  for t in r['top']:
    print(
        f"| {t['name']} | {t['kind']} | {t['runs']} | {100 * t['share']:.1f}% | "
        f"{'; '.join(t['convolutions'])} |"
    )
  print(
      f"\nestimated {r['estimated_iteration_s']:.4g} s per iteration, "
      f"{r['model_tflop_per_iteration']:.4g} TFLOP: "
      f"{100 * r['estimated_bf16_utilization']:.0f}% of the bf16 peak (the model's "
      f"matmul rate: {r['model_matmul_tflops']:.0f} TFLOP/s)"
  )


def peaks() -> dict:
  out = {}
  for name in ('v3-8', 'v4-8', 'v5litepod-1', 'v5p-8', 'v6e-1'):
    device = targets.parse(name).devices()[0]
    per_cycle, rate = compiled.seconds_per_cycle(device)
    out[name] = {'model_tflops': rate, 'cycles_per_ns': 1e-9 / per_cycle}
    print(
        f'{name:<12} {device.device_kind:<12} model {rate:6.1f} TFLOP/s '
        f'(datasheet {targets.parse(name).peak_tflops}), '
        f'{1e-9 / per_cycle:.3f} estimated cycles per ns'
    )
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', default='imagenet_scaled')
  parser.add_argument('--topology', default='v5p-32')
  parser.add_argument('--overrides', default='', help='key=value,key=value')
  parser.add_argument('--peaks', action='store_true')
  args = parser.parse_args()
  with runtime.native_logs_hidden():
    if args.peaks:
      result = {'peaks': peaks()}
    else:
      overrides = {}
      for item in filter(None, args.overrides.split(',')):
        key, value = item.split('=', 1)
        try:
          overrides[key] = json.loads(value)
        except json.JSONDecodeError:
          overrides[key] = value
      config = common.checked_config(parser, args.config, **overrides)
      target = targets.parse(args.topology)
      devices = target.devices()
      config = compiled.check_config(config, target)
      result = estimate(config, target, devices)
      print_estimate(f'{args.config} {args.overrides}'.strip(), config, result)
      result.update(
          config=args.config, overrides=args.overrides, topology=args.topology
      )
  path = os.path.join(
      os.path.dirname(os.path.abspath(__file__)), 'accelerator_estimates.json'
  )
  with open(path, 'w') as f:
    json.dump(result, f, indent=1)
  return 0


if __name__ == '__main__':
  sys.exit(main())
