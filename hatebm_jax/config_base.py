"""Shared defaults of every experiment config, and the rules on one value.

Experiment files in the top-level `configs/` folder start from
`get_base_config()` and override what differs. Keys keep the names of the
official release (docs/official_release.md §9.1; docs/glossary.md maps
each to the code's word). The defaults here are the official CIFAR-10
synthesis settings.

Every rule on one config value is written here once, in `RULES`, with its
message; the dataclasses that hold runtime settings (`LangevinConfig`,
`DDLSConfig`) call `check` on their values, so an impossible value gets the
same message wherever it is caught. Rules across keys live with their
owners, and `hatebm_jax.validation.validate` runs them all.
"""

import importlib.util
import json
import math
import numbers
import os
from typing import Any, Callable

import ml_collections


def get_base_config() -> ml_collections.ConfigDict:
  """Official synthesis defaults (docs/official_release.md §9.1, cifar10_synth column)."""
  c = ml_collections.ConfigDict()
  c.exp_name = 'cifar10_synth'
  c.seed = 0
  # What is trained: 'synthesis' (tandem hat network + generator, Sec. 3.4),
  # 'joint' (hat network over a frozen pretrained generator: refine /
  # retrofit, Sec. 3.2), 'sngan' (the GAN to refine), 'autoencoder' (the AE
  # to retrofit).
  c.mode = 'synthesis'

  # Data (docs/official_release.md §2).
  c.data_type = 'cifar10'  # fashion_mnist | cifar10 | celeb_a | imagenet2012
  c.data_dir = ''  # TFDS data_dir (or Fashion-MNIST folder); '' = default
  c.image_dims = (32, 32, 3)  # [S, S, C]
  c.random_crop = False  # ImageNet training crop
  # How a TFDS data set is read: 'auto' picks 'grain' (random access with
  # O(1) resume) for one prepared as ArrayRecord (`tfds build
  # --file_format=array_record`), else 'tf_data' (TFRecord files).
  c.data_loader = 'auto'  # auto | grain | tf_data
  c.data_threads = 8  # grain: batches read and decoded in parallel
  c.data_epsilon = 1e-3  # std of the noise added to positive samples

  # Networks (docs/official_release.md §1).
  c.ebm_type = 'ebm_sngan'
  c.ebm_ngf = 256  # hat network width (last block)
  c.gen_type = 'gen_sngan'
  c.gen_ngf = 256  # generator width (4x4 input stage)
  c.gen_factor = 2.0  # G(z) in (-gen_factor, gen_factor)
  c.state_dims = (128,)  # latent z shape

  # Training (docs/official_release.md §4.1, §4.4).
  c.num_training_steps = 50_000
  c.batch_size = 128  # global batch
  c.ebm_lr_info = ((1e-4, 0),)  # [[lr, start_update], ...]
  c.gen_lr_info = ((1e-4, 0),)
  c.clip_ebm_grad = False  # per-tensor clip of the hat network gradients
  c.max_grad_norm = 50.0
  c.gen_loss_factor_coop = 1000.0
  c.persistent_size = 10_000  # replay bank, rounded down to a batch multiple
  # Moving averages of the weights (synthesis; optim.ema_update): decay in
  # [0, 1), 0 keeps none. Where one is kept, sampling, plots, evaluation and export
  # use it when sample_weights = 'ema'; 'raw' uses the trained weights, as
  # the official release does (docs/official_release.md §4.4).
  c.hat_ema_decay = 0.0
  c.gen_ema_decay = 0.0
  c.sample_weights = 'ema'

  # Langevin sampling (docs/official_release.md §3).
  c.mcmc_steps = 50  # K
  c.mcmc_temp = 1e-8  # T
  c.epsilon = 5e-4  # residual step size ε
  c.tau_res = 0.0  # residual prior τ‖y‖²
  c.init_scale_res = 0.0  # y0 = init_scale_res · N(0, I)
  # Synthesis training: this fraction of each batch's chains (the first
  # round(fraction · B) examples) starts from uniform noise X₀ ~ U[-1, 1]
  # instead of G(z) + y₀; their negatives train the hat network (so it sees
  # images far from the generator's) but are not written to the replay bank.
  # 0 (the official sampler) for none.
  c.noise_init_fraction = 0.0
  # Hat update (synthesis and joint): weight α of an energy penalty
  # α·(mean H(x⁺)² + mean H(x⁻)²)/T added to eq. 8. It anchors the energies
  # at 0, so that negatives no data is near (chains from noise) settle at
  # H ≈ 1/(2α) instead of rising without bound. 0 (the official loss).
  c.energy_l2 = 0.0
  c.init_scale_latent = 1.0  # z0 = init_scale_latent · N(0, I)
  c.use_noise = True
  c.clip_langevin_grad_res = True
  c.max_langevin_norm_res = 2.5  # per-image bound on the drift step
  c.langevin_unroll = -1  # scan unroll: -1 auto (CPU full, else 1), 0 full
  # The hat network's first convolution (on the image's 1 or 3 channels):
  # 'conv', or 'patches', the same sums as one matrix product over the
  # gathered 3x3 neighbourhoods (faster on TPUs for 128-px images by the
  # compiler's estimate, slower for 32-px ones: docs/performance.md); 'auto':
  # patches on TPU from 128 px (models.PATCHES_FROM_SIZE), conv otherwise.
  c.stem_conv = 'auto'
  # Arithmetic of the hat network, generator and encoder: 'float32', or
  # 'bfloat16' on GPU/TPU (parameters, Adam states, the Langevin state y and
  # z, energies, drift norms and losses stay float32; see docs/performance.md).
  c.compute_dtype = 'float32'
  # Joint sampler: Langevin on z too (docs/official_release.md §3).
  c.update_latents = False
  c.epsilon_latent = 5e-3  # ε_z of the latent steps

  # Joint runs: the frozen generator comes from this workdir (local or
  # gs://) of an 'sngan' run (refine) or an 'autoencoder' run (retrofit).
  c.gen_weights = ''

  # SN-GAN (Mimicry recipe, docs/official_release.md §8 #9) and DDLS (Che et al.
  # 2020).
  c.disc_ndf = 128  # discriminator width
  c.gan_lr = 2e-4  # Adam, decayed linearly to 0
  c.gan_beta1 = 0.0
  c.gan_beta2 = 0.9
  c.n_dis = 5  # discriminator steps per generator step
  c.ddls_steps = 100  # DDLS Langevin steps in z
  c.ddls_epsilon = 0.1  # DDLS step size ε (drift ε²/2, noise ε)

  # Autoencoder (docs/official_release.md §1.5, §4.3): data_epsilon is its latent noise.
  c.inf_type = 'inf_encoder'
  c.inf_ngf = 256
  c.inf_lr_info = ((1e-4, 0),)
  c.loss_factor = 1000.0

  # Devices: one data-parallel mesh axis over this many devices of all
  # processes (0 = all). batch_size must be divisible by it.
  c.num_devices = 0

  # Divergence guard (hatebm_jax/infra/divergence.py): a step diverges when a
  # logged metric, parameter, optimiser moment or bank sample is not finite
  # or |mean H(x±)| > divergence_max_energy (inf: finiteness only). Then
  # 'stop' ends the run with a report; 'rollback' restores the last good
  # checkpoint, draws fresh randomness and multiplies every learning rate by
  # rollback_lr_factor, at most max_rollbacks times (then it stops).
  c.divergence_max_energy = 1e6
  c.on_divergence = 'stop'
  c.max_rollbacks = 3
  c.rollback_lr_factor = 1.0

  # Logging and checkpoints (docs/official_release.md §4.5).
  c.info_freq = 50  # scalars to TensorBoard and console
  c.plot_freq = 500  # PNG grids under <workdir>/samples
  c.checkpoint_freq = 1000  # Orbax checkpoint of the whole state
  c.max_to_keep = 3
  c.num_plot = 64  # images per grid
  # Evaluation during training (hatebm_jax/evaluators), every eval_freq
  # steps and at the end (0 = never), on eval_num_samples of the mode's own
  # samples against 10,000 test images. eval_metrics: comma-separated names
  # of hatebm_jax.evaluators.EVALUATORS, '' for none, or 'auto': the test
  # loss where the mode has one, FCD and KID for Fashion-MNIST, FID and KID
  # for the other data sets when inception_weights (the path of pytorch-fid's
  # pt_inception-2015-12-05-6726825d.pth, or its converted .npz) is given.
  c.eval_metrics = 'auto'
  c.eval_freq = 5000
  c.eval_num_samples = 5000
  c.inception_weights = ''
  # Profiler trace (clu periodic_actions.Profile, jax.profiler) of this many
  # training steps from 10 steps after the run (re)starts (earlier when the
  # run is shorter), written to <workdir>/plugins/profile for TensorBoard;
  # 0 = none.
  c.profile_steps = 0
  return c


