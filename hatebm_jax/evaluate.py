r"""One entry point for every evaluation number of a run.

  python -m hatebm_jax.evaluate --workdir=/tmp/hatebm_fmnist \
      --metrics=fcd,kid,ood --sources=ebm,generator,initial --num_samples=10000

  python -m hatebm_jax.evaluate --workdir=gs://bucket/cifar10_synth \
      --metrics=fid,ood --inception_weights=/path/pt_inception-2015-12-05-6726825d.pth \
      --num_samples=49920 --reference_split=train --mcmc_steps=125 \
      --mcmc_temp=1e-3 --init_scale_res=0.01 --clip=false

Metrics:
  fcd  Fréchet Classifier Distance on the 128 features of the Fashion-MNIST
       LeNet (`hatebm_jax.evaluation.classifier`); Fashion-MNIST runs only. Not FID.
  kid  KID (Bińkowski et al. 2018) on the same LeNet features.
  fid  FID on pytorch-fid's Inception-v3 pool_3 (`hatebm_jax.evaluation.inception`,
       weights from --inception_weights); also reports KID on those features
       as kid_inception.
  ood  AUROC of H(x) separating the test split (in-distribution) from each
       OOD set (`hatebm_jax.evaluation.ood`).

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
import time
from typing import Optional, Sequence

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
from hatebm_jax.evaluation import classifier
from hatebm_jax.evaluation import inception
from hatebm_jax.evaluation import metrics as metrics_lib
from hatebm_jax.evaluation import ood
from hatebm_jax.infra import remote
from hatebm_jax.serving import draw
from hatebm_jax.serving import run as run_lib
from hatebm_jax.serving import storage

METRICS = ('fcd', 'kid', 'fid', 'ood')


def _parse_list(value: str, allowed: Sequence[str], what: str) -> list[str]:
  items = [v.strip() for v in value.split(',') if v.strip()]
  bad = [v for v in items if v not in allowed]
  if bad or not items:
    raise ValueError(
        f'{what}={value!r}: {bad or "empty"} not allowed; choose '
        f'from {list(allowed)}.'
    )
  return items


def evaluate(
    workdir: str,
    metrics: str = 'fcd,kid,ood',
    sources: Optional[str] = None,
    num_samples: int = 10_000,
    batch_size: int = 500,
    seed: int = 0,
    step: Optional[int] = None,
    reference_split: str = 'test',
    num_reference: int = 10_000,
    inception_weights: Optional[str] = None,
    ood_sets: Optional[str] = None,
    num_ood: int = 10_000,
    data_dir: Optional[str] = None,
    output: Optional[str] = None,
    **overrides,
) -> dict:
  """Computes the requested metrics of a checkpoint and writes them as JSON.

  Args:
    workdir: training run folder (local or gs://), or an exported model
      (`.hatebm`: local, gs:// or https://).
    metrics: comma-separated subset of 'fcd', 'kid', 'fid', 'ood'.
    sources: comma-separated subset of the run's sources ('ebm',
      'generator', 'initial' for synthesis; 'ebm', 'generator' for joint;
      'generator', 'ddls', 'initial' for sngan; 'generator', 'initial' for
      autoencoder); None for the model's own samples (the first).
    num_samples: samples per source (10,000 for the README numbers; the
      official FID uses 49,920, docs/official_release.md §6.1).
    batch_size: chains / images per jitted call.
    seed: seed of latents and chain noise.
    step: checkpoint step; None for the latest.
    reference_split: data split the samples are compared with ('test' for
      FCD on Fashion-MNIST; the official FID uses 'train',
      docs/official_release.md §6.2).
    num_reference: reference images (fewer if the split is smaller).
    inception_weights: path of pytorch-fid's weights (needed for 'fid').
    ood_sets: comma-separated OOD sets; None for the data set's defaults
      (`ood.DEFAULT_OOD_SETS`).
    num_ood: images per OOD set and of the in-distribution test split.
    data_dir: data folder / TFDS data_dir; None for the run's.
    output: JSON path; None for <workdir>/eval/step_<step>/metrics.json
      (`serving.storage.eval_folder`: beside an exported model, or in the
      current folder for a URL or a model shipped in the package).
    **overrides: sampler settings (see `serving.run.load_run`).

  Returns:
    The dict written to the JSON file.

  Raises:
    ValueError: for unknown metrics or sources, FCD/KID on a data set other
      than Fashion-MNIST, or bad counts; all before any sampling.
    FileNotFoundError: for missing checkpoints, data or Inception weights.
  """
  remote.check_reachable(workdir, data_dir, output)
  metric_list = _parse_list(metrics, METRICS, 'metrics')
  for name, value in [
      ('num_samples', num_samples),
      ('batch_size', batch_size),
      ('num_reference', num_reference),
      ('num_ood', num_ood),
  ]:
    if value < 2:
      raise ValueError(f'{name}={value} must be >= 2.')
  run = run_lib.load_run(workdir, step, **overrides)
  config, capabilities = run.config, run.mode.capabilities
  source_list = (
      _parse_list(sources, capabilities.sources, 'sources')
      if sources
      else [capabilities.sources[0]]
  )
  if 'ood' in metric_list and not capabilities.energy:
    raise ValueError(
        f'ood scores images by the hat network H(x); a '
        f'{config.mode!r} run has none (use a synthesis or joint '
        'run).'
    )
  data_dir = data_dir or config.data_dir or None
  if {'fcd', 'kid'} & set(metric_list) and config.data_type != 'fashion_mnist':
    raise ValueError(
        f'fcd/kid use a classifier trained on Fashion-MNIST; this run is '
        f'{config.data_type!r}: use --metrics=fid,ood with '
        '--inception_weights.'
    )
  nets = {}
  if {'fcd', 'kid'} & set(metric_list):
    nets['classifier'] = classifier.FeatureNetwork.load()
  if 'fid' in metric_list:
    nets['inception'] = inception.InceptionFeatures.load(inception_weights)
  if 'ood' in metric_list:
    ood_list = (
        _parse_list(ood_sets, ood.ALL_SETS, 'ood_sets')
        if ood_sets
        else list(ood.DEFAULT_OOD_SETS.get(config.data_type, ood.CONTROLS))
    )

  sampler = run.mode.chain_settings
  result = {
      'workdir': str(workdir),
      'step': run.step,
      'seed': seed,
      'num_samples': num_samples,
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
      'overrides': {k: v for k, v in overrides.items() if v is not None},
      'reference': {'split': reference_split},
      'feature_nets': {
          k: {'name': n.name, 'preprocessing': n.preprocessing}
          for k, n in nets.items()
      },
      'samples': {},
  }
  if 'classifier' in nets:
    result['feature_nets']['classifier']['test_accuracy'] = nets[
        'classifier'
    ].test_accuracy
  references = {}
  for key, net in nets.items():
    references[key] = metrics_lib.reference_features(
        net,
        config.data_type,
        data_dir,
        reference_split,
        config.image_dims[0],
        num_reference,
        batch_size,
        progress=True,
    )
    result['reference'][f'num_{key}'] = references[key][0].num_samples
  for source in source_list:
    if not nets:
      break
    t0 = time.time()
    images = draw.draw_images(
        run,
        num_samples,
        batch_size,
        seed,
        source,
        progress=f'drawing {num_samples:,} samples ({source})',
    )
    numbers = {'sampling_seconds': round(time.time() - t0, 1)}
    if 'classifier' in nets:
      d = metrics_lib.distance_metrics(
          nets['classifier'],
          images,
          references['classifier'],
          batch_size,
          progress=f'classifier features of the {source} samples',
      )
      if 'fcd' in metric_list:
        numbers['fcd'] = d['frechet']
      if 'kid' in metric_list:
        numbers['kid'], numbers['kid_std'] = d['kid'], d['kid_std']
    if 'inception' in nets:
      d = metrics_lib.distance_metrics(
          nets['inception'],
          images,
          references['inception'],
          min(batch_size, 100),
          progress=f'Inception features of the {source} samples',
      )
      numbers['fid'] = d['frechet']
      numbers['kid_inception'] = d['kid']
      numbers['kid_inception_std'] = d['kid_std']
    result['samples'][source] = numbers
    logging.info('%s: %s', source, numbers)
  if 'ood' in metric_list:
    result['ood'] = metrics_lib.ood_metrics(
        run, data_dir, ood_list, num_ood, batch_size, seed
    )
    logging.info('OOD AUROC: %s', result['ood']['auroc'])
  path = epath.Path(
      output or storage.eval_folder(workdir, run.step) / 'metrics.json'
  )
  storage.write_atomically(
      path, json.dumps(result, indent=1).encode(), str(path)
  )
  logging.info('Wrote %s', path)
  return result


_METRICS = flags.DEFINE_string(
    'metrics', 'fcd,kid,ood', f'Comma-separated subset of {METRICS}.'
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
  result = evaluate(
      cli.WORKDIR.value,
      _METRICS.value,
      _SOURCES.value,
      cli.NUM_SAMPLES.value,
      cli.BATCH_SIZE.value,
      cli.SEED.value,
      cli.STEP.value,
      _REF_SPLIT.value,
      _NUM_REF.value,
      _INCEPTION.value,
      _OOD_SETS.value,
      _NUM_OOD.value,
      _DATA_DIR.value,
      _OUT.value,
      **cli.sampler_overrides(),
  )
  print(
      json.dumps(
          {
              'step': result['step'],
              'samples': result['samples'],
              'ood': result.get('ood', {}).get('auroc'),
          },
          indent=1,
      )
  )


if __name__ == '__main__':
  flags.mark_flags_as_required(['workdir'])
  flags.FLAGS.set_default('num_samples', 10_000)
  flags.FLAGS.set_default('batch_size', 500)
  app.run(runtime.report_errors(main), flags_parser=runtime.parse_flags)
