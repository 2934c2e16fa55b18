"""Experiment configs: they load, validate and keep the official values."""

import glob
import os

import jax
import pytest

from hatebm_jax import config_base
from hatebm_jax import modes
from hatebm_jax import validation
from hatebm_jax.models import layers
from conftest import CONFIG_DIR, ROOT, load_config, tiny_config

CONFIGS = sorted(
    os.path.basename(p)[:-3]
    for p in glob.glob(os.path.join(CONFIG_DIR, '*.py'))
)

# (config, hat params, generator params, bank pairs), docs/official_release.md
# §1.6 and §0.9.
PAPER_SIZES = {
    'cifar10_synth': (4_204_800, 4_276_739),
    'celeba_synth': (19_542_720, 12_220_675),
    'imagenet_synth': (38_419_136, 32_150_787),
    'imagenet_scaled': (153_654_656, 124_340_739),
}


JOINT_AND_STAGES = (
    'cifar10_sngan',
    'cifar10_refine',
    'celeba_refine',
    'cifar10_ae',
    'cifar10_retrofit',
    'fashion_mnist_sngan',
    'fashion_mnist_refine',
    'fashion_mnist_ae',
    'fashion_mnist_retrofit',
)


def test_every_experiment_has_a_config():
  assert set(PAPER_SIZES) | {'fashion_mnist_synth'} | set(
      JOINT_AND_STAGES
  ) <= set(CONFIGS)


def test_20k_config_continues_the_quick_start():
  """The curve's config is the quick start but for its length, the later
  rate drops, what it keeps and the generator's average (which training
  never reads); its schedules agree up to step 8,800."""
  quick, long = load_config('fashion_mnist_synth'), load_config(
      'fashion_mnist_synth_20k'
  )
  changed = {k for k in quick if quick[k] != long[k]}
  assert changed == {
      'exp_name',
      'num_training_steps',
      'ebm_lr_info',
      'gen_lr_info',
      'gen_ema_decay',
      'checkpoint_freq',
      'max_to_keep',
      'plot_freq',
      'eval_freq',
  }
  for key in ('ebm_lr_info', 'gen_lr_info'):
    before = [(lr, step) for lr, step in long[key] if step <= 8800]
    assert before == list(quick[key])
  assert long.num_training_steps > quick.num_training_steps


def test_one_hour_config_is_the_frontiers_best_point():
  """The one-hour config is the quick start with twice the width, batch 16,
  one chain in 16 from noise with the energy penalty, and its own schedules
  (docs/quality.md, tenth round); exact parameter counts of ngf 64."""
  quick = load_config('fashion_mnist_synth')
  hour = load_config('fashion_mnist_synth_long')
  changed = {k: hour[k] for k in quick if quick[k] != hour[k]}
  assert changed == {
      'exp_name': 'fashion_mnist_synth_long',
      'ebm_ngf': 64,
      'gen_ngf': 64,
      'batch_size': 16,
      'noise_init_fraction': 0.0625,
      'energy_l2': 0.1,
      'num_training_steps': 6000,
      'ebm_lr_info': ((3e-5, 0), (6e-6, 4200)),
      'gen_lr_info': ((1e-3, 0), (2e-4, 4200)),
      'checkpoint_freq': 2000,
      'max_to_keep': 4,
      'plot_freq': 2000,
      'eval_freq': 2000,
  }
  validation.validate(hour)
  abstract = modes.build(hour).abstract_state(0)
  assert layers.count_params(abstract.hat_params) == 263_488
  assert layers.count_params(abstract.gen_params) == 367_617


# Official joint settings (docs/official_release.md §9.1): (gen_type,
# gen_factor, K, T, ε, ε_z,
# τ, data noise, hat rate, steps).
JOINT_OFFICIAL = {
    'cifar10_refine': (
        'gen_sngan',
        1.0,
        250,
        1e-3,
        1e-4,
        5e-3,
        0.0,
        1e-3,
        1e-5,
        25_000,
    ),
    'celeba_refine': (
        'gen_sngan',
        1.0,
        100,
        1e-6,
        1e-4,
        5e-3,
        0.0,
        1e-3,
        1e-5,
        25_000,
    ),
    'cifar10_retrofit': (
        'gen_decoder',
        2.0,
        100,
        1e-3,
        5e-4,
        1e-3,
        50.0,
        1e-2,
        1e-4,
        25_000,
    ),
}


@pytest.mark.parametrize('name', sorted(JOINT_OFFICIAL))
def test_official_joint_hyperparameters(name):
  c = load_config(name)
  assert (c.mode, c.update_latents, c.batch_size, c.init_scale_res) == (
      'joint',
      True,
      128,
      0.0,
  )
  assert (
      c.gen_type,
      c.gen_factor,
      c.mcmc_steps,
      c.mcmc_temp,
      c.epsilon,
      c.epsilon_latent,
      c.tau_res,
      c.data_epsilon,
      c.ebm_lr_info[0][0],
      c.num_training_steps,
  ) == JOINT_OFFICIAL[name]