COMPUTE_DTYPES = ('float32', 'bfloat16')
STEM_CONVS = ('auto', 'conv', 'patches')
ON_DIVERGENCE = ('stop', 'rollback')
MAX_PLOT = 1024  # images in one PNG grid

# Keys that fix the shapes or structure of the training state: a checkpoint
# made with other values cannot be restored into this config.
STATE_KEYS = (
    'mode',
    'image_dims',
    'ebm_type',
    'ebm_ngf',
    'gen_type',
    'gen_ngf',
    'state_dims',
    'batch_size',
    'persistent_size',
    'clip_ebm_grad',
    'disc_ndf',
    'inf_ngf',
)


def state_mismatches(
    saved: dict, config: ml_collections.ConfigDict
) -> list[str]:
  """`key: saved -> new` for each STATE_KEYS entry that differs.

  Args:
    saved: the config stored with a checkpoint (JSON: tuples are lists).
    config: the config of the run that wants to restore it.
  """
  current = json.loads(json.dumps(config.to_dict()))
  return [
      f'{key}: checkpoint {saved.get(key)!r}, config {current[key]!r}'
      for key in STATE_KEYS
      if saved.get(key) != current[key]
  ]


# Keys renamed since runs were first saved: old name -> new name.
RENAMED = {'fcd_freq': 'eval_freq', 'fcd_num_samples': 'eval_num_samples'}


