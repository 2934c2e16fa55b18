"""Exported pretrained models: export, load (path, URL), sample, score."""

import functools
import http.server
import json
import re
import subprocess
import sys
import threading
import warnings

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hatebm_jax
from conftest import DATA_DIR, ROOT, load_config, tiny_config
from hatebm_jax.infra import checkpoint
from hatebm_jax import modes
from hatebm_jax.serving import pretrained
from hatebm_jax.infra import file_format
from hatebm_jax.serving import storage
from hatebm_jax.modes import base
from hatebm_jax import sample
from hatebm_jax.serving import draw
from hatebm_jax.serving import run as run_lib
from hatebm_jax import train


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """A 4-step tiny synthesis run and its export."""
  workdir = tmp_path_factory.mktemp('run')
  train.train_and_evaluate(tiny_config(), str(workdir))
  path = str(tmp_path_factory.mktemp('export') / 'tiny.hatebm')
  info = run_lib.export(str(workdir), path)
  return str(workdir), path, info


def test_export_holds_networks_and_config_only(run):
  workdir, path, info = run
  with open(path, 'rb') as f:
    payload = flax.serialization.msgpack_restore(f.read())
  assert payload['format'] == file_format.FORMAT and payload['step'] == 4
  assert payload['version'] == file_format.VERSION == 2
  stored = payload['networks']
  assert {name.split(']')[0] for name in stored} == {
      "['gen_frozen'",
      "['gen_params'",
      "['hat_params'",
  }
  state = run_lib.load_run(workdir).state
  want = file_format.flat_arrays(base.network_fields(state))
  assert stored.keys() == want.keys()
  for name, a in want.items():
    np.testing.assert_array_equal(stored[name], a)
  networks = sum(np.size(a) for a in stored.values())
  assert info['parameters'] == networks
  # Adam moments (2x the parameters) and the bank are left out.
  everything = sum(np.size(a) for a in jax.tree.leaves(state))
  assert everything > 3 * networks


@pytest.mark.slow
def test_sngan_runs_export_their_spectral_norm_statistics(tmp_path):
  """SN-GAN discriminator statistics have tuple keys (('kernel', 'sigma')),
  which msgpack cannot hold as map keys: the flat layout keeps them."""
  config = load_config('fashion_mnist_sngan')
  for key, value in dict(
      data_dir=DATA_DIR, gen_ngf=16, disc_ndf=16, batch_size=8
  ).items():
    config[key] = value
  model = modes.build(config)
  state = jax.jit(model.init)(jax.random.PRNGKey(0))
  ckpt = checkpoint.Checkpointer(str(tmp_path / 'run'))
  ckpt.save(0, state, config)
  ckpt.close()
  path = str(tmp_path / 'sngan.hatebm')
  run_lib.export(str(tmp_path / 'run'), path)
  loaded = pretrained.load_pretrained(path)
  assert sorted(base.network_fields(loaded.run.state)) == [
      'disc_params',
      'disc_stats',
      'gen_frozen',
      'gen_params',
  ]
  assert any(
      "('kernel', 'sigma')" in name
      for name in file_format.flat_arrays(base.network_fields(loaded.run.state))
  )
  for name in base.network_fields(loaded.run.state):
    a, b = getattr(loaded.run.state, name), getattr(state, name)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_array_equal(x, y)


def test_reexport_and_version_1_files(run, tmp_path):
  """An exported model re-exports to the same bytes (e.g. to copy it to
  gs://); a version-1 file (nested networks) loads the same arrays."""
  _, path, _ = run
  again = tmp_path / 'again.hatebm'
  for _ in range(2):  # the second time over the existing file
    run_lib.export(path, str(again))
    assert again.read_bytes() == open(path, 'rb').read()
  assert sorted(p.name for p in tmp_path.iterdir()) == ['again.hatebm']
  model = pretrained.load_pretrained(path)
  old = tmp_path / 'v1.hatebm'
  old.write_bytes(
      flax.serialization.msgpack_serialize(
          {
              'format': file_format.FORMAT,
              'version': 1,
              'step': model.step,
              'config': json.dumps(model.config.to_dict()),
              'networks': jax.device_get(base.network_fields(model.run.state)),
          }
      )
  )
  loaded = pretrained.load_pretrained(str(old)).run.state
  assert (
      len(jax.tree.leaves(loaded)) == len(jax.tree.leaves(model.run.state)) > 10
  )
  for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(model.run.state)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_exported_model_samples_like_the_checkpoint(run):
  workdir, path, _ = run
  model = hatebm_jax.load_pretrained(path)
  assert model.step == 4 and model.config.mode == 'synthesis'
  want = draw.draw_images(run_lib.load_run(workdir), 6, 3, seed=5)
  np.testing.assert_array_equal(model.sample(6, seed=5, batch_size=3), want)
  # Sampler settings per call, as for a checkpoint.
  want = draw.draw_images(
      run_lib.load_run(workdir, mcmc_steps=3, mcmc_temp=1e-3), 4, 4, seed=2
  )
  np.testing.assert_array_equal(
      model.sample(4, seed=2, batch_size=4, mcmc_steps=3, mcmc_temp=1e-3), want
  )


