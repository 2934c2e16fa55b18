"""Converting the official release's TensorFlow checkpoints.

The fixtures in tests/data/official/ are real checkpoints written by the
official release's own network definitions (Keras `save_weights`, ngf 16,
random non-trivial values in every bias and batch-norm statistic), with each
network's float32 output for fixed inputs (tests/data/README.md). Each is
converted through the command line, and the converted networks must give
the official outputs.

Tolerance. Both sides compute the same float32 network, TensorFlow (oneDNN)
and XLA summing each convolution's 9·C_in products in different orders: each
layer's result differs by a few float32 roundings (ε = 6e-8 relative per
rounding, √(144) ≈ 12 roundings per output at ngf 16), carried through at most
14 layers to outputs of magnitude ≤ 2.75. Measured worst case: 4.0e-6 (the
64-px generator's 2·tanh output). TOLERANCE = 3e-5 is about 7x that; a wrong
mapping (a swapped γ/β, a kernel transposed, the generator's first dense
layer read row-major) moves outputs by 1e-2 or more.
"""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import hatebm_jax
from conftest import CONFIG_DIR, ROOT, load_config
from hatebm_jax.infra import file_format
from hatebm_jax.serving import official
from hatebm_jax.serving import presets

FIXTURES = os.path.join(ROOT, 'tests', 'data', 'official')
TOLERANCE = 3e-5
NGF16 = ('--config.ebm_ngf=16', '--config.gen_ngf=16')

# name -> (config, checkpoint flags, config overrides): one command line
# each, covering every official network family.
CONVERSIONS = {
    'synth32': ('cifar10_synth', dict(ebm='ebm32', gen='gen32'), NGF16),
    'synth64': ('celeba_synth', dict(ebm='ebm64', gen='gen64'), NGF16),
    'synth128': ('imagenet_synth', dict(ebm='ebm128', gen='gen128'), NGF16),
    'autoencoder': (
        'cifar10_ae',
        dict(gen='dec32', inf='inf32'),
        ('--config.gen_ngf=16', '--config.inf_ngf=16'),
    ),
    'retrofit': ('cifar10_retrofit', dict(ebm='ebm32', gen='dec32'), NGF16),
    'refine_generator': (
        'cifar10_refine',
        dict(gen='gen32'),
        ('--config.gen_ngf=16',),
    ),
}


def prefix(name):
  return os.path.join(FIXTURES, f'{name}_1000.ckpt')


def official_io(name):
  data = np.load(os.path.join(FIXTURES, f'{name}_io.npz'))
  return data['x'], data['y']


def convert_command(config, checkpoints, overrides, output):
  return [
      sys.executable,
      '-m',
      'hatebm_jax.convert',
      f'--config={os.path.join(CONFIG_DIR, config + ".py")}',
      *[f'--{flag}={prefix(name)}' for flag, name in checkpoints.items()],
      *overrides,
      f'--output={output}',
  ]


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
  """{name: converted file} of CONVERSIONS, each through the command line
  (run side by side)."""
  folder = tmp_path_factory.mktemp('converted')
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  procs = {
      name: subprocess.Popen(
          convert_command(*spec, folder / f'{name}.hatebm'),
          env=env,
          stdout=subprocess.PIPE,
          stderr=subprocess.PIPE,
          text=True,
      )
      for name, spec in CONVERSIONS.items()
  }
  for name, proc in procs.items():
    _, err = proc.communicate()
    assert proc.returncode == 0, (name, err[-3000:])
    assert 'Converted' in err, err[-2000:]
  return {name: str(folder / f'{name}.hatebm') for name in CONVERSIONS}