def test_official_stage_configs():
  gan = load_config('cifar10_sngan')
  assert (
      gan.mode,
      gan.batch_size,
      gan.n_dis,
      gan.gan_lr,
      gan.gan_beta1,
      gan.gan_beta2,
      gan.num_training_steps,
      gan.gen_factor,
      gan.gen_ngf,
      gan.disc_ndf,
  ) == ('sngan', 64, 5, 2e-4, 0.0, 0.9, 100_000, 1.0, 256, 128)
  ae = load_config('cifar10_ae')
  assert (
      ae.mode,
      ae.batch_size,
      ae.data_epsilon,
      ae.loss_factor,
      ae.num_training_steps,
      tuple(ae.state_dims),
      ae.gen_ngf,
      ae.inf_ngf,
  ) == ('autoencoder', 128, 2e-2, 1000.0, 49_900, (16, 16, 1), 256, 256)
  abstract = jax.eval_shape(modes.build(ae).init, jax.random.PRNGKey(0))
  # docs/official_release.md §1.6: Encoder-32 and Decoder-32 (+ 4,096 frozen statistics).
  assert layers.count_params(abstract.enc_params) == 4_206_849
  assert layers.count_params(abstract.gen_params) == 4_210_435
  assert layers.count_params(abstract.gen_frozen) == 4_096


@pytest.mark.parametrize('name', CONFIGS)
def test_config_validates_and_builds(name):
  config = load_config(name)
  if config.mode == 'joint':
    with pytest.raises(ValueError, match='gen_weights'):
      validation.validate(config)  # the pretrained generator is required
    config.gen_weights = '/path/of/a/generator/run'
  validation.validate(config)
  model = modes.build(config)
  abstract = model.abstract_state(0)
  if name in PAPER_SIZES:
    assert (
        layers.count_params(abstract.hat_params),
        layers.count_params(abstract.gen_params),
    ) == PAPER_SIZES[name]
    assert abstract.bank.latents.shape == (128, 78, 128)  # 9,984 pairs


@pytest.mark.parametrize('name', sorted(PAPER_SIZES))
def test_official_hyperparameters(name):
  c = load_config(name)
  assert (
      c.batch_size,
      c.mcmc_steps,
      c.mcmc_temp,
      c.epsilon,
      c.data_epsilon,
      c.persistent_size,
      c.gen_loss_factor_coop,
      c.max_langevin_norm_res,
      c.gen_factor,
      c.init_scale_res,
  ) == (128, 50, 1e-8, 5e-4, 1e-3, 10_000, 1000.0, 2.5, 2.0, 0.0)
  imagenet = name.startswith('imagenet')
  assert c.num_training_steps == (300_000 if imagenet else 50_000)
  assert c.clip_ebm_grad == imagenet and c.random_crop == imagenet
  if imagenet:
    assert tuple(map(tuple, c.ebm_lr_info)) == (
        (1e-4, 0),
        (1e-5, 230_000),
        (1e-6, 260_000),
    )
    assert tuple(map(tuple, c.gen_lr_info)) == (
        (5e-5, 0),
        (1e-5, 230_000),
        (1e-6, 260_000),
    )
  else:
    assert tuple(map(tuple, c.ebm_lr_info)) == ((1e-4, 0),)
    assert tuple(map(tuple, c.gen_lr_info)) == ((1e-4, 0),)


