r"""Command-line entry point.

  python -m hatebm_jax.main --config=configs/fashion_mnist_synth.py \
      --workdir=/tmp/hatebm_fmnist [--config.num_training_steps=3 ...]

Rerunning the same command resumes from the newest checkpoint in workdir.

Multi-process (one process per host; see launch/): with --distributed on TPU
VM pods (and automatically under SLURM) the processes find each other;
elsewhere pass --coordinator_address, --num_processes and --process_id to
every process.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # TF only feeds data here.
from hatebm_jax.infra import xla_flags  # pylint: disable=g-import-not-at-top

xla_flags.apply()  # before JAX starts

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging
from ml_collections import config_flags

from hatebm_jax.infra import runtime

FLAGS = flags.FLAGS

config_flags.DEFINE_config_file(
    'config',
    None,
    'Experiment config file (configs/<name>.py).',
    lock_config=True,
)
flags.DEFINE_string(
    'workdir',
    None,
    'Folder (local or gs://) for '
    'checkpoints, TensorBoard events and sample grids.',
)
flags.DEFINE_string(
    'coordinator_address',
    None,
    'Multi-process job: '
    'host:port of process 0 (all processes pass the same). '
    'Not needed on TPU VM pods and SLURM, where it is found '
    'automatically.',
)
flags.DEFINE_integer(
    'num_processes',
    None,
    'Multi-process job: number of ' 'processes (with --coordinator_address).',
)
flags.DEFINE_integer(
    'process_id',
    None,
    'Multi-process job: this ' "process's index in [0, num_processes).",
)
flags.DEFINE_bool(
    'distributed',
    False,
    'Join a multi-process job found by '
    'jax.distributed.initialize() (Cloud TPU VM pods, SLURM, '
    'Open MPI); launch/tpu_pod.sh sets it.',
)
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  runtime.no_arguments(argv)
  # TensorFlow loads after the flags are parsed and the config is checked,
  # so that a mistyped flag fails in a second and an impossible config value
  # in a few, not after its imports (seconds more).
  from hatebm_jax import validation  # pylint: disable=g-import-not-at-top

  validation.validate(FLAGS.config)
  runtime.setup()
  from hatebm_jax import train  # pylint: disable=g-import-not-at-top
  from hatebm_jax.infra import parallel  # pylint: disable=g-import-not-at-top

  parallel.initialize_distributed(
      FLAGS.coordinator_address,
      FLAGS.num_processes,
      FLAGS.process_id,
      detect=FLAGS.distributed,
  )
  logging.info('JAX devices: %s', runtime.start_jax())
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  app.run(runtime.report_errors(main), flags_parser=runtime.parse_flags)
