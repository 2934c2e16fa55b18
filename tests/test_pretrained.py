"""Exported pretrained models: export, load (path, URL), sample, score."""

import functools
import http.server
import subprocess
import sys
import threading

import flax.serialization
import jax
import numpy as np
import pytest

import hatebm_jax
from conftest import ROOT, tiny_config
from hatebm_jax import pretrained
from hatebm_jax import sample
from hatebm_jax import sampling
from hatebm_jax import train


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """A 4-step tiny synthesis run and its export."""
  workdir = tmp_path_factory.mktemp('run')
  train.train_and_evaluate(tiny_config(), str(workdir))
  path = str(tmp_path_factory.mktemp('export') / 'tiny.hatebm')
  info = pretrained.export(str(workdir), path)
  return str(workdir), path, info


def test_export_holds_networks_and_config_only(run):
  workdir, path, info = run
  with open(path, 'rb') as f:
    payload = flax.serialization.msgpack_restore(f.read())
  assert payload['format'] == pretrained.FORMAT and payload['step'] == 4
  assert sorted(payload['networks']) == ['gen_frozen', 'gen_params',
                                         'hat_params']
  state = sampling.load_run(workdir).state
  for name, tree in payload['networks'].items():
    for a, b in zip(jax.tree.leaves(tree),
                    jax.tree.leaves(getattr(state, name))):
      np.testing.assert_array_equal(a, b)
  networks = sum(np.size(a) for a in jax.tree.leaves(payload['networks']))
  assert info['parameters'] == networks
  # Adam moments (2x the parameters) and the bank are left out.
  everything = sum(np.size(a) for a in jax.tree.leaves(state))
  assert everything > 3 * networks


def test_exported_model_samples_like_the_checkpoint(run):
  workdir, path, _ = run
  model = hatebm_jax.load_pretrained(path)
  assert model.step == 4 and model.config.mode == 'synthesis'
  want = sampling.draw_images(sampling.load_run(workdir), 6, 3, seed=5)
  np.testing.assert_array_equal(model.sample(6, seed=5, batch_size=3), want)
  # Sampler settings per call, as for a checkpoint.
  want = sampling.draw_images(
      sampling.load_run(workdir, mcmc_steps=3, mcmc_temp=1e-3), 4, 4, seed=2)
  np.testing.assert_array_equal(
      model.sample(4, seed=2, batch_size=4, mcmc_steps=3, mcmc_temp=1e-3),
      want)


def test_sample_entry_point_takes_an_exported_model(run, tmp_path):
  workdir, path, _ = run
  sample.sample_checkpoint(workdir, 6, 3, seed=1,
                           output_dir=str(tmp_path / 'ckpt'))
  settings = sample.sample_checkpoint(path, 6, 3, seed=1,
                                      output_dir=str(tmp_path / 'export'))
  assert settings['step'] == 4
  np.testing.assert_array_equal(
      np.load(tmp_path / 'export' / 'samples.npz')['images'],
      np.load(tmp_path / 'ckpt' / 'samples.npz')['images'])
  assert (tmp_path / 'export' / 'path.png').exists()


def test_energy_scores_images_like_the_hat_network(run):
  _, path, _ = run
  model = pretrained.load_pretrained(path)
  images = model.sample(4, seed=0, batch_size=4)
  x = images.astype(np.float32) / 127.5 - 1.0
  want = model.run.model.energy(model.run.state.hat_params, x)
  np.testing.assert_allclose(model.energy(images), want, rtol=1e-6)
  np.testing.assert_allclose(model.energy(x, batch_size=3), want, rtol=1e-6)
  with pytest.raises(ValueError, match=r'this model takes \[N, 32, 32, 1\]'):
    model.energy(np.zeros((2, 28, 28, 1), np.uint8))


def test_loads_from_a_url(run):
  """The notebook's https:// path (served over plain http here)."""
  _, path, _ = run
  folder, name = path.rsplit('/', 1)
  handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                              directory=folder)
  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    url = f'http://127.0.0.1:{server.server_address[1]}/{name}'
    from_url = pretrained.load_pretrained(url)
    np.testing.assert_array_equal(
        from_url.sample(2, seed=0, batch_size=2),
        pretrained.load_pretrained(path).sample(2, seed=0, batch_size=2))
    with pytest.raises(FileNotFoundError, match='Cannot download'):
      pretrained.load_pretrained(url + '.missing')
  finally:
    server.shutdown()


def test_bad_paths_and_files(run, tmp_path):
  workdir, path, _ = run
  with pytest.raises(FileNotFoundError, match='python -m hatebm_jax.export'):
    pretrained.load_pretrained(str(tmp_path / 'none.hatebm'))
  junk = tmp_path / 'junk.hatebm'
  junk.write_bytes(b'not a model')
  with pytest.raises(ValueError, match='is not an exported hatebm_jax model'):
    pretrained.load_pretrained(str(junk))
  with pytest.raises(ValueError, match='holds one step'):
    sampling.load_run(path, step=2)
  with pytest.raises(ValueError, match='is a folder'):
    pretrained.export(workdir, str(tmp_path))
  with pytest.raises(ValueError, match='mcmc_steps=0 is invalid'):
    pretrained.load_pretrained(path, mcmc_steps=0)


def test_export_entry_point(run, tmp_path):
  workdir, path, _ = run
  out = tmp_path / 'cli.hatebm'
  subprocess.run([sys.executable, '-m', 'hatebm_jax.export',
                  f'--workdir={workdir}', f'--output={out}'], check=True,
                 cwd=ROOT, capture_output=True)
  assert out.read_bytes() == open(path, 'rb').read()


def test_shipped_fashion_mnist_model():
  """The model the README and notebook use: the quick start's final step
  (FCD 47.1 in that run), exported. Its samples look like Fashion-MNIST
  in bulk: dark backgrounds and a mean intensity near the data's 73/255."""
  model = hatebm_jax.load_pretrained(
      f'{ROOT}/hatebm_jax/assets/fashion_mnist_synth.hatebm')
  assert model.step == 2200 and model.config.data_type == 'fashion_mnist'
  images = model.sample(64, seed=0, batch_size=64)
  assert images.shape == (64, 32, 32, 1) and images.dtype == np.uint8
  assert 50 < images.mean() < 100
  assert np.median(images[:, :3, :3]) < 10  # corners (padding) stay dark
  assert np.isfinite(model.energy(images)).all()


def test_langevin_path_follows_the_chain(run):
  """Step k of the path is k one-step segments of the training sampler;
  its energies are H of the recorded states."""
  _, path, _ = run
  model = pretrained.load_pretrained(path)
  out = model.langevin_path(num_chains=3, seed=1, mcmc_steps=4)
  assert out['x_gen'].shape == out['y'].shape == (5, 3, 32, 32, 1)
  assert out['energy'].shape == (5, 3) and list(out['steps']) == [0, 1, 2,
                                                                   3, 4]
  np.testing.assert_allclose(out['x_gen'][0], out['x_gen'][4],  # z fixed
                             atol=1e-6)
  assert not np.array_equal(out['y'][0], out['y'][4])
  want = model.energy(out['x_gen'][4] + out['y'][4])
  np.testing.assert_allclose(out['energy'][4], want, rtol=1e-5, atol=1e-7)
