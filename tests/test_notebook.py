"""notebooks/hat_ebm_demo.ipynb runs top to bottom on CPU (nbclient) and
shows its figures."""

import os

import nbclient
import nbformat

from conftest import ROOT

NOTEBOOK = os.path.join(ROOT, 'notebooks', 'hat_ebm_demo.ipynb')


def test_demo_notebook_runs_and_shows_samples_and_paths(monkeypatch, tmp_path):
  monkeypatch.setenv('HATEBM_DEMO_TRAIN_SECONDS', '30')
  monkeypatch.setenv('HATEBM_DEMO_WORKDIR', str(tmp_path / 'run'))
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  nbclient.NotebookClient(notebook, timeout=600, kernel_name='python3',
                          resources={'metadata': {'path': ROOT}}).execute()
  nbformat.write(notebook, str(tmp_path / 'executed.ipynb'))

  def images(cell):
    return sum('image/png' in out.get('data', {}) for out in cell.outputs)

  code = [c for c in notebook.cells if c.cell_type == 'code']
  by_source = {key: next(c for c in code if key in c.source) for key in (
      'model.sample(NUM_SAMPLES', 'langevin_path', 'model.energy(images)',
      "'-m', 'hatebm_jax.main'")}
  assert images(by_source['model.sample(NUM_SAMPLES']) == 1
  assert images(by_source['langevin_path']) == 2  # paths, energy curve
  assert images(by_source['model.energy(images)']) == 1
  text = ''.join(out.get('text', '') for out in
                 by_source['model.energy(images)'].outputs)
  assert 'AUROC uniform noise vs Fashion-MNIST test' in text
  training = by_source["'-m', 'hatebm_jax.main'"]
  assert images(training) == 1
  assert 'Stopped by SIGTERM' in ''.join(out.get('text', '')
                                         for out in training.outputs)
