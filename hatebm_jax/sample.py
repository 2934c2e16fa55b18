r"""Draw samples from a checkpoint (any mode) or an exported model
(`hatebm_jax.export`), with evaluation-time settings.

  python -m hatebm_jax.sample --workdir=/tmp/hatebm_fmnist --num_samples=1000 \
      [--step=2000] [--mcmc_steps=125] [--mcmc_temp=1e-3] [--epsilon=5e-4] \
      [--init_scale_res=0.01] [--clip=false] [--output_dir=...]
  python -m hatebm_jax.sample --workdir=cifar10_synth_official.hatebm \
      --preset=cifar10_synth --num_samples=1000

Unset sampler flags keep the run's training values (its saved config). The
official FID configs differ from training (more steps, y₀ = 0.01·N(0, I), no
residual clip, and T = 1e-3 for CIFAR-10; docs/official_release.md §6.3, §9.2),
so every value
used is written to `settings.json` beside the outputs. `--preset=NAME` sets
an experiment's official FID sampler settings at once
(`hatebm_jax.serving.presets`):

  <output_dir>/samples.npz   images: uint8 [N, S, S, C], round(255(x+1)/2)
                             after clipping x to [-1, 1]
                             (docs/official_release.md §6.1)
  <output_dir>/grid.png      X = G(z) + y, G(z) and 5·y of the first images
  <output_dir>/path.png      rows X, G(z) and 5·y at steps 0, K/4, ..., K
  <output_dir>/settings.json checkpoint, step and sampler settings
"""

import dataclasses
import json
import os
from typing import Optional

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
from hatebm_jax.infra import xla_flags  # pylint: disable=g-import-not-at-top

xla_flags.apply()  # before JAX starts
from hatebm_jax.infra import runtime  # pylint: disable=g-import-not-at-top

runtime.load_libraries_quietly()  # before anything else imports them

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging
from clu import metric_writers
from etils import epath
import jax
import numpy as np

from hatebm_jax import cli
from hatebm_jax import visualize
from hatebm_jax.infra import remote
from hatebm_jax.serving import draw
from hatebm_jax.serving import presets
from hatebm_jax.serving import run as run_lib
from hatebm_jax.serving import storage

FLAGS = flags.FLAGS
PATH_POINTS = 5  # columns of the Langevin-path figure: steps 0, K/4, .., K

_OUTPUT = flags.DEFINE_string(
    'output_dir',
    None,
    'Output folder; default '
    '<workdir>/eval/step_<step>, or for an exported '
    '<name>.hatebm <name>_eval/step_<step> beside '
    'it (in the current folder for a URL or a '
    'model shipped in the package).',
)
_SOURCE = flags.DEFINE_string(
    'source',
    None,
    "What to sample: 'ebm', "
    "'generator', 'initial', or 'ddls' (SN-GAN "
    "runs); default: the model's own samples.",
)


