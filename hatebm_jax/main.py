r"""Command-line entry point.

  python -m hatebm_jax.main --config=configs/fashion_mnist_synth.py \
      --workdir=/tmp/hatebm_fmnist [--config.num_training_steps=3 ...]

Rerunning the same command resumes from the newest checkpoint in workdir.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # TF only feeds data here.
from hatebm_jax import xla_flags  # pylint: disable=g-import-not-at-top

xla_flags.apply()  # before JAX starts

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from hatebm_jax import runtime
from hatebm_jax import train

FLAGS = flags.FLAGS

config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file (configs/<name>.py).',
    lock_config=True)
flags.DEFINE_string('workdir', None, 'Folder (local or gs://) for '
                    'checkpoints, TensorBoard events and sample grids.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  runtime.setup()
  logging.info('JAX devices: %s', jax.devices())
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  app.run(main)
