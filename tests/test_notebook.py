"""notebooks/hat_ebm_demo.ipynb runs top to bottom on CPU (nbclient) and
shows its figures, with the model read from a URL and the sampler set in
its parameters cell, as a user would. Training stops after a number of
steps, never after a wall-clock time."""

import functools
import http.server
import os
import re
import threading

import nbclient
import pytest
import nbformat

from conftest import ROOT

pytestmark = [pytest.mark.notebook, pytest.mark.slow]

NOTEBOOK = os.path.join(ROOT, 'notebooks', 'hat_ebm_demo.ipynb')
ASSETS = os.path.join(ROOT, 'hatebm_jax', 'assets')


def _set_parameters(cell, **values):
  """Sets `NAME = value` lines of the parameters cell (values as code)."""
  for name, value in values.items():
    cell.source, count = re.subn(
        rf'^{name} = .*$', f'{name} = {value}', cell.source, flags=re.M
    )
    assert count == 1, name


def _execute(notebook):
  """Runs every cell in a python3 kernel from the repository root."""
  nbclient.NotebookClient(
      notebook,
      timeout=600,
      kernel_name='python3',
      resources={'metadata': {'path': ROOT}},
  ).execute()


def test_demo_notebook_runs_and_shows_samples_and_paths(tmp_path):
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  handler = functools.partial(
      http.server.SimpleHTTPRequestHandler, directory=ASSETS
  )
  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  url = (
      f'http://127.0.0.1:{server.server_address[1]}/'
      'fashion_mnist_synth.hatebm'
  )
  _set_parameters(
      notebook.cells[1],
      MODEL=repr(url),
      MCMC_STEPS=12,
      MCMC_TEMP=1e-3,
      EPSILON=1e-3,
      NUM_SAMPLES=16,
      TRAIN_STEPS=3,
      WORKDIR=repr(str(tmp_path / 'run')),
  )
  try:
    _execute(notebook)
  finally:
    server.shutdown()
  nbformat.write(notebook, str(tmp_path / 'executed.ipynb'))

  def images(cell):
    return sum('image/png' in out.get('data', {}) for out in cell.outputs)

  def text(cell):
    return ''.join(out.get('text', '') for out in cell.outputs)

  code = [c for c in notebook.cells if c.cell_type == 'code']
  by_source = {
      key: next(c for c in code if key in c.source)
      for key in (
          'load_pretrained(path)',
          'model.sample(NUM_SAMPLES',
          'langevin_path',
          'model.energy(images)',
          "'-m', 'hatebm_jax.main'",
      )
  }
  assert (
      'this notebook samples with: K = 12  T = 0.001  epsilon = 0.001'
      in text(by_source['load_pretrained(path)'])
  )
  assert images(by_source['model.sample(NUM_SAMPLES']) == 1
  assert images(by_source['langevin_path']) == 2  # paths, energy curve
  assert images(by_source['model.energy(images)']) == 1
  assert 'AUROC uniform noise vs Fashion-MNIST test' in text(
      by_source['model.energy(images)']
  )
  training = by_source["'-m', 'hatebm_jax.main'"]
  assert images(training) == 1
  assert 'Trained steps 0-3' in text(training)


def test_demo_notebook_takes_a_converted_official_model(tmp_path):
  """The notebook on an official checkpoint converted by `convert`
  (tests/data/official, RGB 32 px) with the cifar10_synth preset: its
  settings under the explicit K, RGB grids, no Fashion-MNIST set."""
  from hatebm_jax.serving import official  # pylint: disable=g-import-not-at-top
  from conftest import load_config  # pylint: disable=g-import-not-at-top

  config = load_config('cifar10_synth')
  config.ebm_ngf, config.gen_ngf = 16, 16
  fixtures = os.path.join(ROOT, 'tests', 'data', 'official')
  path = str(tmp_path / 'official.hatebm')
  official.convert(
      config,
      path,
      ebm=os.path.join(fixtures, 'ebm32_1000.ckpt'),
      gen=os.path.join(fixtures, 'gen32_1000.ckpt'),
  )
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  _set_parameters(
      notebook.cells[1],
      MODEL=repr(path),
      PRESET=repr('cifar10_synth'),
      MCMC_STEPS=3,
      NUM_SAMPLES=8,
      TRAIN_STEPS=0,
  )
  _execute(notebook)
  text = ''.join(
      out.get('text', '')
      for c in notebook.cells
      for out in c.get('outputs', [])
  )
  assert 'Pretrained(synthesis, cifar10 (32, 32, 3), step 1000' in text
  # K from the parameters cell, T and ε from the preset (training T: 1e-8).
  assert (
      'this notebook samples with: K = 3  T = 0.001  epsilon = 0.0005' in text
  )
  assert 'AUROC uniform noise vs model samples' in text
  assert 'Fashion-MNIST' not in text
  pictures = sum(
      'image/png' in out.get('data', {})
      for c in notebook.cells
      for out in c.get('outputs', [])
  )
  assert pictures == 4  # samples, paths, energy curve, energy histogram
