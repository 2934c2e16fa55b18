"""Shared defaults of every experiment config, and their validation.

Experiment files in the top-level `configs/` folder start from
`get_base_config()` and override what differs. Keys keep the names of the
official release (docs/official_release.md §9.1). The defaults here are
the official CIFAR-10 synthesis settings.

Every rule on a config value is written here once, with its message:
`validate` checks a whole config, and the dataclasses that hold runtime
settings (`LangevinConfig`, `DDLSConfig`, the networks' builders) call
`check` on their values, so an impossible value gets the same message
wherever it is caught.
"""

import difflib
import importlib.util
import json
import math
import numbers
import os
from typing import Any, Callable

import ml_collections

from hatebm_jax import data
from hatebm_jax import optim


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
  # [0, 1), 0 keeps none. Where one is kept, sampling, plots, FCD and export
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
  # Fréchet Classifier Distance to Fashion-MNIST test, logged to TensorBoard
  # every fcd_freq steps and at the end (0 = never; Fashion-MNIST runs only).
  c.fcd_freq = 0
  c.fcd_num_samples = 2000
  # Profiler trace (clu periodic_actions.Profile, jax.profiler) of this many
  # training steps from 10 steps after the run (re)starts (earlier when the
  # run is shorter), written to <workdir>/plugins/profile for TensorBoard;
  # 0 = none.
  c.profile_steps = 0
  return c


MODES = ('synthesis', 'joint', 'sngan', 'autoencoder')
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


def from_saved(saved: Any) -> ml_collections.ConfigDict:
  """A config stored with a run (a dict from JSON, or a ConfigDict), with
  keys added since filled in from the defaults and JSON lists turned back
  into tuples; not validated, and `saved` is not modified."""
  saved = dict(
      saved.to_dict() if isinstance(saved, ml_collections.ConfigDict) else saved
  )
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


POSITIVE_INT = (lambda v: _integer(v, 1), 'must be an integer >= 1')
POSITIVE = (_positive, 'must be finite and > 0')
NON_NEGATIVE = (_non_negative, 'must be finite and >= 0')
GEN_TYPES = ('gen_sngan', 'gen_decoder')
WEIGHTS = ('ema', 'raw')  # sample_weights: the averages (where kept) or raw
DATA_LOADERS = ('auto', 'grain', 'tf_data')
# Rules on one value: key -> (predicate, what is allowed). `validate`
# applies them (some only in the modes that read the key); `check` lets a
# settings dataclass apply the same rule with the same message.
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    'mode': (lambda v: v in MODES, f'choose one of {MODES}'),
    'ebm_type': (
        lambda v: v == 'ebm_sngan',
        "the only hat network is 'ebm_sngan'",
    ),
    'gen_type': (
        lambda v: v in GEN_TYPES,
        "choose 'gen_sngan' or " "'gen_decoder'",
    ),
    'inf_type': (
        lambda v: v == 'inf_encoder',
        "the only encoder is 'inf_encoder'",
    ),
    'seed': (lambda v: _integer(v, 0), 'must be an integer >= 0'),
    'mcmc_steps': POSITIVE_INT,
    'n_dis': POSITIVE_INT,
    'ddls_steps': POSITIVE_INT,
    'disc_ndf': POSITIVE_INT,
    'inf_ngf': (lambda v: _integer(v, 1), 'must be a positive integer'),
    'mcmc_temp': POSITIVE,
    'epsilon': POSITIVE,
    'epsilon_latent': POSITIVE,
    'ddls_epsilon': POSITIVE,
    'gan_lr': POSITIVE,
    'gen_factor': POSITIVE,
    'max_langevin_norm_res': POSITIVE,
    'max_grad_norm': POSITIVE,
    'gen_loss_factor_coop': POSITIVE,
    'loss_factor': POSITIVE,
    'tau_res': NON_NEGATIVE,
    'energy_l2': NON_NEGATIVE,
    'data_epsilon': NON_NEGATIVE,
    'init_scale_res': NON_NEGATIVE,
    'init_scale_latent': NON_NEGATIVE,
    'update_latents': (bool, 'a joint run moves z: set it True'),
    'noise_init_fraction': (
        lambda v: _unit_interval(v) or v == 1,
        'must be in [0, 1]',
    ),
    'hat_ema_decay': (_unit_interval, 'must be in [0, 1) (0 keeps no average)'),
    'gen_ema_decay': (_unit_interval, 'must be in [0, 1) (0 keeps no average)'),
    'data_loader': (
        lambda v: v in DATA_LOADERS,
        "choose 'auto' (grain for ArrayRecord data, else tf.data), 'grain' "
        "or 'tf_data'",
    ),
    'sample_weights': (
        lambda v: v in WEIGHTS,
        "choose 'ema' (the weight averages, where kept) or 'raw'",
    ),
}
for _key in (
    'num_training_steps',
    'batch_size',
    'info_freq',
    'plot_freq',
    'checkpoint_freq',
    'max_to_keep',
    'num_plot',
    'data_threads',
):
  RULES[_key] = POSITIVE_INT