def sample_checkpoint(
    workdir: str,
    num_samples: int,
    batch_size: int,
    seed: int = 0,
    step: Optional[int] = None,
    output_dir: Optional[str] = None,
    source: Optional[str] = None,
    preset: Optional[str] = None,
    **overrides,
) -> dict:
  """Samples a synthesis checkpoint and writes the outputs listed above.

  Args:
    workdir: the training run's folder, an exported model file, or a
      registered model name (`serving.registry`).
    num_samples: N ≥ 1.
    batch_size: chains per jitted call, ≥ 1.
    seed: seed of latents, y₀ and chain noise.
    step: checkpoint step, or None for the latest.
    output_dir: where to write; None for <workdir>/eval/step_<step> (or
      <name>_eval/step_<step> beside an exported <name>.hatebm).
    source: what to sample (`serving.draw.draw_images`); None for the model's
      own samples ('ebm' for Hat EBMs, 'generator' for SN-GAN and AE runs;
      'ddls' gives DDLS samples of an SN-GAN run).
    preset: the paper's sampler settings of an experiment
      (`serving.presets`, e.g. 'cifar10_synth'); `overrides` win over it.
    **overrides: sampler settings, see `serving.run.load_run`.

  Returns:
    The settings written to settings.json.

  Raises:
    ValueError: for N or batch < 1, invalid sampler settings (checked
      by `validation.validate`, before any compute), or a preset of
      another experiment's models.
    FileNotFoundError: when the workdir holds no checkpoint.
  """
  if num_samples < 1 or batch_size < 1:
    raise ValueError(
        f'num_samples={num_samples} and batch_size={batch_size} '
        'must be >= 1.'
    )
  remote.check_reachable(output_dir)
  overrides = presets.with_preset(preset, overrides)
  run = run_lib.load_run(workdir, step, **overrides)
  presets.check_fits(preset, run.config)
  mode, config, state, step = run.mode, run.config, run.state, run.step
  sampler = mode.chain_settings
  source = draw.checked_source(run, source)  # before creating anything
  output = epath.Path(output_dir or storage.eval_folder(workdir, step))
  images, (z, x_gen, y) = draw.draw_images(
      run,
      num_samples,
      batch_size,
      seed,
      source,
      return_first=True,
      progress=f'drawing {num_samples:,} samples ({source})',
  )
  # Written beside `output`, then moved into it: a failure (a full disk)
  # leaves no partial file there.
  with storage.staged(output) as staging:
    with (staging / 'samples.npz').open('wb') as f:
      np.savez_compressed(f, images=images)
    n_show = min(64, num_samples)
    pictures = {}
    if mode.capabilities.chain and source == 'ebm':
      pictures['grid'] = visualize.save_sample_grid(
          str(staging / 'grid.png'),
          x_gen[:n_show],
          y[:n_show],
          f'step {step}, K={sampler.num_steps}',
      )
      pictures['path'] = _save_path(
          staging / 'path.png',
          mode,
          state,
          z[:8],
          jax.random.fold_in(jax.random.PRNGKey(seed), 1 << 30),
          sampler.num_steps,
          config.init_scale_res,
      )
    else:
      pictures['grid'] = visualize.save_panels(
          str(staging / 'grid.png'),
          [
              (
                  f'{config.mode}: {source}, step {step}',
                  visualize.to_display(x_gen[:n_show]),
              )
          ],
      )
    settings = {
        'workdir': str(workdir),
        'step': step,
        'num_samples': num_samples,
        'seed': seed,
        'mode': config.mode,
        'source': source,
        'sampler': dataclasses.asdict(sampler) if sampler else None,
        'init_scale_res': config.init_scale_res,
        'preset': preset,
        'overrides': {k: v for k, v in overrides.items() if v is not None},
    }
    (staging / 'settings.json').write_text(json.dumps(settings, indent=1))
    # The same pictures for TensorBoard (--logdir=<output>), at the step.
    writer = metric_writers.create_default_writer(
        str(staging), just_logging=False
    )
    for tag, pixels in pictures.items():
      visualize.write_image(writer, step, tag, pixels)
    writer.close()
  logging.info('Wrote %d samples to %s', num_samples, output)
  return settings


def _save_path(path, mode, state, z, key, num_steps, init_scale_res):
  """The paper's Figure 3: one chain shown at steps 0, K/4, ..., K
  (`draw.chain_path`)."""
  k_y0, k_chain = jax.random.split(key)
  steps = [round(p * num_steps / (PATH_POINTS - 1)) for p in range(PATH_POINTS)]
  chain = draw.chain_path(mode, state, z, k_y0, k_chain, steps, init_scale_res)
  panels = [
      (
          f'step {step}',
          np.concatenate(
              [
                  visualize.to_display(x_gen + y),
                  visualize.to_display(x_gen),
                  visualize.to_display(5.0 * y),
              ]
          ),
      )
      for step, (x_gen, y) in zip(steps, chain)
  ]
  return visualize.save_panels(
      str(path),
      panels,
      'rows: X, G(z), 5·y along one Langevin chain',
      columns=len(z),
  )


def main(argv):
  runtime.no_arguments(argv)
  runtime.setup()
  runtime.start_jax()
  sample_checkpoint(
      cli.WORKDIR.value,
      cli.NUM_SAMPLES.value,
      cli.BATCH_SIZE.value,
      cli.SEED.value,
      cli.STEP.value,
      _OUTPUT.value,
      _SOURCE.value,
      cli.PRESET.value,
      **cli.sampler_overrides(),
  )


if __name__ == '__main__':
  flags.mark_flags_as_required(['workdir'])
  app.run(runtime.report_errors(main), flags_parser=runtime.parse_flags)
