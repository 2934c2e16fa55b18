"""gs:// workdirs against a local GCS emulator (never a real bucket):
training, resuming, sampling and evaluating.

TensorFlow's GCS client cannot be pointed at an emulator, so here etils
reaches gs:// through fsspec/gcsfs (EPATH_USE_TF=false, STORAGE_EMULATOR_HOST)
and Orbax's TensorStore through TENSORSTORE_GCS_HTTP_URL; on real GCS the
same code goes through TensorFlow's gfile and TensorStore's default endpoint.
"""

import socket

from etils import epath
from etils.epath import gpath
from gcp_storage_emulator import server as emulator
from gcp_storage_emulator.handlers import objects as emulator_objects
import jax
import numpy as np
import pytest

from hatebm_jax import evaluate
from hatebm_jax.serving import pretrained
from hatebm_jax import sample
from hatebm_jax.serving import draw
from hatebm_jax.serving import run as run_lib
from hatebm_jax import train
from conftest import DATA_DIR, tiny_config

pytestmark = pytest.mark.slow

BUCKET = 'hatebm-test'


@pytest.fixture(scope='module')
def gcs():
  """A local in-memory GCS with one bucket, and the clients pointed at it."""
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  server = emulator.create_server(
      'localhost', port, in_memory=True, default_bucket=BUCKET
  )
  download = emulator_objects.download

  def download_with_generation(request, response, storage, *args, **kwargs):
    """Real GCS sends an object's generation with its bytes; the emulator
    does not, and TensorStore then fails now and then to update the OCDBT
    manifest of a checkpoint ('Malformed StorageGeneration')."""
    download(request, response, storage, *args, **kwargs)
    try:
      obj = storage.get_file_obj(
          request.params['bucket_name'], request.params['object_id']
      )
    except emulator_objects.NotFound:
      return
    response['x-goog-generation'] = str(obj['generation'])
    response['x-goog-metageneration'] = str(obj.get('metageneration', 1))

  server.start()
  url = f'http://localhost:{port}'
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(emulator_objects, 'download', download_with_generation)
    mp.setenv('STORAGE_EMULATOR_HOST', url)
    mp.setenv('EPATH_USE_TF', 'false')
    mp.setenv('TENSORSTORE_GCS_HTTP_URL', url)
    mp.setenv('GOOGLE_AUTH_TOKEN_FOR_TESTING', 'emulator')
    # etils caches its choice of backend: make it read EPATH_USE_TF again.
    gpath._is_tf_installed.cache_clear()  # pylint: disable=protected-access
    yield f'gs://{BUCKET}'
  gpath._is_tf_installed.cache_clear()  # pylint: disable=protected-access
  server.stop()


@pytest.fixture(scope='module')
def runs(gcs, tmp_path_factory):
  """The same 4-step run straight in a local workdir, and in a gs:// workdir
  stopped after 2 steps and resumed there."""
  local = tmp_path_factory.mktemp('run')
  train.train_and_evaluate(tiny_config(), str(local))
  remote = f'{gcs}/runs/tiny'
  # TensorBoard events go through TensorFlow's own GCS client, whose
  # endpoint is fixed (it cannot reach an emulator): they go to a local
  # folder here; checkpoints, grids and everything else go to the emulator.
  events = tmp_path_factory.mktemp('events')
  from clu import metric_writers  # pylint: disable=g-import-not-at-top

  create = metric_writers.create_default_writer
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(
        metric_writers,
        'create_default_writer',
        lambda logdir, **kwargs: create(str(events), **kwargs),
    )
    train.train_and_evaluate(tiny_config(num_training_steps=2), remote)
    train.train_and_evaluate(tiny_config(), remote)
  return str(local), remote


def test_training_and_resuming_on_gcs(runs):
  local, remote = runs
  root = epath.Path(remote)
  assert sorted(p.name for p in (root / 'checkpoints').iterdir()) == ['2', '4']
  assert sorted(p.name for p in (root / 'samples').iterdir()) == [
      'data.png',
      'step_000002.png',
      'step_000004.png',
  ]
  a, b = run_lib.load_run(local), run_lib.load_run(remote)
  assert a.step == b.step == 4
  leaves_a, leaves_b = jax.tree.leaves(a.state), jax.tree.leaves(b.state)
  assert len(leaves_a) == len(leaves_b) > 10
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(x, y)


def test_sampling_from_gcs_equals_sampling_locally(runs, tmp_path, monkeypatch):
  local, remote = runs
  sample.sample_checkpoint(
      local, 6, 3, seed=1, output_dir=str(tmp_path / 'local')
  )
  # The TensorBoard images go to a local folder (see `runs`).
  create = sample.metric_writers.create_default_writer
  monkeypatch.setattr(
      sample.metric_writers,
      'create_default_writer',
      lambda logdir, **kwargs: create(str(tmp_path / 'events'), **kwargs),
  )
  settings = sample.sample_checkpoint(remote, 6, 3, seed=1)
  out = epath.Path(remote) / 'eval' / 'step_4'
  assert sorted(p.name for p in out.iterdir()) == [
      'grid.png',
      'path.png',
      'samples.npz',
      'settings.json',
  ]
  assert settings['step'] == 4 and settings['workdir'] == remote
  with (out / 'samples.npz').open('rb') as f:
    from_gcs = np.load(f)['images']
  np.testing.assert_array_equal(
      from_gcs, np.load(tmp_path / 'local' / 'samples.npz')['images']
  )


def test_evaluate_writes_its_json_to_gcs(runs):
  _, remote = runs
  result = evaluate.evaluate(
      remote,
      metrics='fcd',
      num_samples=100,
      batch_size=50,
      num_reference=500,
      data_dir=DATA_DIR,
  )
  written = epath.Path(remote) / 'eval' / 'step_4' / 'metrics.json'
  assert written.exists()
  assert result['samples']['ebm']['fcd'] > 0


def test_exported_model_on_gcs_samples_like_the_checkpoint(runs):
  """Export a gs:// run to gs://, load it from gs://: the same images as
  sampling the training checkpoint with the same seed (the local run's,
  equal to the gs:// run's bit for bit: test_training_and_resuming_on_gcs)."""
  local, remote = runs
  target = f'{remote}/export/tiny.hatebm'
  info = run_lib.export(remote, target)
  assert info['step'] == 4 and epath.Path(target).exists()
  model = pretrained.load_pretrained(target)
  want = draw.draw_images(run_lib.load_run(local), 6, 3, seed=1)
  np.testing.assert_array_equal(model.sample(6, seed=1, batch_size=3), want)
