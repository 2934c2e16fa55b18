r"""Check a config against the accelerators you are about to rent, on this CPU.

  python -m hatebm_jax.aot --config=configs/imagenet_scaled.py \
      --topology=v3-32 [--json=report.json] [--config.key=value ...]
  python -m hatebm_jax.aot --config=configs/cifar10_synth.py --topology=8xH100
  python -m hatebm_jax.aot --config=configs/imagenet_scaled.py --num_devices=32

Compiles the config's training step, laid out as training lays it out
(networks and Adam states replicated, batch and replay bank split over a 1-D
'data' mesh), and the sampling program of `python -m hatebm_jax.sample`, with
XLA's compiler for the target: a Cloud TPU slice (`v3-32`, `v5p-8`,
`v6e-16`, ...), GPU hosts (`8xH100`, `2x8xA100`, ...), or N fake CPU devices
(`--num_devices=N`, XLA:CPU). Nothing runs and no accelerator is needed:
`pip install -e ".[aot]"` brings libtpu and the CUDA compiler.

Prints (and writes as JSON) per device: memory and whether it fits, the model
FLOPs of one iteration (the Langevin loop counted K times), on TPU the
compiler's estimate of the iteration's time and what the config's
`num_training_steps` would cost, and the collectives of the compiled step
(`hatebm_jax.compiled`; docs/accelerators.md). A step that does not fit is an
error naming the memory it needs, the device's, and the largest batch that
fits (found by compiling). The Langevin loop is compiled rolled
(`langevin_unroll` = 1), as accelerators run it, when the config leaves it on
auto (-1).
"""

import os
import sys


def _prepare_environment(argv) -> None:
  """Before JAX starts: the CPU platform only (compile-only TPU and GPU
  devices come from `jax.experimental.topologies`; libtpu and the CUDA
  plugin must not look for hardware), several processes may load libtpu at
  once, and `--num_devices` fake CPU devices for the CPU target."""
  count = '1'
  for i, arg in enumerate(argv):
    if arg.startswith('--num_devices='):
      count = arg.split('=', 1)[1]
    elif arg == '--num_devices' and i + 1 < len(argv):
      count = argv[i + 1]
  try:
    count = max(1, int(count))  # a bad value is reported after flag parsing
  except ValueError:
    count = 1
  os.environ['JAX_PLATFORMS'] = 'cpu'
  os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')
  # JAX's persistent cache cannot load executables of compile-only devices
  # (it warns at each), and a one-off check gains nothing from it.
  os.environ['JAX_ENABLE_COMPILATION_CACHE'] = 'false'
  flags = [
      f
      for f in os.environ.get('XLA_FLAGS', '').split()
      if not f.startswith('--xla_force_host_platform_device_count')
  ]
  os.environ['XLA_FLAGS'] = ' '.join(
      flags + [f'--xla_force_host_platform_device_count={count}']
  )


if __name__ == '__main__':
  _prepare_environment(sys.argv)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=g-import-not-at-top,wrong-import-position
import json

from absl import app
from absl import flags
from ml_collections import config_flags

from hatebm_jax.infra import runtime
from hatebm_jax.infra import targets

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file.', lock_config=True
)
flags.DEFINE_string(
    'topology',
    'cpu',
    'What to compile for: a Cloud TPU accelerator type (v3-32, v5litepod-8, '
    'v5p-8, v6e-16, ...), GPU hosts (8xH100, 8xA100, 2x8xH100) or cpu '
    '(--num_devices fake CPU devices).',
)
flags.DEFINE_integer(
    'num_devices', None, 'Fake CPU devices of --topology=cpu (default 1).'
)
flags.DEFINE_string('json', None, 'Also write the report to this file.')
flags.DEFINE_boolean(
    'sampling', True, 'Also compile the sampling program of hatebm_jax.sample.'
)
flags.DEFINE_boolean(
    'search',
    True,
    'When the step does not fit, find the largest batch that does, by '
    'compiling (several compiles).',
)
flags.mark_flags_as_required(['config'])


def _target() -> targets.Target:
  """The --topology target (checked before JAX starts)."""
  if FLAGS.num_devices is not None and FLAGS.topology.lower() != 'cpu':
    raise ValueError(
        f'--num_devices={FLAGS.num_devices} is for --topology=cpu; '
        f'--topology={FLAGS.topology} sets its own device count.'
    )
  count = 1 if FLAGS.num_devices is None else FLAGS.num_devices
  return targets.parse(FLAGS.topology, count)


def _check_json_path(path: str) -> None:
  """Refuses a --json path that cannot be written, before compiling.

  Raises:
    ValueError: naming the path and why.
  """
  folder = os.path.dirname(os.path.abspath(path))
  if os.path.isdir(path):
    raise ValueError(f'--json={path} is a directory: give a file name.')
  if not os.path.isdir(folder):
    raise ValueError(
        f'--json={path}: the folder {folder} does not exist; create it first.'
    )
  if not os.access(folder, os.W_OK):
    raise ValueError(f'--json={path}: the folder {folder} is not writable.')