def assert_official(ours, name, scale=1.0):
  _, want = official_io(name)
  want = scale * want.reshape(ours.shape)
  assert ours.dtype == np.float32
  np.testing.assert_allclose(ours, want, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize(
    'conversion, network, size',
    [
        ('synth32', 'ebm32', 32),
        ('synth64', 'ebm64', 64),
        ('synth128', 'ebm128', 128),
        ('retrofit', 'ebm32', 32),
    ],
)
def test_hat_networks_give_the_official_energies(
    converted, conversion, network, size
):
  model = hatebm_jax.load_pretrained(converted[conversion])
  x, _ = official_io(network)
  assert x.shape == (4, size, size, 3)
  assert_official(model.energy(x), network)


@pytest.mark.parametrize(
    'conversion, network',
    [
        ('synth32', 'gen32'),
        ('synth64', 'gen64'),
        ('synth128', 'gen128'),
        ('retrofit', 'dec32'),
        ('autoencoder', 'dec32'),
    ],
)
def test_generators_give_the_official_images(converted, conversion, network):
  model = hatebm_jax.load_pretrained(converted[conversion])
  z, _ = official_io(network)
  assert_official(model.generate(z), network)
  # Batches of any size give the same images (one example per call).
  np.testing.assert_array_equal(
      model.generate(z, batch_size=1), model.generate(z)
  )


def test_the_encoder_gives_the_official_latents(converted):
  model = hatebm_jax.load_pretrained(converted['autoencoder'])
  x, _ = official_io('inf32')
  latents = model.encode(x)
  assert latents.shape == (4, 16, 16, 1)
  assert_official(latents, 'inf32')


def test_a_generator_file_holds_the_official_generator(converted):
  """`--gen` alone: the generator's arrays, nothing else, under a refine
  config; its generator is the official one (G at gen_factor 1 is half of
  the fixture's output, which the official network computed at 2)."""
  path = converted['refine_generator']
  with open(path, 'rb') as f:
    config, step, stored = file_format.decode(path, f.read())
  assert step == 1000 and config['mode'] == 'joint'
  assert config['gen_weights'] == prefix('gen32')
  assert {name.split("'")[1] for name in stored} == {'gen_params', 'gen_frozen'}
  with pytest.raises(ValueError, match='holds a generator only.*gen_weights'):
    hatebm_jax.load_pretrained(path)


def test_the_written_config_and_step(converted):
  model = hatebm_jax.load_pretrained(converted['synth32'])
  assert model.step == 1000  # from the name ebm_1000.ckpt
  assert model.config.sample_weights == 'raw'
  assert (model.config.ebm_ngf, model.config.gen_ngf) == (16, 16)
  retrofit = hatebm_jax.load_pretrained(converted['retrofit'])
  assert retrofit.config.gen_weights == prefix('dec32')


def test_sample_runs_on_a_converted_model_with_a_preset(converted, tmp_path):
  from hatebm_jax import sample  # pylint: disable=g-import-not-at-top

  settings = sample.sample_checkpoint(
      converted['synth32'],
      num_samples=4,
      batch_size=4,
      output_dir=str(tmp_path / 'out'),
      preset='cifar10_synth',
      mcmc_steps=3,  # a flag beside the preset wins
  )
  assert settings['preset'] == 'cifar10_synth'
  assert settings['sampler']['num_steps'] == 3
  assert settings['sampler']['temperature'] == 1e-3
  assert settings['sampler']['max_drift_norm'] is None  # no clip
  assert settings['init_scale_res'] == 0.01
  images = np.load(tmp_path / 'out' / 'samples.npz')['images']
  assert images.shape == (4, 32, 32, 3) and images.dtype == np.uint8
  with pytest.raises(ValueError, match='--preset=celeba_synth is for'):
    sample.sample_checkpoint(
        converted['synth32'], 4, 4, preset='celeba_synth', mcmc_steps=1
    )
  # Same data, size and mode, another generator: the retrofit decoder.
  with pytest.raises(
      ValueError,
      match="--preset=cifar10_refine is for 'joint' models of cifar10 32x32 "
      "with 'gen_sngan'; this model is one of 'joint' models of cifar10 "
      r"32x32 with 'gen_decoder'. Presets for it: \['cifar10_retrofit'\].",
  ):
    sample.sample_checkpoint(
        converted['retrofit'], 4, 4, preset='cifar10_refine', mcmc_steps=1
    )


def test_every_preset_is_valid_for_its_experiments_config():
  """Each preset's settings validate on the config of its experiment and
  fit it (data set, size, mode)."""
  from hatebm_jax.serving import settings  # pylint: disable=g-import-not-at-top

  for name in presets.PRESETS:
    config = load_config(name)
    if config.mode == 'joint':
      config.gen_weights = 'x'
    presets.check_fits(name, config)
    overridden = settings.override(
        config.to_dict(), **presets.sampler_settings(name)
    )
    assert overridden.clip_langevin_grad_res is False
    assert presets.fitting(config) == [
        n
        for n in presets.PRESETS
        if presets.PRESETS[n].data_type == config.data_type
        and presets.PRESETS[n].mode == config.mode
        and presets.PRESETS[n].image_size == config.image_dims[0]
        and presets.PRESETS[n].gen_type == config.gen_type
    ]
  assert presets.sampler_settings('cifar10_refine')['tau_res'] == 8.0
  with pytest.raises(ValueError, match="--preset='x': choose one of"):
    presets.lookup('x')


# ---- errors: one line naming the variable, nothing written ----


def write_checkpoint(path, arrays):
  """A TensorFlow object-based checkpoint holding `arrays` under their
  attribute paths, as Keras `save_weights` names them."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  def module(tree):
    m = tf.Module()
    for key, value in tree.items():
      setattr(
          m,
          key,
          module(value) if isinstance(value, dict) else tf.Variable(value),
      )
    return m

  root = {}
  for name, value in arrays.items():
    *parents, leaf = name.split('/')
    node = root
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  tf.train.Checkpoint(**{k: module(v) for k, v in root.items()}).write(path)
  return path


def cifar10_config(**overrides):
  config = load_config('cifar10_synth')
  config.ebm_ngf, config.gen_ngf = 16, 16
  for key, value in overrides.items():
    config[key] = value
  return config


def edited_ebm32(tmp_path, edit):
  arrays = official.read_checkpoint(prefix('ebm32'))
  edit(arrays)
  return write_checkpoint(str(tmp_path / 'edited' / 'ebm_7.ckpt'), arrays)


def drop(name):
  return lambda arrays: arrays.pop(name)


def add(name, value):
  return lambda arrays: arrays.__setitem__(name, value)


def reshape(name, shape):
  return lambda arrays: arrays.__setitem__(name, np.zeros(shape, np.float32))


@pytest.mark.parametrize(
    'edit, message',
    [
        (
            drop('block3/conv_2/bias'),
            'missing block3/conv_2/bias.',
        ),
        (
            add('block9/conv_1/kernel', np.zeros((3, 3, 16, 16), np.float32)),
            'unexpected block9/conv_1/kernel.',
        ),
        (
            reshape('lin_5/kernel', (17, 1)),
            'wrong shape lin_5/kernel [17, 1] (expected [16, 1]).',
        ),
    ],
)
def test_a_checkpoint_that_does_not_fit_names_the_variable(
    tmp_path, edit, message
):
  path = edited_ebm32(tmp_path, edit)
  output = tmp_path / 'out.hatebm'
  with pytest.raises(ValueError) as e:
    official.convert(
        cifar10_config(), str(output), ebm=path, gen=prefix('gen32')
    )
  text = str(e.value)
  assert '\n' not in text
  assert text.startswith(f'--ebm={path} holds an official 32 px hat network')
  assert 'the config needs hat network 32x32x3, ngf 16 (21 variables)' in text
  assert text.endswith(message)
  assert not output.exists()


@pytest.mark.parametrize(
    'config, checkpoints, message',
    [
        (  # a generator given as the hat network
            cifar10_config(),
            dict(ebm='gen32', gen='gen32'),
            '--ebm=.*gen32_1000.ckpt holds an official 32 px generator '
            r'\(GenSNGAN32\), ngf 16; the config needs hat network '
            '32x32x3, ngf 16 .*missing conv_1/conv_1/bias, conv_1/conv_1/kernel',
        ),
        (  # a 64 px network for a 32 px config
            cifar10_config(),
            dict(ebm='ebm64', gen='gen32'),
            r'holds an official 64 px hat network \(EBMSNGAN64\), ngf 16; '
            '.*missing lin_5/kernel; unexpected block3/sc/bias, .* and 7 more; '
            r'wrong shape block2/conv_1/bias \[2\] \(expected \[16\]\)',
        ),
        (  # the paper's width, not the fixture's
            cifar10_config(ebm_ngf=256),
            dict(ebm='ebm32', gen='gen32'),
            r'ngf 16; the config needs hat network 32x32x3, ngf 256 .*wrong '
            r'shape .*\[3, 3, 16, 16\] \(expected \[3, 3, 256, 256\]\)',
        ),
        (  # the decoder given for an SN-GAN generator
            cifar10_config(),
            dict(ebm='ebm32', gen='dec32'),
            r'--gen=.*holds an official retrofit decoder \(GenDecoder32\)',
        ),
        (  # the networks of another mode
            cifar10_config(),
            dict(gen='dec32', inf='inf32'),
            "is a model of mode 'synthesis', of --ebm and --gen; got --gen and "
            '--inf',
        ),
    ],
)
def test_wrong_networks_for_the_config(tmp_path, config, checkpoints, message):
  output = tmp_path / 'out.hatebm'
  with pytest.raises(ValueError, match=message) as e:
    official.convert(
        config,
        str(output),
        **{flag: prefix(name) for flag, name in checkpoints.items()},
    )
  assert '\n' not in str(e.value)
  assert not output.exists()


def test_a_prefix_that_does_not_exist(tmp_path):
  output = tmp_path / 'out.hatebm'
  with pytest.raises(
      FileNotFoundError,
      match=r'--ebm=/nowhere/ebm_5.ckpt: no TensorFlow checkpoint there '
      r'\(/nowhere/ebm_5.ckpt.index does not exist\)',
  ):
    official.convert(
        cifar10_config(),
        str(output),
        ebm='/nowhere/ebm_5.ckpt',
        gen=prefix('gen32'),
    )
  assert not output.exists()
  # The .index file itself is read as its prefix.
  official.convert(
      cifar10_config(),
      str(output),
      ebm=prefix('ebm32') + '.index',
      gen=prefix('gen32') + '.data-00000-of-00001',
  )
  assert output.exists()


def test_a_damaged_checkpoint_or_a_folder_names_the_flag(tmp_path):
  """A partly downloaded .data file, a corrupt .index and a folder given as
  a prefix: one line naming the flag and the file; nothing written."""
  import shutil  # pylint: disable=g-import-not-at-top

  damaged = tmp_path / 'damaged'
  damaged.mkdir()
  shutil.copy(prefix('gen32') + '.index', damaged / 'gen_9.ckpt.index')
  data = open(prefix('gen32') + '.data-00000-of-00001', 'rb').read()
  (damaged / 'gen_9.ckpt.data-00000-of-00001').write_bytes(data[:500])
  (damaged / 'ebm_9.ckpt.index').write_bytes(b'not a checkpoint' * 8)
  output = tmp_path / 'out.hatebm'
  cases = [
      (
          dict(gen=str(damaged / 'gen_9.ckpt')),
          ValueError,
          f'--gen={damaged}/gen_9.ckpt: TensorFlow cannot read this checkpoint '
          r'\(.*\). A damaged or partly downloaded',
      ),
      (
          dict(ebm=str(damaged / 'ebm_9.ckpt'), gen=prefix('gen32')),
          ValueError,
          f'--ebm={damaged}/ebm_9.ckpt: TensorFlow cannot read this checkpoint',
      ),
      (
          dict(ebm=str(damaged), gen=prefix('gen32')),
          FileNotFoundError,
          f'--ebm={damaged} is a folder: give the prefix of one checkpoint in '
          rf'it \({damaged}/ebm_9.ckpt, {damaged}/gen_9.ckpt\).',
      ),
  ]
  for checkpoints, error, message in cases:
    with pytest.raises(error, match=message) as e:
      official.convert(cifar10_config(), str(output), **checkpoints)
    assert '\n' not in str(e.value)
  assert not output.exists()


def test_the_command_prints_one_line_and_writes_nothing(tmp_path):
  output = tmp_path / 'out.hatebm'
  command = convert_command(
      'cifar10_synth', dict(ebm='ebm32', gen='gen32'), (), output
  )  # the config's ngf 256, the fixtures' 16
  proc = subprocess.run(
      command,
      env={**os.environ, 'JAX_PLATFORMS': 'cpu'},
      capture_output=True,
      text=True,
      check=False,
  )
  assert proc.returncode == 1
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith(
      f'Error: ValueError: --ebm={prefix("ebm32")} holds an official 32 px '
      'hat network (EBMSNGAN32), ngf 16; the config needs hat network '
      '32x32x3, ngf 256 (21 variables): wrong shape '
  )
  assert f'--gen={prefix("gen32")} holds an official 32 px generator' in last
  assert not output.exists()
  assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_a_refinement_run_trains_on_a_converted_official_generator(
    converted, tmp_path
):
  """3 steps of cifar10_refine (on tfds mock data) whose frozen generator
  is the converted official SN-GAN generator; it stays bitwise the
  official arrays."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  from hatebm_jax import train  # pylint: disable=g-import-not-at-top
  from hatebm_jax.serving import run as run_lib  # pylint: disable=g-import-not-at-top

  config = load_config('cifar10_refine')
  for key, value in dict(
      gen_weights=converted['refine_generator'],
      gen_ngf=16,
      ebm_ngf=8,
      batch_size=8,
      mcmc_steps=2,
      num_training_steps=3,
      data_dir='',
      data_loader='tf_data',
      info_freq=1,
      plot_freq=3,
      checkpoint_freq=3,
      num_plot=4,
      eval_freq=0,
  ).items():
    config[key] = value
  workdir = tmp_path / 'refine'
  with tfds.testing.mock_data(num_examples=16):
    train.train_and_evaluate(config, str(workdir))
  state = run_lib.load_run(str(workdir)).state
  assert int(state.step) == 3
  arrays = official.read_checkpoint(prefix('gen32'))
  np.testing.assert_array_equal(
      np.asarray(state.gen_params['dense']['kernel']), arrays['lin_1/kernel']
  )
  np.testing.assert_array_equal(
      np.asarray(state.gen_frozen['block3']['bn2']['var']),
      arrays['block4/bn_2/moving_variance'],
  )
  assert all(
      np.isfinite(np.asarray(a)).all()
      for a in jax.tree.leaves(state.hat_params)
  )


@pytest.mark.slow
def test_evaluate_runs_on_a_converted_model_with_a_preset(converted, tmp_path):
  """FID (random Inception weights, tfds mock data) of a converted model
  under the cifar10_synth preset: the preset's sampler and protocol are
  recorded, given settings win."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  from conftest import random_inception_weights  # pylint: disable=g-import-not-at-top
  from hatebm_jax import evaluate  # pylint: disable=g-import-not-at-top

  weights = random_inception_weights(tmp_path / 'inception.npz')
  with tfds.testing.mock_data(num_examples=12):
    result = evaluate.evaluate(
        converted['synth32'],
        metrics='fid',
        preset='cifar10_synth',
        overrides={'mcmc_steps': 2},
        output=str(tmp_path / 'm.json'),
        num_samples=6,
        batch_size=6,
        num_reference=12,
        inception_weights=weights,
        data_dir='',
    )
  assert result['preset'] == 'cifar10_synth'
  assert result['reference'] == {'split': 'train', 'num': 12}
  assert result['sampler']['temperature'] == 1e-3
  assert result['sampler']['num_steps'] == 2
  assert result['samples']['ebm']['fid'] > 0
