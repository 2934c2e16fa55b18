"""Flags shared by the `sample` and `evaluate` commands.

Which run to read (`--workdir`, `--step`), how many samples to draw and
how (`--num_samples`, `--batch_size`, `--seed`), and the sampler settings
that may differ from the run's training values, one by one or as the
paper's evaluation settings of an experiment (`--preset`). Importing this module
defines them once; each command defines its own flags beside them.
"""

from absl import flags

from hatebm_jax import config_base
from hatebm_jax.serving import presets

WORKDIR = flags.DEFINE_string(
    'workdir',
    None,
    'Training workdir (local or gs://) holding '
    'checkpoints/, an exported model (.hatebm file: local, gs:// or '
    'https://), or a registered model name (e.g. fashion_mnist_synth: '
    'downloaded once and checked, hatebm_jax/serving/registry.py).',
)
STEP = flags.DEFINE_integer('step', None, 'Checkpoint step; default latest.')
NUM_SAMPLES = flags.DEFINE_integer('num_samples', 64, 'Number of samples N.')
BATCH_SIZE = flags.DEFINE_integer('batch_size', 64, 'Chains run at once.')
SEED = flags.DEFINE_integer('seed', 0, 'Seed of latents and chain noise.')
MCMC_STEPS = flags.DEFINE_integer('mcmc_steps', None, 'Langevin steps K.')
MCMC_TEMP = flags.DEFINE_float('mcmc_temp', None, 'Temperature T.')
EPSILON = flags.DEFINE_float('epsilon', None, 'Residual step size ε.')
TAU_RES = flags.DEFINE_float('tau_res', None, 'Residual prior τ.')
INIT_SCALE_RES = flags.DEFINE_float(
    'init_scale_res', None, 'y₀ = init_scale_res·N(0,I).'
)
CLIP = flags.DEFINE_boolean('clip', None, 'Clip the residual drift step.')
DDLS_STEPS = flags.DEFINE_integer('ddls_steps', None, 'DDLS steps (SN-GAN).')
DDLS_EPSILON = flags.DEFINE_float('ddls_epsilon', None, 'DDLS step size ε.')
SAMPLE_WEIGHTS = flags.DEFINE_enum(
    'sample_weights',
    None,
    list(config_base.WEIGHTS),
    "Weights to sample with: 'ema' (the run's weight averages, where kept) "
    "or 'raw' (the trained weights, the official protocol).",
)


PRESET = flags.DEFINE_enum(
    'preset',
    None,
    sorted(presets.PRESETS),
    "The paper's evaluation settings of an experiment "
    "(hatebm_jax/serving/presets.py: the official FID config's K, T, ε, "
    'initial residual, no clip; for evaluate also 49,920 samples against '
    '49,920 training images). Flags given beside it win.',
)


def sampler_overrides() -> dict:
  """The sampler flags as config overrides (None = keep the run's)."""
  return dict(
      mcmc_steps=MCMC_STEPS.value,
      mcmc_temp=MCMC_TEMP.value,
      epsilon=EPSILON.value,
      tau_res=TAU_RES.value,
      init_scale_res=INIT_SCALE_RES.value,
      clip_langevin_grad_res=CLIP.value,
      ddls_steps=DDLS_STEPS.value,
      ddls_epsilon=DDLS_EPSILON.value,
      sample_weights=SAMPLE_WEIGHTS.value,
  )