@pytest.mark.slow
def test_sample_entry_point_takes_an_exported_model(run, tmp_path):
  workdir, path, _ = run
  sample.sample_checkpoint(
      workdir, 6, 3, seed=1, output_dir=str(tmp_path / 'ckpt')
  )
  settings = sample.sample_checkpoint(
      path, 6, 3, seed=1, output_dir=str(tmp_path / 'export')
  )
  assert settings['step'] == 4
  np.testing.assert_array_equal(
      np.load(tmp_path / 'export' / 'samples.npz')['images'],
      np.load(tmp_path / 'ckpt' / 'samples.npz')['images'],
  )
  assert (tmp_path / 'export' / 'path.png').exists()


def test_energy_scores_images_like_the_hat_network(run):
  _, path, _ = run
  model = pretrained.load_pretrained(path)
  images = model.sample(4, seed=0, batch_size=4)
  x = images.astype(np.float32) / 127.5 - 1.0
  want = model.run.mode.energy(model.run.state.hat_params, x)
  # Same network and inputs (the uint8 scaling is the same float32 operation),
  # but other batch shapes compile to other programs, whose convolutions may
  # sum in another order: float32 round-off, ~10⁻⁷ relative on H(x).
  np.testing.assert_allclose(model.energy(images), want, rtol=1e-6)
  np.testing.assert_allclose(model.energy(x, batch_size=3), want, rtol=1e-6)
  with pytest.raises(ValueError, match=r'this model takes \[N, 32, 32, 1\]'):
    model.energy(np.zeros((2, 28, 28, 1), np.uint8))


def test_loads_from_a_url(run):
  """The notebook's https:// path (served over plain http here)."""
  _, path, _ = run
  folder, name = path.rsplit('/', 1)
  handler = functools.partial(
      http.server.SimpleHTTPRequestHandler, directory=folder
  )
  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    url = f'http://127.0.0.1:{server.server_address[1]}/{name}'
    from_url = pretrained.load_pretrained(url)
    np.testing.assert_array_equal(
        from_url.sample(2, seed=0, batch_size=2),
        pretrained.load_pretrained(path).sample(2, seed=0, batch_size=2),
    )
    with pytest.raises(FileNotFoundError, match='Cannot download'):
      pretrained.load_pretrained(url + '.missing')
  finally:
    server.shutdown()


def _payload(path):
  with open(path, 'rb') as f:
    return flax.serialization.msgpack_restore(f.read())


def test_bad_paths_and_files(run, tmp_path):
  workdir, path, _ = run
  with pytest.raises(FileNotFoundError, match='python -m hatebm_jax.export'):
    pretrained.load_pretrained(str(tmp_path / 'none.hatebm'))
  with pytest.raises(
      ValueError,
      match='is a training workdir, not an ' 'exported model. Export one with',
  ):
    pretrained.load_pretrained(workdir)
  with pytest.raises(
      ValueError,
      match='is a checkpoints folder, not an '
      f'exported model. Export one with python -m hatebm_jax'
      f'.export --workdir={workdir} ',
  ):
    pretrained.load_pretrained(f'{workdir}/checkpoints')
  with pytest.raises(ValueError, match='The model path is empty'):
    pretrained.load_pretrained('')
  assert pretrained.load_pretrained('file://' + path).step == 4
  junk = tmp_path / 'junk.hatebm'
  junk.write_bytes(b'not a model')
  with pytest.raises(ValueError, match='is not an exported hatebm_jax model'):
    pretrained.load_pretrained(str(junk))
  damaged = {  # what a damaged or hand-edited file may hold
      'no config': lambda p: p.pop('config'),
      'version as text': lambda p: p.update(version='2'),
      'version as a bool': lambda p: p.update(version=True),
      'fractional step': lambda p: p.update(step=2.5),
      'config not JSON': lambda p: p.update(config='{'),
      'networks not a map': lambda p: p.update(networks=3),
  }
  for name, damage in damaged.items():
    payload = _payload(path)
    damage(payload)
    junk.write_bytes(flax.serialization.msgpack_serialize(payload))
    with pytest.raises(ValueError, match='is a damaged exported model'):
      pretrained.load_pretrained(str(junk))
  payload = _payload(path)
  payload['config'] = json.dumps(
      {**json.loads(payload['config']), 'a_newer_key': 1}
  )
  junk.write_bytes(flax.serialization.msgpack_serialize(payload))
  with pytest.raises(
      ValueError,
      match='its config does not fit this ' 'hatebm_jax .*a_newer_key',
  ):
    pretrained.load_pretrained(str(junk))
  payload = _payload(path)
  first = sorted(payload['networks'])[0]
  payload['networks'][first + 'x'] = payload['networks'].pop(first)
  junk.write_bytes(flax.serialization.msgpack_serialize(payload))
  with pytest.raises(
      ValueError,
      match=r'do not fit the stored config .*'
      rf'{re.escape(first)} missing; {re.escape(first)}x '
      'unexpected',
  ):
    pretrained.load_pretrained(str(junk))
  payload = _payload(path)
  payload['networks'][first] = np.full_like(payload['networks'][first], np.nan)
  junk.write_bytes(flax.serialization.msgpack_serialize(payload))
  with pytest.raises(ValueError, match='hold non-finite values'):
    pretrained.load_pretrained(str(junk))
  with pytest.raises(ValueError, match='holds one step'):
    run_lib.load_run(path, step=2)
  with pytest.raises(
      FileNotFoundError,
      match=r'No checkpoint of step 3 in ' r'.*; it holds steps \[2, 4\]',
  ):
    run_lib.export(workdir, str(tmp_path / 'x.hatebm'), step=3)
  with pytest.raises(ValueError, match='is a folder'):
    run_lib.export(workdir, str(tmp_path))
  with pytest.raises(ValueError, match='written to a local path or gs://'):
    run_lib.export(workdir, 'https://example.org/m.hatebm')
  with pytest.raises(ValueError, match='is a file, not a folder'):
    run_lib.export(workdir, str(junk / 'm.hatebm'))


