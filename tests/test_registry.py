"""Pretrained models by name: the registry, checked downloads from a local
HTTP server (good, corrupted, truncated and failing-once files) and the
cache they land in."""

import hashlib
import http.server
import os
import threading

import pytest

import hatebm_jax
from hatebm_jax.serving import registry
from hatebm_jax.serving import storage

SHIPPED = os.path.join(
    os.path.dirname(hatebm_jax.__file__), 'assets', 'fashion_mnist_synth.hatebm'
)


class _Server:
  """Serves `files` (path -> bytes) on localhost; `truncate` paths send
  half their bytes under the full Content-Length; `fail_first` paths answer
  500 to their first request. Counts requests per path."""

  def __init__(self, files, truncate=(), fail_first=()):
    self.files, self.truncate, self.fail_first = files, truncate, fail_first
    self.requests = {}
    server = self

    class Handler(http.server.BaseHTTPRequestHandler):

      def do_GET(self):  # pylint: disable=invalid-name
        n = server.requests[self.path] = server.requests.get(self.path, 0) + 1
        body = server.files.get(self.path)
        if body is None or (self.path in server.fail_first and n == 1):
          self.send_error(404 if body is None else 500)
          return
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        if self.path in server.truncate:
          body = body[: len(body) // 2]
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True

      def log_message(self, *args):
        pass

    self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}'
    threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

  def close(self):
    self.httpd.shutdown()
    self.httpd.server_close()


@pytest.fixture
def model_bytes():
  with open(SHIPPED, 'rb') as f:
    return f.read()


@pytest.fixture
def cache(tmp_path, monkeypatch):
  monkeypatch.setenv('HATEBM_CACHE_DIR', str(tmp_path / 'cache'))
  return tmp_path / 'cache' / 'models'


def _entry(url, data):
  return registry.Entry(
      sha256=hashlib.sha256(data).hexdigest(), description='test', url=url
  )


# Registered name -> the step it was exported at.
SHIPPED_STEPS = {'fashion_mnist_synth': 8800, 'fashion_mnist_synth_long': 6000}


def test_every_registered_model_is_shipped():
  assert set(registry.MODELS) == set(SHIPPED_STEPS)
  for name, entry in registry.MODELS.items():
    assert entry.bundled == f'{name}.hatebm' and entry.url is None


@pytest.mark.parametrize('name', sorted(SHIPPED_STEPS))
def test_shipped_model_by_name(name, tmp_path, monkeypatch):
  """The registered hash is the shipped file's; the name loads it from the
  package, in the API and the commands' path rules."""
  shipped = os.path.join(os.path.dirname(SHIPPED), f'{name}.hatebm')
  entry = registry.MODELS[name]
  assert registry.sha256_of(shipped) == entry.sha256
  assert registry.resolve(name) == shipped
  step = SHIPPED_STEPS[name]
  model = hatebm_jax.load_pretrained(name)
  assert model.step == step
  assert storage.is_exported(name)
  assert str(storage.eval_folder(name, step)) == f'{name}_eval/step_{step}'
  # A folder of that name in the current directory is a path, not a name.
  monkeypatch.chdir(tmp_path)
  os.mkdir(name)
  assert not registry.is_registered(name)
  with pytest.raises(
      KeyError, match=rf"'nope' is not a registered model.*{name}"
  ):
    registry.resolve('nope')


def test_download_is_checked_cached_and_read_once(cache, model_bytes):
  server = _Server({'/m.hatebm': model_bytes})
  try:
    entries = {'remote': _entry(server.url + '/m.hatebm', model_bytes)}
    path = registry.resolve('remote', entries)
    assert path == str(cache / 'remote.hatebm')
    with open(path, 'rb') as f:
      assert f.read() == model_bytes
    assert registry.resolve('remote', entries) == path
    assert server.requests == {'/m.hatebm': 1}  # the second call hit the cache
    assert sorted(os.listdir(cache)) == ['remote.hatebm']
    # Readable by all, as the umask allows (pooch's temporary file is 0600).
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask
  finally:
    server.close()


def test_a_failed_attempt_is_retried(cache, model_bytes):
  server = _Server({'/m.hatebm': model_bytes}, fail_first=('/m.hatebm',))
  try:
    entries = {'remote': _entry(server.url + '/m.hatebm', model_bytes)}
    path = registry.resolve('remote', entries)
    assert server.requests == {'/m.hatebm': 2}
    assert registry.sha256_of(path) == entries['remote'].sha256
  finally:
    server.close()


@pytest.mark.parametrize('damage', ['corrupted', 'truncated', 'missing'])
def test_bad_download_is_a_clear_error_and_leaves_nothing(
    cache, model_bytes, damage
):
  served = bytearray(model_bytes)
  if damage == 'corrupted':
    served[len(served) // 2] ^= 0xFF
  server = _Server(
      {} if damage == 'missing' else {'/m.hatebm': bytes(served)},
      truncate=('/m.hatebm',) if damage == 'truncated' else (),
  )
  try:
    entries = {'remote': _entry(server.url + '/m.hatebm', model_bytes)}
    with pytest.raises(IOError) as raised:
      registry.resolve('remote', entries)
    message = str(raised.value)
    assert "Could not fetch the model 'remote'" in message
    assert server.url + '/m.hatebm' in message
    assert entries['remote'].sha256 in message
    if damage == 'corrupted':
      got = hashlib.sha256(bytes(served)).hexdigest()
      assert f'what it serves has SHA-256 {got}, not the registered' in message
    # Every attempt was made, and no partial or temporary file is left.
    assert server.requests['/m.hatebm'] == registry.RETRIES + 1
    assert os.listdir(cache) == []
  finally:
    server.close()


def test_damaged_bundled_model_is_refused(tmp_path, monkeypatch):
  damaged = tmp_path / 'fashion_mnist_synth.hatebm'
  damaged.write_bytes(b'not a model')
  monkeypatch.setattr(registry, '_ASSETS', str(tmp_path))
  with pytest.raises(IOError, match='the installed package is damaged'):
    registry.resolve('fashion_mnist_synth')


def test_unusable_cache_folder_names_the_variable(tmp_path, monkeypatch):
  blocker = tmp_path / 'a_file'
  blocker.write_text('')
  monkeypatch.setenv('HATEBM_CACHE_DIR', str(blocker))
  entries = {'remote': _entry('http://127.0.0.1:9/m.hatebm', b'')}
  with pytest.raises(
      IOError, match=r'Cannot create the model cache .*HATEBM_CACHE_DIR'
  ):
    registry.resolve('remote', entries)


def test_a_misspelt_name_suggests_the_registered_one(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  with pytest.raises(
      FileNotFoundError,
      match="did you mean the registered model 'fashion_mnist_synth'",
  ):
    hatebm_jax.load_pretrained('fashion_mnist_synt')
  with pytest.raises(
      FileNotFoundError,
      match="did you mean the registered model 'fashion_mnist_synth'",
  ):
    storage.read_bytes('fashion_mnist_synht.hatebm')
