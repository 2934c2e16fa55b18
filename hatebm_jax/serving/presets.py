"""The paper's evaluation settings, by experiment: `--preset=NAME`.

The official release samples for FID with its own config per experiment,
which differs from training (more Langevin steps K, y₀ = 0.01·N(0, I), no
residual clip, and T = 1e-3 for CIFAR-10 synthesis;
docs/official_release.md §6.3, §9.2). Each preset holds those sampler
settings, set in full (so that a converted official model and a model
trained here are sampled alike), and the FID protocol of the release:
49,920 samples against 49,920 training images. `python -m
hatebm_jax.sample --preset=NAME` and `python -m hatebm_jax.evaluate
--preset=NAME` apply it; a flag given beside it wins, and settings.json /
metrics.json record the preset and every value used.

This module imports nothing heavy: the command-line flags read its names.
"""

import dataclasses
from typing import Any

# The release's FID protocol (docs/official_release.md §6.1-§6.2): 520
# rounds of 96 samples, against the training split.
PROTOCOL = {
    'num_samples': 49_920,
    'reference_split': 'train',
    'num_reference': 49_920,
}
# Set by every official FID config (docs/official_release.md §9.2); its
# residual clip keys are misspelt, so the release samples without the clip
# (§0.10, §8 #1).
COMMON = {'init_scale_latent': 1.0, 'use_noise': True}
NO_CLIP = {'clip_langevin_grad_res': False}


@dataclasses.dataclass(frozen=True)
class Preset:
  """One experiment's evaluation settings.

  Attributes:
    data_type, image_size, mode, gen_type: the models it is for
      (`config.data_type`, `config.image_dims[0]`, `config.mode`,
      `config.gen_type`: the SN-GAN generator, or the retrofit decoder).
      The width is not checked: `imagenet_synth` and `imagenet_scaled`
      differ only by it (ngf 1024 and 2048).
    sampler: sampler settings (`serving.settings.SAMPLER_SETTINGS`): K, T,
      ε (ε_z and τ where the official FID config sets them) and the initial
      residual scale.
    official: the name of the official FID config it transcribes.
    paper_fid: the FID the paper reports for this experiment (mean ± std
      over its runs; docs/official_release.md §6.5).
  """

  data_type: str
  image_size: int
  mode: str
  gen_type: str
  sampler: dict[str, Any]
  official: str
  paper_fid: str


PRESETS = {
    'cifar10_synth': Preset(
        'cifar10',
        32,
        'synthesis',
        'gen_sngan',
        dict(mcmc_steps=125, mcmc_temp=1e-3, epsilon=5e-4, init_scale_res=0.01),
        'cifar10_synth',
        '19.30 ± 0.15',
    ),
    'celeba_synth': Preset(
        'celeb_a',
        64,
        'synthesis',
        'gen_sngan',
        dict(mcmc_steps=100, mcmc_temp=1e-8, epsilon=5e-4, init_scale_res=0.01),
        'celeb_a_synth',
        '11.57 ± 0.04',
    ),
    'imagenet_synth': Preset(
        'imagenet2012',
        128,
        'synthesis',
        'gen_sngan',
        dict(mcmc_steps=150, mcmc_temp=1e-8, epsilon=5e-4, init_scale_res=0.01),
        'imagenet_synth',
        '40.24 ± 0.18',
    ),
    'imagenet_scaled': Preset(
        'imagenet2012',
        128,
        'synthesis',
        'gen_sngan',
        dict(mcmc_steps=125, mcmc_temp=1e-8, epsilon=5e-4, init_scale_res=0.01),
        'imagenet_synth_large_net',
        '29.37 ± 0.15',
    ),
    'cifar10_refine': Preset(
        'cifar10',
        32,
        'joint',
        'gen_sngan',
        dict(
            mcmc_steps=350,
            mcmc_temp=1e-3,
            epsilon=1e-4,
            epsilon_latent=5e-3,
            tau_res=8.0,  # 1 / (2 · 0.25²)
            init_scale_res=0.0,
        ),
        'cifar10_refine',
        '14.04 ± 0.11',
    ),
    'celeba_refine': Preset(
        'celeb_a',
        64,
        'joint',
        'gen_sngan',
        dict(
            mcmc_steps=125,
            mcmc_temp=1e-6,
            epsilon=1e-4,
            epsilon_latent=5e-3,
            init_scale_res=0.0,
        ),
        'celeb_a_refine',
        '5.98 ± 0.02',
    ),
    'cifar10_retrofit': Preset(
        'cifar10',
        32,
        'joint',
        'gen_decoder',
        dict(
            mcmc_steps=125,
            mcmc_temp=1e-3,
            epsilon=5e-4,
            epsilon_latent=1e-3,
            tau_res=50.0,
            init_scale_res=0.01,
        ),
        'cifar10_retrofit',
        '26.01 ± 0.09',
    ),
}


def lookup(name: str) -> Preset:
  """The preset of `name`.

  Raises:
    ValueError: for an unknown name, listing the presets.
  """
  if name not in PRESETS:
    raise ValueError(f'--preset={name!r}: choose one of {sorted(PRESETS)}.')
  return PRESETS[name]


def sampler_settings(name: str) -> dict[str, Any]:
  """Every sampler setting of preset `name` (K, T, ε, ..., the clip off),
  as keyword arguments of `load_pretrained`, `Pretrained.sample` and
  `serving.run.load_run`.

  Raises:
    ValueError: for an unknown name.
  """
  return {**COMMON, **NO_CLIP, **lookup(name).sampler}


def with_preset(name: Any, overrides: dict[str, Any]) -> dict[str, Any]:
  """Sampler `overrides` (None = unset) on top of preset `name`'s; no
  preset (None or '') leaves them as they are.

  Raises:
    ValueError: for an unknown name.
  """
  if not name:
    return dict(overrides)
  given = {k: v for k, v in overrides.items() if v is not None}
  return {**sampler_settings(name), **given}


def _kind(config: Any) -> tuple:
  """What a preset is chosen by: (data set, image side, mode, generator)."""
  return (
      config.data_type,
      config.image_dims[0],
      config.mode,
      config.gen_type,
  )


def _describe(kind: tuple) -> str:
  data_type, size, mode, gen_type = kind
  return f'{mode!r} models of {data_type} {size}x{size} with {gen_type!r}'


def check_fits(name: Any, config: Any) -> None:
  """That preset `name` is for the model of `config` (its data set, image
  size, mode and generator type); no preset passes.

  Raises:
    ValueError: naming the preset, what it is for and what the model is.
  """
  if not name:
    return
  preset = lookup(name)
  want = (preset.data_type, preset.image_size, preset.mode, preset.gen_type)
  if want != _kind(config):
    raise ValueError(
        f'--preset={name} is for {_describe(want)}; this model is one of '
        f'{_describe(_kind(config))}. Presets for it: '
        f'{fitting(config) or "none"}.'
    )


def fitting(config: Any) -> list[str]:
  """The presets for the model of `config`."""
  return [
      n
      for n, p in PRESETS.items()
      if (p.data_type, p.image_size, p.mode, p.gen_type) == _kind(config)
  ]
