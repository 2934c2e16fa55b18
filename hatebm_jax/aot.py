r"""Ahead-of-time check of a training step for N devices, without them.

  python -m hatebm_jax.aot --config=configs/imagenet_scaled.py \
      --num_devices=32 [--json=out.json] [--config.key=value ...]

Builds the config's model and state shapes (nothing is initialised), lays
them out on a 1-D 'data' mesh of N fake CPU devices exactly as training on
N accelerators would (networks replicated, batch and replay bank split),
lowers and compiles one training step, and prints the per-device memory
XLA assigned to the compiled step and its FLOP count. Nothing runs.

The numbers are XLA:CPU's buffer assignment for the same program: a guide
to the accelerator's per-device need (TPU and GPU compilers fuse and
rematerialise differently, usually within tens of percent), and a cheap
check that a config compiles, shards and fits before renting a pod. The
Langevin loop is compiled rolled (`langevin_unroll` = 1), as on
accelerators, when the config leaves it on auto (-1).
"""

import os
import sys


def _set_device_count(argv) -> None:
  """Fake `--num_devices` CPU devices: must happen before JAX starts."""
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
  flags = [
      f
      for f in os.environ.get('XLA_FLAGS', '').split()
      if not f.startswith('--xla_force_host_platform_device_count')
  ]
  os.environ['XLA_FLAGS'] = ' '.join(
      flags + [f'--xla_force_host_platform_device_count={count}']
  )


if __name__ == '__main__':
  _set_device_count(sys.argv)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=g-import-not-at-top,wrong-import-position
import json
import time

from absl import app
from absl import flags
import jax
import ml_collections
from ml_collections import config_flags
import numpy as np

from hatebm_jax import config_base
from hatebm_jax.infra import parallel
from hatebm_jax.infra import runtime

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file.', lock_config=True
)
flags.DEFINE_integer('num_devices', 1, 'Devices of the mesh to compile for.')
flags.DEFINE_string('json', None, 'Also write the report to this file.')
flags.mark_flags_as_required(['config'])

GIB = 2**30


def _nbytes(tree, mesh_size: int, shardings) -> int:
  """Bytes per device of a state laid out with `shardings`."""
  total = 0
  for leaf, sharding in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings)):
    size = int(np.prod(leaf.shape)) * np.dtype(leaf.dtype).itemsize
    total += size // mesh_size if sharding.spec else size
  return total


def compile_report(config: ml_collections.ConfigDict, num_devices: int) -> dict:
  """Lowers and compiles `config`'s training step for `num_devices`.

  Args:
    config: an experiment config (validated here).
    num_devices: mesh size; at most `jax.device_count()`.

  Returns:
    A dict: 'config', 'mode', 'num_devices', 'global_batch',
    'per_device_batch', 'images_per_device' (real images per step and
    device: n_dis·B/N for SN-GAN), 'state_gib_per_device' (the training state as
    laid out), 'argument_gib', 'output_gib', 'temp_gib', 'alias_gib',
    'generated_code_gib', 'peak_gib' (argument + output + temp − alias:
    what the compiled step holds at once, per device), 'flops' (XLA cost
    analysis; loop bodies count once), 'compile_s'.

  Raises:
    ValueError: for an invalid config or a batch that does not split over
      the devices.
  """
  # The training code (and TensorFlow, which it imports for data and
  # summaries) loads here, so that a bad flag is reported in about 2 s.
  from hatebm_jax import train  # pylint: disable=g-import-not-at-top

  config_base.validate(config)
  if num_devices < 1:
    raise ValueError(f'--num_devices={num_devices} must be >= 1.')
  if config.num_devices not in (0, num_devices):
    raise ValueError(
        f'config.num_devices={config.num_devices} differs from '
        f'--num_devices={num_devices}: set --num_devices only.'
    )
  if config.langevin_unroll == -1:
    with config.unlocked():
      config.langevin_unroll = 1  # the accelerator setting
  mesh = parallel.make_mesh(num_devices)
  parallel.check_divisible('batch_size', config.batch_size, mesh)
  program = train.Program.build(config, mesh)
  abstract, shardings = program.abstract, program.shardings
  images = program.mode.images_per_step
  batch = jax.ShapeDtypeStruct(
      (images,) + tuple(config.image_dims),
      np.float32,
      sharding=parallel.batch_sharding(mesh),
  )
  start = time.time()
  with jax.set_mesh(mesh):
    health = jax.eval_shape(lambda: program.fresh_health(mesh))
    compiled = program.step.lower(
        parallel.with_shardings(abstract, shardings), batch, health
    ).compile()
  seconds = time.time() - start
  memory = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  gib = lambda b: round(b / GIB, 3)
  peak = (
      memory.argument_size_in_bytes
      + memory.output_size_in_bytes
      + memory.temp_size_in_bytes
      - memory.alias_size_in_bytes
  )
  return {
      'config': config.exp_name,
      'mode': config.mode,
      'num_devices': mesh.size,
      'global_batch': config.batch_size,
      'per_device_batch': config.batch_size // mesh.size,
      'images_per_device': images // mesh.size,
      'mcmc_steps': config.mcmc_steps,
      'state_gib_per_device': gib(_nbytes(abstract, mesh.size, shardings)),
      'argument_gib': gib(memory.argument_size_in_bytes),
      'output_gib': gib(memory.output_size_in_bytes),
      'temp_gib': gib(memory.temp_size_in_bytes),
      'alias_gib': gib(memory.alias_size_in_bytes),
      'generated_code_gib': gib(memory.generated_code_size_in_bytes),
      'peak_gib': gib(peak),
      'flops': float(cost.get('flops', float('nan'))),
      'compile_s': round(seconds, 1),
  }


def main(argv):
  runtime.no_arguments(argv)
  runtime.setup()
  if FLAGS.num_devices > jax.device_count():
    raise ValueError(
        f'--num_devices={FLAGS.num_devices} but JAX has '
        f'{jax.device_count()} devices: run this module as a script '
        '(python -m hatebm_jax.aot), which fakes the CPU devices.'
    )
  report = compile_report(FLAGS.config, FLAGS.num_devices)
  print(
      f"{report['config']} ({report['mode']}), {report['num_devices']} "
      f"devices, batch {report['global_batch']} "
      f"({report['per_device_batch']} per device), "
      f"K = {report['mcmc_steps']}: compiled in {report['compile_s']} s"
  )
  for key in (
      'state_gib_per_device',
      'argument_gib',
      'output_gib',
      'temp_gib',
      'alias_gib',
      'peak_gib',
  ):
    print(f'  {key:<22} {report[key]:>9.3f} GiB')
  print(f"  {'flops (loops once)':<22} {report['flops']:>13.4g}")
  if FLAGS.json:
    with open(FLAGS.json, 'w') as f:
      json.dump(report, f, indent=1)


if __name__ == '__main__':
  app.run(runtime.report_errors(main), flags_parser=runtime.parse_flags)
