r"""Export a training run's networks and config as one pretrained-model file.

  python -m hatebm_jax.export --workdir=/tmp/hatebm_fmnist \
      --output=/tmp/fmnist_synth.hatebm [--step=2000]

The file (`hatebm_jax.infra.file_format`) holds the network parameters and frozen
statistics, the run's config and its step: no optimiser states, replay
bank or RNG key. `--output` may be local or gs://. Load it with
`hatebm_jax.load_pretrained(path)`, or pass it as `--workdir` to
`hatebm_jax.sample` and `hatebm_jax.evaluate`.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging

from hatebm_jax.infra import remote
from hatebm_jax.infra import runtime

_WORKDIR = flags.DEFINE_string(
    'workdir',
    None,
    'Training workdir (local or ' 'gs://) holding checkpoints/.',
)
_OUTPUT = flags.DEFINE_string(
    'output',
    None,
    'File to write (local or ' 'gs://), by convention <name>.hatebm.',
)
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step; default latest.')


def main(argv):
  runtime.no_arguments(argv)
  # Checked before JAX and TensorFlow load: an unreachable gs:// path fails
  # in a second.
  remote.check_reachable(_WORKDIR.value, _OUTPUT.value)
  runtime.setup()
  runtime.start_jax()
  from hatebm_jax.serving import run as run_lib  # pylint: disable=g-import-not-at-top

  info = run_lib.export(_WORKDIR.value, _OUTPUT.value, _STEP.value)
  logging.info(
      'Exported step %d of %s (%s, %s parameters, %.2f MB) to %s',
      info['step'],
      _WORKDIR.value,
      info['mode'],
      f"{info['parameters']:,}",
      info['bytes'] / 1e6,
      info['output'],
  )


if __name__ == '__main__':
  flags.mark_flags_as_required(['workdir', 'output'])
  app.run(runtime.report_errors(main), flags_parser=runtime.parse_flags)