def from_saved(saved: Any) -> ml_collections.ConfigDict:
  """A config stored with a run (a dict from JSON, or a ConfigDict), with
  renamed keys (`RENAMED`) under their new names, keys added since filled in
  from the defaults and JSON lists turned back into tuples; not validated,
  and `saved` is not modified."""
  saved = dict(
      saved.to_dict() if isinstance(saved, ml_collections.ConfigDict) else saved
  )
  for old, new in RENAMED.items():
    if old in saved:
      saved.setdefault(new, saved.pop(old))
  for key in ('image_dims', 'state_dims'):
    if key in saved:
      saved[key] = tuple(saved[key])
  config = ml_collections.ConfigDict(saved)
  for key, value in get_base_config().items():
    if key not in config:
      config[key] = value
  return config


def _integer(value: Any, minimum: int) -> bool:
  return (
      isinstance(value, int)
      and not isinstance(value, bool)
      and value >= minimum
  )


def _positive(value: Any) -> bool:
  return isinstance(value, numbers.Real) and 0 < value < math.inf


def _non_negative(value: Any) -> bool:
  return isinstance(value, numbers.Real) and 0 <= value < math.inf


def _unit_interval(value: Any) -> bool:
  return (
      isinstance(value, numbers.Real)
      and not isinstance(value, bool)
      and 0 <= value < 1
  )


def _dims(value: Any) -> bool:
  return isinstance(value, (tuple, list)) and all(_integer(d, 1) for d in value)


def _in(choices: tuple[str, ...]) -> Callable[[Any], bool]:
  return lambda v: v in choices


