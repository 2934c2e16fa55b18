r"""One entry point for every evaluation number of a run.

  python -m hatebm_jax.evaluate --workdir=/tmp/hatebm_fmnist \
      --metrics=fcd,kid,ood --sources=ebm,generator,initial --num_samples=10000

  python -m hatebm_jax.evaluate --workdir=gs://bucket/cifar10_synth \
      --metrics=fid,ood --inception_weights=/path/pt_inception-2015-12-05-6726825d.pth \
      --num_samples=49920 --reference_split=train --mcmc_steps=125 \
      --mcmc_temp=1e-3 --init_scale_res=0.01 --clip=false

  python -m hatebm_jax.evaluate --workdir=cifar10_synth_official.hatebm \
      --metrics=fid --preset=cifar10_synth --inception_weights=PATH

`--preset=NAME` is the paper's protocol for an experiment
(`hatebm_jax.serving.presets`): the official FID config's sampler settings
and 49,920 samples against 49,920 training images; flags given beside it
win.

Metrics (`hatebm_jax.evaluators`, the same objects training runs every
`eval_freq` steps):
  fid        FID on pytorch-fid's Inception-v3 pool_3 features (weights from
             --inception_weights).
  fcd        Fréchet Classifier Distance on the 128 features of the
             Fashion-MNIST LeNet; Fashion-MNIST runs only. Not FID.
  kid        KID (Bińkowski et al. 2018) on the data set's feature network:
             the LeNet for Fashion-MNIST, Inception for the others.
  ood        AUROC of H(x) separating the test split (in-distribution) from
             each OOD set.
  test_loss  the mode's loss on the test split (autoencoder runs).

A value logged during training is reproduced with --seed=12345
--num_samples=<eval_num_samples> --batch_size=min(500, eval_num_samples)
--num_reference=10000 on the checkpoint of that step.

Sources of samples (each gets the sample metrics): `ebm` = X = G(z) + y after
the Langevin chain, `generator` = G(z) alone, `initial` = G(z) of the run's
untrained generator. Reference features of the data split are cached in
$HATEBM_CACHE_DIR (default ~/.cache/hatebm_jax). Every number is written with
its settings to <workdir>/eval/step_<step>/metrics.json (or --output). An
exported model (`hatebm_jax.export`) is evaluated like a workdir: pass the
file as --workdir; its metrics go to <name>_eval/step_<step>/ beside it (in
the current folder for a URL or a model shipped in the package).
"""

import dataclasses
import json
import os
from typing import Any, Optional

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
from hatebm_jax.infra import xla_flags  # pylint: disable=g-import-not-at-top

xla_flags.apply()  # before JAX starts
from hatebm_jax.infra import runtime  # pylint: disable=g-import-not-at-top

runtime.load_libraries_quietly()  # before anything else imports them

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging
from etils import epath

from hatebm_jax import cli
from hatebm_jax import evaluators
from hatebm_jax.evaluation import inception
from hatebm_jax.infra import remote
from hatebm_jax.serving import presets
from hatebm_jax.serving import run as run_lib
from hatebm_jax.serving import storage


def _describe(workdir, run, settings, overrides, preset) -> dict:
  """The run and the settings its numbers depend on."""
  config = run.config
  sampler = run.mode.chain_settings
  return {
      'workdir': str(workdir),
      'step': run.step,
      'seed': settings.seed,
      'num_samples': settings.num_samples,
      'data_type': config.data_type,
      'sampler': dataclasses.asdict(sampler) if sampler else None,
      'init_scale_res': config.init_scale_res,
      'init_scale_latent': config.init_scale_latent,
      # 'ema': the run's weight averages (config.*_ema_decay); 'raw' else.
      'weights': (
          config.sample_weights
          if config.gen_ema_decay or config.hat_ema_decay
          else 'raw'
      ),
      'preset': preset,
      'overrides': overrides,
      'reference': {
          'split': settings.reference_split,
          'num': settings.num_reference,
      },
  }


def _nest(values: dict[str, float]) -> dict:
  """{'auroc/mnist': v} -> {'auroc': {'mnist': v}}."""
  nested = {}
  for key, value in values.items():
    *parents, leaf = key.split('/')
    node = nested
    for parent in parents:
      node = node.setdefault(parent, {})
    node[leaf] = value
  return nested


