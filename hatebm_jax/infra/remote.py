"""Fail fast when a gs:// path's storage service cannot be reached.

TensorFlow's GCS client (what `etils.epath` uses for gs:// when TensorFlow
is installed) retries an unreachable host for about 10 s and then raises a
multi-line `FailedPreconditionError`; gcsfs retries for longer. Before a
command touches a gs:// path, `check_reachable` opens one TCP connection to
the storage endpoint, bounded in time, and raises one clear error naming
the host when it does not answer. The endpoint is
`storage.googleapis.com:443`, or the host of `$STORAGE_EMULATOR_HOST`
where that is set (a local GCS emulator, as in the tests).
"""

import concurrent.futures
import os
import socket
import urllib.parse
from typing import Optional

GCS_HOST = ('storage.googleapis.com', 443)
TIMEOUT_S = 10.0  # name lookup and connection together


def gcs_endpoint() -> tuple[str, int]:
  """(host, port) that gs:// requests go to: $STORAGE_EMULATOR_HOST
  (e.g. 'http://localhost:9023') where set, else Google's."""
  emulator = os.environ.get('STORAGE_EMULATOR_HOST')
  if not emulator:
    return GCS_HOST
  url = urllib.parse.urlparse(
      emulator if '://' in emulator else f'http://{emulator}'
  )
  default = 443 if url.scheme == 'https' else 80
  return url.hostname or 'localhost', url.port or default


def _connect(host: str, port: int, timeout: float) -> None:
  socket.create_connection((host, port), timeout=timeout).close()


def check_reachable(*paths: Optional[str], timeout: float = TIMEOUT_S):
  """Checks that the storage service of every gs:// path among `paths`
  answers (other paths and None are ignored).

  Args:
    *paths: paths given by the user (workdirs, data_dir, outputs).
    timeout: seconds for the name lookup and the TCP connection together.

  Raises:
    ConnectionError: naming the path and the host, within `timeout`
      seconds, when the host cannot be resolved or does not accept a
      connection.
  """
  remote = [p for p in paths if p and str(p).startswith('gs://')]
  if not remote:
    return
  host, port = gcs_endpoint()
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
        f'({reason}). Check that this host has network access to it (Cloud '
        'TPU and GCE VMs have; elsewhere it needs the internet) and '
        'credentials (gcloud auth application-default login, or '
        '$GOOGLE_APPLICATION_CREDENTIALS).'
    ) from None
  finally:
    pool.shutdown(wait=False)