POSITIVE_INT = (lambda v: _integer(v, 1), 'must be an integer >= 1')
NON_NEGATIVE_INT = (lambda v: _integer(v, 0), 'must be an integer >= 0')
POSITIVE = (_positive, 'must be finite and > 0')
NON_NEGATIVE = (_non_negative, 'must be finite and >= 0')
UNIT = (_unit_interval, 'must be in [0, 1)')
EMA = (_unit_interval, 'must be in [0, 1) (0 keeps no average)')
WEIGHTS = ('ema', 'raw')  # sample_weights: the averages (where kept) or raw
DATA_LOADERS = ('auto', 'grain', 'tf_data')
# Rules on one value, by topic: key -> (predicate, what is allowed).
# `validate` applies every one of them; `check` lets a settings dataclass
# apply the same rule with the same message. Rules across keys belong to
# their owners: the data (`data.check_config`), the networks
# (`models.check_config`), each mode (`Mode.check_config`) and the
# evaluators (`evaluators.check_config`).
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    # Run.
    'seed': NON_NEGATIVE_INT,
    'num_training_steps': POSITIVE_INT,
    'batch_size': POSITIVE_INT,
    'num_devices': (
        lambda v: _integer(v, 0),
        'must be an integer >= 0 (0 = all devices)',
    ),
    # Data.
    'image_dims': (_dims, 'must be a tuple of integers >= 1'),
    'data_loader': (
        _in(DATA_LOADERS),
        "choose 'auto' (grain for ArrayRecord data, else tf.data), 'grain' "
        "or 'tf_data'",
    ),
    'data_threads': POSITIVE_INT,
    'data_epsilon': NON_NEGATIVE,
    # Networks.
    'state_dims': (_dims, 'must be a tuple of integers >= 1'),
    'ebm_ngf': POSITIVE_INT,
    'gen_ngf': POSITIVE_INT,
    'inf_ngf': POSITIVE_INT,
    'disc_ndf': POSITIVE_INT,
    'gen_factor': POSITIVE,
    'stem_conv': (_in(STEM_CONVS), f'choose one of {STEM_CONVS}'),
    'compute_dtype': (
        _in(COMPUTE_DTYPES),
        "choose 'float32' or 'bfloat16' (float16 overflows: the hat-network "
        'gradients carry the factor 1/T = 1/mcmc_temp, beyond its range '
        "65504; 'bfloat16' has float32's range)",
    ),
    # Optimisation.
    'max_grad_norm': POSITIVE,
    'gen_loss_factor_coop': POSITIVE,
    'loss_factor': POSITIVE,
    'energy_l2': NON_NEGATIVE,
    'hat_ema_decay': EMA,
    'gen_ema_decay': EMA,
    'gan_lr': POSITIVE,
    'gan_beta1': UNIT,
    'gan_beta2': UNIT,
    'n_dis': POSITIVE_INT,
    # Langevin sampling.
    'mcmc_steps': POSITIVE_INT,
    'mcmc_temp': POSITIVE,
    'epsilon': POSITIVE,
    'epsilon_latent': POSITIVE,
    'tau_res': NON_NEGATIVE,
    'init_scale_res': NON_NEGATIVE,
    'init_scale_latent': NON_NEGATIVE,
    'max_langevin_norm_res': POSITIVE,
    'langevin_unroll': (
        lambda v: _integer(v, -1),
        '-1 (auto), 0 (fully unrolled) or a positive int',
    ),
    'noise_init_fraction': (
        lambda v: _unit_interval(v) or v == 1,
        'must be in [0, 1]',
    ),
    'ddls_steps': POSITIVE_INT,
    'ddls_epsilon': POSITIVE,
    'sample_weights': (
        _in(WEIGHTS),
        "choose 'ema' (the weight averages, where kept) or 'raw'",
    ),
    # Divergence guard.
    'divergence_max_energy': (
        lambda v: isinstance(v, numbers.Real) and v > 0,
        'must be > 0 (inf: check finiteness only)',
    ),
    'on_divergence': (_in(ON_DIVERGENCE), f'choose one of {ON_DIVERGENCE}'),
    'max_rollbacks': NON_NEGATIVE_INT,
    'rollback_lr_factor': (
        lambda v: isinstance(v, numbers.Real) and 0 < v <= 1,
        'must be in (0, 1] (1 keeps the learning rates)',
    ),
    # Outputs.
    'info_freq': POSITIVE_INT,
    'plot_freq': POSITIVE_INT,
    'checkpoint_freq': POSITIVE_INT,
    'max_to_keep': POSITIVE_INT,
    'num_plot': (
        lambda v: _integer(v, 1) and v <= MAX_PLOT,
        f'must be an integer in [1, {MAX_PLOT}] (images in one grid)',
    ),
    'eval_freq': (
        lambda v: _integer(v, 0),
        'must be an integer >= 0 (0 = no evaluation during training)',
    ),
    'eval_num_samples': (lambda v: _integer(v, 2), 'must be an integer >= 2'),
    'profile_steps': (
        lambda v: _integer(v, 0),
        'must be an integer >= 0 (0: no profile)',
    ),
}
LR_SCHEDULES = ('ebm_lr_info', 'gen_lr_info', 'inf_lr_info')


def invalid(key: str, value: Any, allowed: str) -> ValueError:
  """The error of every config rule: `config.<key>=<value> is invalid:
  <allowed>.`"""
  return ValueError(f'config.{key}={value!r} is invalid: {allowed}.')


def check(key: str, value: Any) -> None:
  """Applies the rule of `key` (`RULES`) to `value`.

  Raises:
    ValueError: `invalid(key, value, allowed)` when the rule fails.
  """
  ok, allowed = RULES[key]
  if not ok(value):
    raise invalid(key, value, allowed)


def check_bank(persistent_size: int, batch_size: int) -> None:
  """The replay bank holds at least one batch of pairs.

  Raises:
    ValueError: when `persistent_size` < `batch_size`.
  """
  if not persistent_size >= batch_size:
    raise invalid(
        'persistent_size',
        persistent_size,
        f'the replay bank must hold at least one batch '
        f'(batch_size={batch_size})',
    )


def load_config_file(next_to: str, name: str) -> ml_collections.ConfigDict:
  """`get_config()` of the config file `name`.py in the folder of `next_to`.

  Lets one experiment file build on another (e.g. imagenet_scaled on
  imagenet_synth) however the configs folder is reached.
  """
  path = os.path.join(os.path.dirname(os.path.abspath(next_to)), f'{name}.py')
  spec = importlib.util.spec_from_file_location(f'hatebm_config_{name}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()
