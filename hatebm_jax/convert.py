r"""Convert the official release's TensorFlow checkpoints into an exported model.

  python -m hatebm_jax.convert --config=configs/cifar10_synth.py \
      --ebm=PATH/ebm_50000.ckpt --gen=PATH/gen_50000.ckpt \
      --output=cifar10_synth_official.hatebm

  python -m hatebm_jax.convert --config=configs/cifar10_refine.py \
      --gen=PATH/cifar10_refine/gen.ckpt --output=cifar10_sngan_official.hatebm

`--ebm`, `--gen` and `--inf` are the checkpoint prefixes the official code
saved (`<prefix>.index` + `<prefix>.data-*`), local or gs://: the hat
network, the generator (or retrofit decoder) and the autoencoder's encoder.
The config names the networks and their widths (`--config.ebm_ngf=...` and
other overrides as for training). Every variable is checked by name and
shape before anything is written; a mismatch is one line naming it.

The output is the project's exported model (`hatebm_jax.infra.file_format`):
`load_pretrained(FILE)`, `python -m hatebm_jax.sample --workdir=FILE` and
`python -m hatebm_jax.evaluate --workdir=FILE [--preset=NAME]` take it. With
`--gen` alone it holds the generator only: pass it as
`--config.gen_weights=FILE` to a refinement or retrofit run.
docs/official_release.md §11 and docs/evaluation.md list the released
models and the command for each.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging
from ml_collections import config_flags

from hatebm_jax.infra import runtime

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    'config',
    None,
    'The experiment config of the model (configs/<name>.py), with its '
    'network widths.',
    lock_config=True,
)
_EBM = flags.DEFINE_string(
    'ebm', None, 'Prefix of the hat network checkpoint (ebm_<step>.ckpt).'
)
_GEN = flags.DEFINE_string(
    'gen',
    None,
    'Prefix of the generator or decoder checkpoint (gen_<step>.ckpt).',
)
_INF = flags.DEFINE_string(
    'inf',
    None,
    "Prefix of the autoencoder's encoder checkpoint (inf_<n>.ckpt).",
)
_OUTPUT = flags.DEFINE_string(
    'output', None, 'File to write (local or gs://), by convention .hatebm.'
)
flags.mark_flags_as_required(['config', 'output'])


def _config_name() -> str:
  """The --config file as the user gave it."""
  return FLAGS['config'].config_filename or 'the config'


def main(argv):
  runtime.no_arguments(argv)
  if not (_EBM.value or _GEN.value or _INF.value):
    raise ValueError(
        'Give the checkpoints to convert: --ebm and --gen (synthesis, '
        'refinement, retrofit), --gen and --inf (autoencoder), or --gen '
        'alone (a generator for --config.gen_weights).'
    )
  runtime.setup()
  runtime.start_jax()
  from hatebm_jax.serving import official  # pylint: disable=g-import-not-at-top

  info = official.convert(
      FLAGS.config,
      _OUTPUT.value,
      ebm=_EBM.value,
      gen=_GEN.value,
      inf=_INF.value,
      config_name=_config_name(),
  )
  logging.info(
      'Converted %s (%s, step %d, %s parameters, %.2f MB) to %s%s',
      ', '.join(info['networks']),
      info['mode'],
      info['step'],
      f"{info['parameters']:,}",
      info['bytes'] / 1e6,
      info['output'],
      (
          ': a generator file, for --config.gen_weights of a joint run'
          if info['generator_only']
          else ''
      ),
  )


if __name__ == '__main__':
  app.run(runtime.report_errors(main), flags_parser=runtime.parse_flags)