def _line(label: str, value, unit: str = '') -> str:
  if value is None:
    value, unit = 'n/a', ''
  elif isinstance(value, float):
    value = f'{value:,.0f}' if abs(value) >= 1000 else f'{value:.4g}'
  return f'  {label:<34} {value}{unit}'


def describe(report: dict) -> str:
  """The report as console lines."""
  r = report
  fits = {True: 'yes', False: 'NO', None: 'n/a (host memory)'}[r['fits']]
  chain = '' if r['mcmc_steps'] is None else f", K = {r['mcmc_steps']}"
  lines = [
      f"{r['config']} ({r['mode']}) on {r['target']}: {r['num_devices']} x "
      f"{r['device_kind']}, {r['num_hosts']} host(s); batch "
      f"{r['global_batch']} ({r['per_device_batch']} per device){chain}; "
      f"compiled in {r['compile_s']} s",
      _line('device memory', r['device_memory_gib'], ' GiB'),
      _line('usable (what a program may hold)', r['usable_memory_gib'], ' GiB'),
      _line('training state per device', r['state_gib_per_device'], ' GiB'),
      _line('peak of the step per device', r['peak_gib'], ' GiB'),
      _line('fits', fits),
      _line('headroom', r['headroom_gib'], ' GiB'),
      _line('model TFLOP per iteration', r['model_tflop_per_iteration']),
      _line('estimated s per iteration', r['estimated_iteration_s']),
      _line(
          'estimated share of bf16 peak',
          None
          if r['estimated_bf16_utilization'] is None
          else f"{100 * r['estimated_bf16_utilization']:.2g}%",
      ),
      _line(
          f"estimated hours for {r['num_training_steps']:,} steps",
          r['estimated_training_hours'],
      ),
      _line('estimated chip-hours', r['estimated_chip_hours']),
  ]
  for c in r.get('collectives') or []:
    lines.append(
        _line(
            f"{c['kind']} per iteration",
            f"{c['runs']} ({c['count']} ops, {c['bytes'] / 2**20:,.1f} MiB; "
            f"{c['in_loop']} in loops)",
        )
    )
  s = r.get('sampling')
  if s:
    lines.append(
        _line(
            f"sample (batch {s['batch']}, one device)",
            f"peak {s['peak_gib']} GiB, fits "
            f"{ {True: 'yes', False: 'NO', None: 'n/a'}[s['fits']] }, "
            f"{s['model_tflop_per_batch']} TFLOP, estimated "
            f"{s['estimated_batch_s'] if s['estimated_batch_s'] is not None else 'n/a'}"
            ' s per batch',
        )
    )
  lines.append(_NOTES[r['platform']])
  return '\n'.join(lines)


_NOTES = {
    'tpu': (
        "  (estimates are the TPU compiler's roofline cost model, not "
        'measurements: docs/accelerators.md)'
    ),
    'gpu': (
        '  (no time estimate: the GPU compiler gives none; compiled without '
        "autotuning, cuDNN's workspaces are not in the peak: "
        'docs/accelerators.md)'
    ),
    'cpu': "  (XLA:CPU's buffer assignment and fusion, not an accelerator's)",
}


def _refusal(report: dict) -> str:
  """The one-line error of a step that does not fit."""
  r = report
  largest = r.get('largest_fitting_batch')
  if largest:
    advice = (
        f'the largest batch that fits is {largest} '
        f"({largest // r['num_devices']} per device): "
        f'--config.batch_size={largest}'
    )
  else:
    advice = 'not even one image per device fits'
  return (
      f"batch_size={r['global_batch']} does not fit on {r['target']}: the "
      f"training step needs {r['peak_gib']:.3g} GiB per device, a "
      f"{r['device_kind']} has {r['usable_memory_gib']:.3g} GiB usable; "
      f'{advice}.'
  )


def main(argv):
  runtime.no_arguments(argv)
  if FLAGS.json:
    _check_json_path(FLAGS.json)
  target = _target()
  devices = target.devices()
  runtime.setup(tensorflow=False)  # compiling needs no TensorFlow
  # The training code (and TensorFlow, which it imports for data and
  # summaries) loads here, so that a bad flag is reported in seconds.
  from hatebm_jax import compiled  # pylint: disable=g-import-not-at-top

  compiled.progress = lambda message: print(f'  {message}', flush=True)
  print(
      f'Compiling for {target.name} ({len(devices)} x '
      f'{devices[0].device_kind}); large configs take minutes per program.',
      flush=True,
  )
  report = compiled.report(
      FLAGS.config,
      target,
      devices,
      sampling=FLAGS.sampling,
      search=FLAGS.search,
  )
  print(describe(report))
  if FLAGS.json:
    with open(FLAGS.json, 'w') as f:
      json.dump(report, f, indent=1)
  if report['fits'] is False:
    raise ValueError(_refusal(report))


if __name__ == '__main__':
  with runtime.native_logs_hidden():
    app.run(runtime.report_errors(main), flags_parser=runtime.parse_flags)