RULES['profile_steps'] = (
    lambda v: _integer(v, 0),
    'must be an integer >= 0 (0: no profile)',
)


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


def check_generator(gen_type: str, state_dims: tuple, image_size: int) -> None:
  """The latent shape and image size a generator type takes.

  Raises:
    ValueError: for a `gen_type` outside GEN_TYPES, or `state_dims` (or
      the image size) it cannot take.
  """
  check('gen_type', gen_type)
  if gen_type == 'gen_sngan':
    if not (len(state_dims) == 1 and state_dims[0] >= 1):
      raise invalid(
          'state_dims',
          tuple(state_dims),
          "'gen_sngan' takes a latent vector [nz], nz >= 1",
      )
  elif tuple(state_dims) != (16, 16, 1) or image_size != 32:
    raise invalid(
        'state_dims',
        tuple(state_dims),
        "'gen_decoder' takes " 'latents (16, 16, 1) and makes 32x32 images',
    )


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


def validate(config: ml_collections.ConfigDict) -> None:
  """Rejects impossible settings before any compute.

  Raises:
    ValueError: naming the key, its value and what is allowed.
  """

  def need(ok, key, allowed):
    if not ok:
      raise invalid(key, config[key], allowed)

  # Config files and the command line give locked configs (a typo in a
  # --config.<key> flag fails there); this catches configs built in Python.
  known = get_base_config()
  for key in config:
    if key not in known:
      close = difflib.get_close_matches(key, list(known), n=1)
      raise ValueError(
          f'config.{key} is not a known key'
          + (f' (did you mean {close[0]}?)' if close else '')
          + '; the keys are those of hatebm_jax/config_base.py.'
      )

  for key in ('mode', 'ebm_type', 'seed'):
    check(key, config[key])
  for key in ('image_dims', 'state_dims'):
    need(
        all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 1
            for d in config[key]
        ),
        key,
        'must be a tuple of integers >= 1',
    )
  need(
      config.data_type in data.IMAGE_DIMS,
      'data_type',
      f'choose one of {sorted(data.IMAGE_DIMS)}',
  )
  need(
      len(config.image_dims) == 3
      and config.image_dims[0] in (32, 64, 128)
      and config.image_dims[0] == config.image_dims[1],
      'image_dims',
      'networks exist for [S, S, C] with S in 32, 64, 128',
  )
  need(
      tuple(config.image_dims) == data.IMAGE_DIMS[config.data_type],
      'image_dims',
      f'{config.data_type} is trained at '
      f'{data.IMAGE_DIMS[config.data_type]}',
  )
  for key in (
      'num_training_steps',
      'batch_size',
      'mcmc_steps',
      'info_freq',
      'plot_freq',
      'checkpoint_freq',
      'max_to_keep',
      'num_plot',
      'data_loader',
      'data_threads',
      'profile_steps',
  ):
    check(key, config[key])
  need(
      config.num_plot <= MAX_PLOT,
      'num_plot',
      f'a grid shows at most {MAX_PLOT} images',
  )
  for key in (
      'mcmc_temp',
      'epsilon',
      'gen_factor',
      'max_langevin_norm_res',
      'max_grad_norm',
      'gen_loss_factor_coop',
      'data_epsilon',
      'tau_res',
      'init_scale_res',
      'init_scale_latent',
  ):
    check(key, config[key])
  size = config.image_dims[0]
  for key in ('ebm_ngf', 'gen_ngf'):
    need(
        isinstance(config[key], int)
        and config[key] >= 1
        and (size == 32 or config[key] % 16 == 0),
        key,
        'must be a positive integer'
        + ('' if size == 32 else f', a multiple of 16 at {size}px'),
    )
  check_generator(config.gen_type, config.state_dims, size)
  if config.mode in ('synthesis', 'sngan'):
    need(
        config.gen_type == 'gen_sngan',
        'gen_type',
        f"mode {config.mode!r} trains a 'gen_sngan' generator",
    )
  if config.mode == 'autoencoder':
    need(
        config.gen_type == 'gen_decoder',
        'gen_type',
        "mode 'autoencoder' trains the decoder 'gen_decoder'",
    )
    for key in ('inf_type', 'inf_ngf', 'loss_factor'):
      check(key, config[key])
    try:
      optim.lr_schedule(config.inf_lr_info)
    except (TypeError, ValueError) as e:
      raise ValueError(
          f'config.inf_lr_info={config.inf_lr_info!r} is ' f'invalid: {e}'
      ) from e
  if config.mode == 'joint':
    check('update_latents', config.update_latents)
    need(
        bool(config.gen_weights),
        'gen_weights',
        'a joint run needs the workdir of a trained sngan or autoencoder '
        'run (its generator / decoder is refined)',
    )
  if config.update_latents:
    check('epsilon_latent', config.epsilon_latent)
  if config.mode == 'sngan':
    need(
        size == 32 or config.disc_ndf % 16 == 0,
        'disc_ndf',
        f'must be a multiple of 16 at {size}px',
    )
    for key in ('n_dis', 'disc_ndf', 'ddls_steps', 'gan_lr', 'ddls_epsilon'):
      check(key, config[key])
    for key in ('gan_beta1', 'gan_beta2'):
      need(0 <= config[key] < 1, key, 'must be in [0, 1)')
  for key in ('ebm_lr_info', 'gen_lr_info'):
    try:
      optim.lr_schedule(config[key])
    except (TypeError, ValueError) as e:
      raise ValueError(f'config.{key}={config[key]!r} is invalid: {e}') from e
  if config.mode == 'synthesis':
    check_bank(config.persistent_size, config.batch_size)
  for key in ('hat_ema_decay', 'gen_ema_decay'):
    check(key, config[key])
    need(
        config[key] == 0 or config.mode == 'synthesis',
        key,
        "weight averages are kept in 'synthesis' runs only; set it to 0",
    )
  check('noise_init_fraction', config.noise_init_fraction)
  need(
      config.noise_init_fraction == 0 or config.mode == 'synthesis',
      'noise_init_fraction',
      "chains from noise are a 'synthesis' training option; set it to 0",
  )
  check('energy_l2', config.energy_l2)
  need(
      config.energy_l2 == 0 or config.mode in ('synthesis', 'joint'),
      'energy_l2',
      "the energy penalty is part of a Hat EBM's hat update ('synthesis' or "
      "'joint'); set it to 0",
  )
  check('sample_weights', config.sample_weights)
  need(
      isinstance(config.fcd_freq, int) and config.fcd_freq >= 0,
      'fcd_freq',
      'must be an integer >= 0 (0 = no FCD during training)',
  )
  need(
      config.fcd_freq == 0 or config.data_type == 'fashion_mnist',
      'fcd_freq',
      'FCD uses a Fashion-MNIST classifier: set it to 0 for '
      f'data_type={config.data_type!r}',
  )
  need(
      isinstance(config.fcd_num_samples, int) and config.fcd_num_samples >= 2,
      'fcd_num_samples',
      'must be an integer >= 2',
  )
  need(
      isinstance(config.num_devices, int) and config.num_devices >= 0,
      'num_devices',
      'must be an integer >= 0 (0 = all devices)',
  )
  need(
      isinstance(config.langevin_unroll, int) and config.langevin_unroll >= -1,
      'langevin_unroll',
      '-1 (auto), 0 (fully unrolled) or a positive int',
  )
  need(
      config.stem_conv in STEM_CONVS,
      'stem_conv',
      f'choose one of {STEM_CONVS}',
  )
  need(
      config.compute_dtype != 'float16',
      'compute_dtype',
      'float16 overflows: the hat-network gradients carry the factor 1/T '
      f'(1/mcmc_temp = {1 / config.mcmc_temp:.3g}) beyond its range '
      "(65504); use 'bfloat16', which has float32's range",
  )
  need(
      config.compute_dtype in COMPUTE_DTYPES,
      'compute_dtype',
      f'choose one of {COMPUTE_DTYPES}',
  )
  need(
      config.mode != 'sngan' or config.compute_dtype == 'float32',
      'compute_dtype',
      "the 'sngan' mode trains in float32 (batch and "
      'spectral-norm statistics); bfloat16 is for the Hat EBM modes and '
      'the autoencoder',
  )
  need(
      config.divergence_max_energy > 0,
      'divergence_max_energy',
      'must be > 0 (inf: check finiteness only)',
  )
  need(
      config.on_divergence in ON_DIVERGENCE,
      'on_divergence',
      f'choose one of {ON_DIVERGENCE}',
  )
  need(
      isinstance(config.max_rollbacks, int) and config.max_rollbacks >= 0,
      'max_rollbacks',
      'must be an integer >= 0',
  )
  need(
      0 < config.rollback_lr_factor <= 1,
      'rollback_lr_factor',
      'must be in (0, 1] (1 keeps the learning rates)',
  )
