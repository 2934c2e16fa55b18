"""Fail fast when a gs:// path's storage service cannot be reached.

TensorFlow's GCS client (what `etils.epath` uses for gs:// files when
TensorFlow is installed) retries an unreachable host for about 10 s and
then raises a multi-line `FailedPreconditionError`; gcsfs retries for
longer. Before a command touches a gs:// path, `check_reachable` opens one
TCP connection to each storage endpoint the command will use, bounded in
time, and raises one clear error naming the host when it does not answer:

- files (configs, events, exported models) through `etils.epath`:
  TensorFlow's client talks to `www.googleapis.com:443` whatever
  $STORAGE_EMULATOR_HOST says; with `EPATH_USE_TF=false` (or without
  TensorFlow) gcsfs talks to $STORAGE_EMULATOR_HOST where set, else
  `storage.googleapis.com:443`;
- checkpoint arrays through TensorStore: $TENSORSTORE_GCS_HTTP_URL where
  set, else `storage.googleapis.com:443`.
"""

import concurrent.futures
import importlib.util
import os
import socket
import urllib.parse
from typing import Optional

GCS_HOST = ('storage.googleapis.com', 443)
TF_GCS_HOST = ('www.googleapis.com', 443)
TIMEOUT_S = 10.0  # name lookup and connection together


def _host_port(url: str) -> tuple[str, int]:
  parsed = urllib.parse.urlparse(url if '://' in url else f'http://{url}')
  default = 443 if parsed.scheme == 'https' else 80
  return parsed.hostname or 'localhost', parsed.port or default


def _epath_uses_tensorflow() -> bool:
  """What `etils.epath` decides: TensorFlow's gfile for gs:// unless
  $EPATH_USE_TF is false-like or TensorFlow is not installed."""
  if os.environ.get('EPATH_USE_TF', '').lower() in ('false', 'no', 'f', '0'):
    return False
  return importlib.util.find_spec('tensorflow') is not None


def gcs_endpoints() -> dict[tuple[str, int], str]:
  """{(host, port): who talks to it} for gs:// paths in this environment."""
  if _epath_uses_tensorflow():
    files = TF_GCS_HOST, (
        "TensorFlow's GCS client, which ignores $STORAGE_EMULATOR_HOST "
        '(EPATH_USE_TF=false reads gs:// through gcsfs instead)'
    )
  elif os.environ.get('STORAGE_EMULATOR_HOST'):
    files = _host_port(os.environ['STORAGE_EMULATOR_HOST']), (
        'gcsfs, from $STORAGE_EMULATOR_HOST'
    )
  else:
    files = GCS_HOST, 'gcsfs'
  arrays = GCS_HOST, 'TensorStore (checkpoint arrays)'
  if os.environ.get('TENSORSTORE_GCS_HTTP_URL'):
    arrays = _host_port(os.environ['TENSORSTORE_GCS_HTTP_URL']), (
        'TensorStore, from $TENSORSTORE_GCS_HTTP_URL'
    )
  endpoints = {files[0]: files[1]}
  endpoints.setdefault(arrays[0], arrays[1])
  return endpoints


def _connect(host: str, port: int, timeout: float) -> None:
  socket.create_connection((host, port), timeout=timeout).close()


def check_reachable(*paths: Optional[str], timeout: float = TIMEOUT_S):
  """Checks that the storage endpoints of gs:// paths answer, when any of
  `paths` is a gs:// path (other paths and None are ignored).

  Args:
    *paths: paths given by the user (workdirs, data_dir, outputs).
    timeout: seconds for each endpoint's name lookup and TCP connection.

  Raises:
    ConnectionError: naming the path, the host and who uses it, within
      `timeout` seconds per endpoint, when a host cannot be resolved or
      does not accept a connection.
  """
  remote = [p for p in paths if p and str(p).startswith('gs://')]
  if not remote:
    return
  for (host, port), user in gcs_endpoints().items():
    # getaddrinfo has no timeout of its own: bound the whole check.
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
      pool.submit(_connect, host, port, timeout).result(timeout=timeout)
    except Exception as e:  # pylint: disable=broad-except
      reason = (
          f'no answer within {timeout:g} s'
          if isinstance(e, concurrent.futures.TimeoutError)
          else f'{type(e).__name__}: {e}'
      )
      raise ConnectionError(
          f'Cannot reach Google Cloud Storage for {remote[0]}: {host}:{port} '
          f'({reason}), used by {user}. Check that this host has network '
          'access to it (Cloud TPU and GCE VMs have; elsewhere it needs the '
          'internet) and credentials (gcloud auth application-default '
          'login, or $GOOGLE_APPLICATION_CREDENTIALS).'
      ) from None
    finally:
      pool.shutdown(wait=False)