def evaluate(
    workdir: str,
    *,
    metrics: str = 'fcd,kid,ood',
    sources: Optional[str] = None,
    step: Optional[int] = None,
    output: Optional[str] = None,
    overrides: Optional[dict[str, Any]] = None,
    preset: Optional[str] = None,
    **settings,
) -> dict:
  """Computes the metrics of a checkpoint and writes them as JSON.

  Args:
    workdir: a run's folder (local, gs://) or an exported `.hatebm` model.
    metrics: comma-separated names of `evaluators.EVALUATORS`.
    sources: comma-separated `Capabilities.sources` of the run's mode (e.g.
      'ebm,generator,initial'); None for the model's own samples.
    step: checkpoint step; None for the latest.
    output: JSON path; None for <workdir>/eval/step_<step>/metrics.json
    overrides: sampler settings (`serving.run.load_run`), None: the run's.
    preset: the paper's evaluation settings of an experiment
      (`serving.presets`): its sampler settings under `overrides`, and the
      official protocol (49,920 samples, 49,920 training images) under
      `settings`.
    **settings: fields of `evaluators.Settings` (num_samples, batch_size,
      seed, reference_split, num_reference, inception_weights, ood_sets,
      num_ood, data_dir).

  Returns:
    The dict written: settings, {source: values}, per-run metrics by name.

  Raises:
    ValueError: for bad metrics, sources or settings; before any sampling.
    FileNotFoundError: for missing checkpoints, data or Inception weights.
  """
  overrides = presets.with_preset(preset, overrides or {})
  overrides = {k: v for k, v in overrides.items() if v is not None}
  remote.check_reachable(workdir, settings.get('data_dir'), output)
  settings = {**(presets.PROTOCOL if preset else {}), **settings}
  names, settings = evaluators.parse(metrics), evaluators.Settings(**settings)
  run = run_lib.load_run(workdir, step, **overrides)
  presets.check_fits(preset, run.config)
  caps = run.mode.capabilities
  chosen = evaluators.parse(sources or caps.sources[0], 'sources', caps.sources)
  built = evaluators.build(
      names, config=run.config, capabilities=caps, settings=settings
  )
  samples = evaluators.Samples(run=run, settings=settings)
  per_source, per_run = evaluators.run_all(
      built, samples=samples, sources=chosen
  )
  result = _describe(workdir, run, settings, overrides, preset)
  result['feature_nets'] = {e.name: e.info() for e in built if e.per_source}
  result['samples'] = {
      s: {'sampling_seconds': samples.seconds[s], **values}
      for s, values in per_source.items()
      if values
  }
  result.update({e.name: {**e.info(), **_nest(v)} for e, v in per_run})
  path = epath.Path(
      output or storage.eval_folder(workdir, run.step) / 'metrics.json'
  )
  storage.write_atomically(
      path, json.dumps(result, indent=1).encode(), str(path)
  )
  logging.info('Wrote %s', path)
  return result


_METRICS = flags.DEFINE_string(
    'metrics',
    'fcd,kid,ood',
    f'Comma-separated subset of {list(evaluators.EVALUATORS)}.',
)
_SOURCES = flags.DEFINE_string(
    'sources',
    None,
    "Comma-separated sample sources: synthesis 'ebm', "
    "'generator', 'initial'; joint 'ebm', 'generator'; sngan 'generator', "
    "'ddls', 'initial'; autoencoder 'generator', 'initial'. Default: the "
    "model's own samples.",
)
_REF_SPLIT = flags.DEFINE_string(
    'reference_split', 'test', 'Data split the samples are compared with.'
)
_NUM_REF = flags.DEFINE_integer(
    'num_reference', 10_000, 'Reference images (at most the split size).'
)
_INCEPTION = flags.DEFINE_string(
    'inception_weights',
    None,
    'Path of '
    f'{inception.WEIGHTS_FILE} (or its converted '
    '.npz); needed for fid.',
)
_OOD_SETS = flags.DEFINE_string(
    'ood_sets', None, 'Comma-separated OOD sets; ' 'default per data set.'
)
_NUM_OOD = flags.DEFINE_integer('num_ood', 10_000, 'Images per OOD set.')
_DATA_DIR = flags.DEFINE_string(
    'data_dir', None, 'Data folder / TFDS ' "data_dir; default: the run's."
)
_OUT = flags.DEFINE_string(
    'output',
    None,
    'JSON path; default '
    '<workdir>/eval/step_<step>/metrics.json (for an '
    'exported model: see --output_dir of '
    'hatebm_jax.sample).',
)


def main(argv):
  runtime.no_arguments(argv)
  runtime.setup()
  runtime.start_jax()
  protocol = {  # a preset sets these unless they are given
      name: flags.FLAGS[name].value
      for name in presets.PROTOCOL
      if flags.FLAGS[name].present or not cli.PRESET.value
  }
  result = evaluate(
      cli.WORKDIR.value,
      metrics=_METRICS.value,
      sources=_SOURCES.value,
      step=cli.STEP.value,
      output=_OUT.value,
      overrides=cli.sampler_overrides(),
      preset=cli.PRESET.value,
      batch_size=cli.BATCH_SIZE.value,
      seed=cli.SEED.value,
      **protocol,
      inception_weights=_INCEPTION.value,
      ood_sets=tuple(_OOD_SETS.value.split(',')) if _OOD_SETS.value else None,
      num_ood=_NUM_OOD.value,
      data_dir=_DATA_DIR.value,
  )
  print(
      json.dumps(
          {
              'step': result['step'],
              'samples': result['samples'],
              'ood': result.get('ood', {}).get('auroc'),
              'test_loss': result.get('test_loss', {}).get('test_loss'),
          },
          indent=1,
      )
  )


if __name__ == '__main__':
  flags.mark_flags_as_required(['workdir'])
  flags.FLAGS.set_default('num_samples', 10_000)
  flags.FLAGS.set_default('batch_size', 500)
  app.run(runtime.report_errors(main), flags_parser=runtime.parse_flags)
