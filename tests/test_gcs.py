"""gs:// workdirs against a local GCS emulator (never a real bucket).

TensorFlow's GCS client cannot be pointed at an emulator, so here etils
reaches gs:// through fsspec/gcsfs (EPATH_USE_TF=false, STORAGE_EMULATOR_HOST)
and Orbax's TensorStore through TENSORSTORE_GCS_HTTP_URL; on real GCS the
same code goes through TensorFlow's gfile and TensorStore's default endpoint.
"""

import socket

from etils import epath
from etils.epath import gpath
from gcp_storage_emulator import server as emulator
import numpy as np
import pytest

from hatebm_jax import evaluate
from hatebm_jax import sample
from hatebm_jax import train
from conftest import DATA_DIR, tiny_config

BUCKET = 'hatebm-test'


@pytest.fixture(scope='module')
def gcs():
  """A local in-memory GCS with one bucket, and the clients pointed at it."""
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  server = emulator.create_server('localhost', port, in_memory=True,
                                  default_bucket=BUCKET)
  server.start()
  url = f'http://localhost:{port}'
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv('STORAGE_EMULATOR_HOST', url)
    mp.setenv('EPATH_USE_TF', 'false')
    mp.setenv('TENSORSTORE_GCS_HTTP_URL', url)
    mp.setenv('GOOGLE_AUTH_TOKEN_FOR_TESTING', 'emulator')
    # etils caches its choice of backend: make it read EPATH_USE_TF again.
    gpath._is_tf_installed.cache_clear()  # pylint: disable=protected-access
    yield f'gs://{BUCKET}'
  gpath._is_tf_installed.cache_clear()  # pylint: disable=protected-access
  server.stop()


def _upload(src: epath.Path, dst: epath.Path) -> None:
  for child in src.iterdir():
    if child.is_dir():
      _upload(child, dst / child.name)
    else:
      dst.mkdir(parents=True, exist_ok=True)
      (dst / child.name).write_bytes(child.read_bytes())


@pytest.fixture(scope='module')
def runs(gcs, tmp_path_factory):
  """The same checkpoint in a local workdir and in a gs:// workdir."""
  local = tmp_path_factory.mktemp('run')
  train.train_and_evaluate(tiny_config(num_training_steps=2), str(local))
  remote = f'{gcs}/runs/tiny'
  _upload(epath.Path(local) / 'checkpoints',
          epath.Path(remote) / 'checkpoints')
  return str(local), remote


def test_sampling_from_gcs_equals_sampling_locally(runs, tmp_path):
  local, remote = runs
  sample.sample_checkpoint(local, 6, 3, seed=1,
                           output_dir=str(tmp_path / 'local'))
  settings = sample.sample_checkpoint(remote, 6, 3, seed=1)
  out = epath.Path(remote) / 'eval' / 'step_2'
  assert sorted(p.name for p in out.iterdir()) == [
      'grid.png', 'path.png', 'samples.npz', 'settings.json']
  assert settings['step'] == 2 and settings['workdir'] == remote
  with (out / 'samples.npz').open('rb') as f:
    from_gcs = np.load(f)['images']
  np.testing.assert_array_equal(
      from_gcs, np.load(tmp_path / 'local' / 'samples.npz')['images'])


def test_evaluate_writes_its_json_to_gcs(runs):
  _, remote = runs
  result = evaluate.evaluate(remote, 'fcd', num_samples=100, batch_size=50,
                             num_reference=500, data_dir=DATA_DIR)
  written = epath.Path(remote) / 'eval' / 'step_2' / 'metrics.json'
  assert written.exists()
  assert result['samples']['ebm']['fcd'] > 0