@pytest.mark.parametrize(
    'key,value,message',
    [
        ('mcmc_steps', 0, 'mcmc_steps=0'),
        ('epsilon', 0.0, 'epsilon=0.0'),
        ('mcmc_temp', -1.0, 'mcmc_temp=-1.0'),
        ('persistent_size', 4, 'persistent_size=4'),
        ('data_type', 'svhn', "data_type='svhn'"),
        ('image_dims', (48, 48, 1), r'image_dims=\(48, 48, 1\)'),
        ('langevin_unroll', -2, 'langevin_unroll=-2'),
        ('epsilon', float('inf'), 'epsilon=inf .* finite'),
        ('ebm_ngf', 0, 'ebm_ngf=0 is invalid: must be an integer >= 1'),
        ('state_dims', (0,), r'state_dims=\(0,\)'),
        ('ebm_lr_info', (1e-4, 0), r'ebm_lr_info=\(0.0001, 0\) .* pairs'),
        ('gen_lr_info', ((1e-4, 10),), 'gen_lr_info=.* starting at update 0'),
        ('mcmc_temp', 0.0, r'mcmc_temp=0.0 is invalid: must be finite and > 0'),
        (
            'mcmc_steps',
            -3,
            r'mcmc_steps=-3 is invalid: must be an integer >= 1',
        ),
        ('batch_size', 0, r'batch_size=0 is invalid: must be an integer >= 1'),
        (
            'persistent_size',
            7,
            r'persistent_size=7 is invalid: the replay bank '
            r'must hold at least one batch \(batch_size=8\)',
        ),
        (
            'image_dims',
            (64, 64, 1),
            r'image_dims=\(64, 64, 1\) is invalid: '
            r'fashion_mnist is trained at \(32, 32, 1\)',
        ),
        (
            'state_dims',
            (4, 4),
            r"state_dims=\(4, 4\) is invalid: 'gen_sngan' "
            r'takes a latent vector \[nz\]',
        ),
        (
            'on_divergence',
            'ignore',
            r"on_divergence='ignore' is invalid: choose "
            r"one of \('stop', 'rollback'\)",
        ),
        (
            'rollback_lr_factor',
            2.0,
            r'rollback_lr_factor=2.0 is invalid: must be ' r'in \(0, 1\]',
        ),
        ('max_rollbacks', -1, 'max_rollbacks=-1 is invalid'),
        ('divergence_max_energy', 0.0, 'divergence_max_energy=0.0 is invalid'),
        ('seed', -1, 'seed=-1 is invalid: must be an integer >= 0'),
        (
            'state_dims',
            (16.5,),
            r'state_dims=\(16.5,\) is invalid: must be a '
            'tuple of integers >= 1',
        ),
        (
            'num_plot',
            100_000,
            r'num_plot=100000 is invalid: must be an integer in \[1, 1024\]',
        ),
        ('ebm_lr_info', ((float('inf'), 0),), 'rates must be finite and > 0'),
        (
            'ebm_type',
            'foo',
            r"ebm_type='foo' is invalid: choose one of \('ebm_sngan',\)",
        ),
        (
            'gen_ema_decay',
            1.0,
            r'gen_ema_decay=1.0 is invalid: must be in \[0, 1\)',
        ),
        ('hat_ema_decay', -0.1, r'hat_ema_decay=-0.1 is invalid'),
        ('sample_weights', 'mean', r"sample_weights='mean' is invalid: choose"),
        (
            'noise_init_fraction',
            1.5,
            r'noise_init_fraction=1.5 is invalid: must be in \[0, 1\]',
        ),
        ('energy_l2', -0.5, r'energy_l2=-0.5 is invalid'),
        (
            'data_loader',
            'torch',
            r"data_loader='torch' is invalid: choose 'auto'",
        ),
        ('data_threads', 0, r'data_threads=0 is invalid: must be an integer'),
        ('profile_steps', -2, r'profile_steps=-2 is invalid: must be an'),
    ],
)
def test_bad_values_name_the_key(key, value, message):
  with pytest.raises(ValueError, match=message):
    validation.validate(tiny_config(**{key: value}))


def test_width_must_divide_by_16_above_32px():
  config = load_config('celeba_synth')
  config.gen_ngf = 1000
  with pytest.raises(ValueError, match='gen_ngf=1000 .* multiple of 16'):
    validation.validate(config)


def test_unknown_keys_are_errors():
  config = load_config('fashion_mnist_synth')
  config.lock()
  with pytest.raises(AttributeError):
    config.mcmc_step = 3  # typo of mcmc_steps


@pytest.mark.parametrize(
    'key,value,message',
    [
        (
            'epsilon_latent',
            0.0,
            'epsilon_latent=0.0 is invalid: must be finite ' 'and > 0',
        ),
        (
            'gen_weights',
            '',
            "gen_weights='' is invalid: a joint run needs the "
            'workdir of a trained sngan or autoencoder run',
        ),
    ],
)
def test_joint_values_name_the_key(key, value, message):
  config = load_config('fashion_mnist_refine')
  config.gen_weights = '/runs/sngan'
  config[key] = value
  with pytest.raises(ValueError, match=message):
    validation.validate(config)


def test_sngan_step_size_and_decoder_latents_are_checked():
  config = load_config('fashion_mnist_sngan')
  config.ddls_epsilon = -0.1
  with pytest.raises(ValueError, match='ddls_epsilon=-0.1 is invalid'):
    validation.validate(config)
  config = load_config('fashion_mnist_ae')
  config.state_dims = (8, 8, 1)
  with pytest.raises(
      ValueError,
      match=r'state_dims=\(8, 8, 1\) is invalid: '
      r"'gen_decoder' takes latents \(16, 16, 1\)",
  ):
    validation.validate(config)


def test_unknown_key_of_a_config_built_in_python():
  config = tiny_config()  # unlocked, as in a notebook
  config.mcmc_step = 3
  with pytest.raises(
      ValueError,
      match=r'config.mcmc_step is not a known key '
      r'\(did you mean mcmc_steps\?\)',
  ):
    validation.validate(config)


def test_the_glossary_names_every_key():
  """docs/glossary.md maps each config key to the code's word."""
  text = open(os.path.join(ROOT, 'docs', 'glossary.md')).read()
  missing = [k for k in config_base.get_base_config() if f'`{k}`' not in text]
  assert not missing, missing