def test_sampler_settings_are_checked_and_reused(run):
  _, path, _ = run
  with pytest.raises(ValueError, match='mcmc_steps=0 is invalid'):
    pretrained.load_pretrained(path, mcmc_steps=0)
  model = pretrained.load_pretrained(path)
  with pytest.raises(
      ValueError,
      match='state_dims: not a sampler setting. '
      'A trained model can be sampled with other mcmc_steps',
  ):
    model.with_settings(state_dims=(64,))
  with pytest.raises(
      ValueError, match='mcmc_steps=2.5: expected int, not ' 'float'
  ):
    model.sample(2, mcmc_steps=2.5)
  for bad in ({'num_samples': 2.5}, {'num_samples': 0}, {'seed': None}):
    with pytest.raises(ValueError, match='must be'):
      model.sample(**{'num_samples': 2, **bad})
  assert model.with_settings(mcmc_steps=None) is model
  assert model.with_settings(mcmc_steps=model.config.mcmc_steps) is model
  three = model.with_settings(mcmc_steps=np.int64(3))
  assert three.config.mcmc_steps == 3
  assert model.with_settings(mcmc_steps=3) is three  # compiled once
  hot = model.with_settings(mcmc_temp=1)
  assert model.with_settings(mcmc_temp=np.float32(1.0)) is hot


def test_energy_refuses_images_on_another_scale(run):
  _, path, _ = run
  model = pretrained.load_pretrained(path)
  images = model.sample(2, seed=0, batch_size=2)
  for bad, message in [
      (images.astype(np.int64), 'dtype int64; give uint8'),
      (
          images.astype(np.float32),
          r'float images in \[\d+, \d+\]; this model takes \[-1, 1\]',
      ),
      (np.full(images.shape, np.nan, np.float32), 'non-finite'),
      (images[:0], 'with N >= 1'),
  ]:
    with pytest.raises(ValueError, match=message):
      model.energy(bad)
  with pytest.raises(ValueError, match='batch_size=0 must be'):
    model.energy(images, batch_size=0)
  with pytest.warns(UserWarning, match=r'every pixel is in \[0, 1\]'):
    model.energy(images.astype(np.float32) / 255)
  x = images.astype(np.float32) / 127.5 - 1
  # bfloat16 values are exact in float32, so both compute the same thing:
  # the default rtol=1e-7 is equality up to the last float32 bit.
  np.testing.assert_allclose(  # bfloat16 is a float type too
      model.energy(jnp.asarray(x, jnp.bfloat16)),
      model.energy(np.asarray(jnp.asarray(x, jnp.bfloat16), np.float32)),
  )
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    model.energy(np.zeros_like(x))  # mid-grey: no [0, 1] warning


def test_output_folders_of_exported_models(tmp_path):
  shipped = f'{ROOT}/hatebm_jax/assets/fashion_mnist_synth.hatebm'
  assert str(storage.eval_folder(shipped, 5)) == (
      'fashion_mnist_synth_eval/step_5'
  )  # not inside the package
  assert (
      str(storage.eval_folder('https://host/models/m.hatebm?download=1', 3))
      == 'm_eval/step_3'
  )
  assert storage.eval_folder(str(tmp_path / 'm.hatebm'), 3) == (
      tmp_path / 'm_eval' / 'step_3'
  )
  assert storage.eval_folder(str(tmp_path), 3) == (tmp_path / 'eval' / 'step_3')


