r"""Where a training iteration spends its time on a TPU, by the compiler's own estimates.

  python benchmarks/accelerator_estimates.py --config=imagenet_scaled --topology=v5p-32
  python benchmarks/accelerator_estimates.py --config=cifar10_synth --topology=v5litepod-8 \
      --overrides=compute_dtype=bfloat16
  python benchmarks/accelerator_estimates.py --peaks     # the cost model's matmul rate per TPU

Needs the `[aot]` extra; runs on a CPU (JAX pinned to its CPU platform), nothing executed.
Compiles the config's training step for the target, laid out and rolled as training runs it
(`hatebm_jax.compiled.compile_step`), and reads the TPU compiler's `estimated_cycles` of every
instruction the step executes (`hatebm_jax.infra.hlo.timed`: the entry computation and the
Langevin loop's body, the body counted K times). Cycles become seconds at the rate the same
compiler's roofline gives a 16384² bf16 matmul on one device of that TPU (`--peaks` prints it):
a compute-bound matmul then runs at the model's peak. Prints the iteration's cycle estimate by
kind of operation (convolution, matmul, pooling, reduction, elementwise, copy/layout,
collective) with its share, the instructions the compiler gave no estimate for (their result
bytes), and beside it the report's `optimal_seconds` estimate (`python -m hatebm_jax.aot`).
Both are the compiler's estimates, not measurements. Writes JSON next to itself.
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
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from hatebm_jax import compiled  # pylint: disable=g-import-not-at-top,wrong-import-position
from hatebm_jax.infra import hlo  # pylint: disable=g-import-not-at-top,wrong-import-position
from hatebm_jax.infra import parallel  # pylint: disable=g-import-not-at-top,wrong-import-position
from hatebm_jax.infra import runtime  # pylint: disable=g-import-not-at-top,wrong-import-position
from hatebm_jax.infra import targets  # pylint: disable=g-import-not-at-top,wrong-import-position

SIDE = 16384


def seconds_per_cycle(device) -> tuple[float, float]:
  """(seconds per estimated cycle, the model's matmul TFLOP/s) on one device:
  a SIDE² bf16 matmul's `optimal_seconds` over its `estimated_cycles`."""
  x = jax.ShapeDtypeStruct(
      (SIDE, SIDE),
      jnp.bfloat16,
      sharding=jax.sharding.SingleDeviceSharding(device),
  )
  build = compiled.compile_program(lambda: jax.jit(jnp.matmul).lower(x, x))
  cycles = sum(t.cycles or 0 for t in hlo.timed(build.module))
  return build.seconds / cycles, 2 * SIDE**3 / build.seconds / 1e12


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


def estimate(config, target, devices, with_report=True) -> dict:
  """The breakdown of `config`'s step on `target`, and the aot report."""
  mesh = jax.sharding.Mesh(np.array(devices), (parallel.DATA_AXIS,))
  build, _ = compiled.compile_step(config, mesh, 1)
  per_cycle, model_peak = seconds_per_cycle(devices[0])
  rows = breakdown(build.module)
  total = sum(r['cycles'] for r in rows.values())
  report = compiled.report(
      config, target, devices, sampling=False, search=False
  )
  return {
      'kinds': rows,
      'cycles': total,
      'cycle_estimate_s': total * per_cycle,
      'model_matmul_tflops': model_peak,
      'report': report,
  }


def print_estimate(name, result) -> None:
  r = result['report']
  print(
      f"# {name} on {r['target']}: {r['num_devices']} x {r['device_kind']}, batch "
      f"{r['global_batch']} ({r['per_device_batch']} per device), K = {r['mcmc_steps']}, "
      f"{r['compute_dtype']}"
  )
  print(
      '| kind | instructions | share of the estimated cycles | no estimate: runs (MiB) |'
  )
  print('|---|---|---|---|')
  total = result['cycles']
  for kind, row in sorted(
      result['kinds'].items(), key=lambda kv: -kv[1]['cycles']
  ):
    print(
        f"| {kind} | {row['instructions']} | {100 * row['cycles'] / total:.1f}% | "
        f"{row['unestimated_runs']} ({row['unestimated_mib']:.1f}) |"
    )
  cycle_s = result['cycle_estimate_s']
  flops = r['model_tflop_per_iteration'] * 1e12
  share = lambda s: flops / (
      s * r['num_devices'] * r['peak_bf16_tflops_per_device'] * 1e12
  )
  print(
      f'cycle estimate {cycle_s:.4g} s per iteration ({100 * share(cycle_s):.0f}% of the bf16 '
      f"peak; the model's matmul rate is {result['model_matmul_tflops']:.0f} TFLOP/s); "
      f"optimal_seconds estimate {r['estimated_iteration_s']} s "
      f"({100 * (r['estimated_bf16_utilization'] or 0):.0f}%)"
  )


def peaks() -> dict:
  out = {}
  for name in ('v3-8', 'v4-8', 'v5litepod-1', 'v5p-8', 'v6e-1'):
    device = targets.parse(name).devices()[0]
    per_cycle, rate = seconds_per_cycle(device)
    out[name] = {'model_tflops': rate, 'clock_ghz': 1e-9 / per_cycle}
    print(
        f'{name:<12} {device.device_kind:<12} model {rate:6.1f} TFLOP/s '
        f'(datasheet {targets.parse(name).peak_tflops}), '
        f'{1e-9 / per_cycle:.3f} G estimated cycles per second'
    )
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', default='imagenet_scaled')
  parser.add_argument('--topology', default='v5p-32')
  parser.add_argument('--overrides', default='', help='key=value,key=value')
  parser.add_argument('--peaks', action='store_true')
  parser.add_argument(
      '--noreport',
      action='store_true',
      help="skip the aot report's optimal_seconds estimate (three more compiles)",
  )
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
      result = estimate(config, target, devices, not args.noreport)
      print_estimate(f'{args.config} {args.overrides}'.strip(), result)
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