@pytest.mark.slow
def test_export_entry_point(run, tmp_path):
  workdir, path, _ = run
  out = tmp_path / 'cli.hatebm'
  subprocess.run(
      [
          sys.executable,
          '-m',
          'hatebm_jax.export',
          f'--workdir={workdir}',
          f'--output={out}',
      ],
      check=True,
      cwd=ROOT,
      capture_output=True,
  )
  assert out.read_bytes() == open(path, 'rb').read()
  # A user's error is one line, without a traceback.
  bad = subprocess.run(
      [
          sys.executable,
          '-m',
          'hatebm_jax.export',
          f'--workdir={workdir}',
          f'--output={tmp_path}',
      ],
      cwd=ROOT,
      capture_output=True,
      text=True,
  )
  assert bad.returncode == 1
  assert bad.stderr.strip().splitlines()[-1] == (
      f"Error: ValueError: --output='{tmp_path}' is a folder: give a file "
      f'name, e.g. {tmp_path}/model.hatebm.'
  )
  assert 'Traceback' not in bad.stderr


def test_shipped_fashion_mnist_model():
  """The model the README and notebook use: the quick start's final step
  (FCD 27.8 on 10,000 samples), exported. Its samples look like Fashion-MNIST
  in bulk: dark backgrounds and a mean intensity near the data's 73/255."""
  model = hatebm_jax.load_pretrained(
      f'{ROOT}/hatebm_jax/assets/fashion_mnist_synth.hatebm'
  )
  assert model.step == 8800 and model.config.data_type == 'fashion_mnist'
  images = model.sample(64, seed=0, batch_size=64)
  assert images.shape == (64, 32, 32, 1) and images.dtype == np.uint8
  assert 50 < images.mean() < 100
  assert np.median(images[:, :3, :3]) < 10  # corners (padding) stay dark
  assert np.isfinite(model.energy(images)).all()


def test_shipped_one_hour_model_is_its_config():
  """The one-hour model is configs/fashion_mnist_synth_long.py trained to
  its last step: the same config value for value, except how many
  checkpoints the run kept (its run asked for 11, the config keeps 4; the
  weights do not depend on it). Its samples look like Fashion-MNIST in bulk."""
  model = hatebm_jax.load_pretrained(
      f'{ROOT}/hatebm_jax/assets/fashion_mnist_synth_long.hatebm'
  )
  as_json = lambda c: json.loads(json.dumps(c.to_dict()))
  shipped = as_json(model.config)
  config = as_json(load_config('fashion_mnist_synth_long'))
  assert (shipped.pop('max_to_keep'), config.pop('max_to_keep')) == (11, 4)
  assert shipped == config
  assert model.step == config['num_training_steps'] == 6000
  images = model.sample(64, seed=0, batch_size=64)
  assert images.shape == (64, 32, 32, 1) and images.dtype == np.uint8
  assert 50 < images.mean() < 100
  assert np.median(images[:, :3, :3]) < 10  # corners (padding) stay dark
  # The energy ranks uniform noise as less probable than clothing.
  noise = np.random.default_rng(0).integers(0, 256, images.shape, np.uint8)
  assert model.energy(noise).min() > model.energy(images).max()


def test_langevin_path_follows_the_chain(run):
  """Step k of the path is k one-step segments of the training sampler;
  its energies are H of the recorded states."""
  _, path, _ = run
  model = pretrained.load_pretrained(path)
  out = model.langevin_path(num_chains=3, seed=1, mcmc_steps=4)
  assert out['x_gen'].shape == out['y'].shape == (5, 3, 32, 32, 1)
  assert out['energy'].shape == (5, 3) and list(out['steps']) == [0, 1, 2, 3, 4]
  # z is fixed, so G(z) is the same up to round-off: each recorded step is
  # its own compiled segment that recomputes G(z), and fusion may differ
  # between them (float32, outputs in [-1, 1]: ~10⁻⁷).
  np.testing.assert_allclose(
      out['x_gen'][0], out['x_gen'][4], atol=1e-6  # z fixed
  )
  assert not np.array_equal(out['y'][0], out['y'][4])
  want = model.energy(out['x_gen'][4] + out['y'][4])
  # The chain's H(G(z) + y) against H of the sum formed here in float32:
  # the sum may round differently inside the fused program (1 ulp of x,
  # times |∂H/∂x|) and the batch shape differs; 10⁻⁵ relative holds both.
  np.testing.assert_allclose(out['energy'][4], want, rtol=1e-5, atol=1e-7)
