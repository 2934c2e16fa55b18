"""Pretrained models by name: a registry of exported models and their
SHA-256, downloaded once into a cache and checked.

  model = hatebm_jax.load_pretrained('fashion_mnist_synth')
  python -m hatebm_jax.sample --workdir=fashion_mnist_synth
  python -m hatebm_jax.evaluate --workdir=fashion_mnist_synth_long

A name resolves to a local `.hatebm` file:
* a model shipped inside the package (`bundled`) is read from there;
* a released one (`url`) is downloaded with pooch into
  `$HATEBM_CACHE_DIR/models` (default ~/.cache/hatebm_jax/models): streamed
  to a temporary file beside the target, its SHA-256 checked, then renamed
  into place, so the cache never holds a partial or corrupt file; a failed
  attempt is retried (`RETRIES`), then reported as one clear error. The next
  call finds the checked file and reads nothing from the network.

Every file, bundled or downloaded, is checked against its SHA-256 before it
is used. An existing path of the same name wins over a registry name.
"""

import dataclasses
import difflib
import hashlib
import os
from typing import Optional

from etils import epath

from hatebm_jax.infra import cache

RETRIES = 2  # extra download attempts after a failed one
_ASSETS = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'assets')


@dataclasses.dataclass(frozen=True)
class Entry:
  """One registered model.

  Attributes:
    sha256: hex SHA-256 of the `.hatebm` file.
    description: what it is, for `names()` and error messages.
    bundled: file name under hatebm_jax/assets when shipped in the package.
    url: where a released model is downloaded from (http(s)://).
  """

  sha256: str
  description: str
  bundled: Optional[str] = None
  url: Optional[str] = None


MODELS: dict[str, Entry] = {
    'fashion_mnist_synth': Entry(
        sha256=(
            'fda69c496770bcbd257b287f731631298e26c2f30bca60f1199d23d6837cfeb5'
        ),
        description=(
            'the CPU quick start (configs/fashion_mnist_synth.py), 8,800 '
            'iterations on Fashion-MNIST, shipped in the package'
        ),
        bundled='fashion_mnist_synth.hatebm',
    ),
    'fashion_mnist_synth_long': Entry(
        sha256=(
            'b4e665b1c228014f908ade98b291a11e7ec708c7c36ed2a23994645acb29bdb4'
        ),
        description=(
            'the one-hour CPU model (configs/fashion_mnist_synth_long.py, '
            'seed 0), 6,000 iterations at ngf 64 and batch 16 on '
            'Fashion-MNIST, shipped in the package'
        ),
        bundled='fashion_mnist_synth_long.hatebm',
    ),
}


def names() -> dict[str, str]:
  """Registered model names -> descriptions."""
  return {name: entry.description for name, entry in MODELS.items()}


def is_registered(name: str) -> bool:
  """Whether `name` is a registry name (and not an existing path)."""
  return name in MODELS and not os.path.exists(name)


def did_you_mean(name: str) -> str:
  """' (did you mean the registered model 'x'?)' for a path that is close
  to a registered name and does not exist; '' otherwise."""
  if os.path.exists(name) or '/' in name.strip('/'):
    return ''
  close = difflib.get_close_matches(name, list(MODELS), n=1, cutoff=0.8)
  return f' (did you mean the registered model {close[0]!r}?)' if close else ''


def sha256_of(path: str) -> str:
  """Hex SHA-256 of a local file, read in 1 MiB pieces."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def models_dir() -> epath.Path:
  """Where downloaded models are kept: $HATEBM_CACHE_DIR/models."""
  return cache.cache_dir() / 'models'


def resolve(name: str, registry: Optional[dict[str, Entry]] = None) -> str:
  """The local path of registered model `name`, downloaded and checked.

  Args:
    name: a key of `registry`.
    registry: the entries to look in; `MODELS` when None.

  Returns:
    The path of a `.hatebm` file whose SHA-256 is the registered one.

  Raises:
    KeyError: for an unknown name, listing the known ones.
    IOError: when the bundled file or a download does not have the
      registered SHA-256 (the downloaded file is removed), or the download
      fails after `RETRIES` retries; the message names the URL, the
      expected hash and the cache folder.
  """
  registry = MODELS if registry is None else registry
  if name not in registry:
    raise KeyError(
        f'{name!r} is not a registered model; known names: '
        f'{sorted(registry)} (or give a .hatebm path, gs:// or https:// URL).'
    )
  entry = registry[name]
  if entry.bundled:
    path = os.path.join(_ASSETS, entry.bundled)
    found = sha256_of(path)
    if found != entry.sha256:
      raise IOError(
          f'The bundled model {path} has SHA-256 {found}, not the registered '
          f'{entry.sha256}: the installed package is damaged; reinstall it.'
      )
    return path
  return _download(name, entry)


def _download(name: str, entry: Entry) -> str:
  import pooch  # pylint: disable=g-import-not-at-top

  folder = models_dir()
  try:
    folder.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise IOError(
        f'Cannot create the model cache {folder} for {name!r} '
        f'({type(e).__name__}: {e}): point $HATEBM_CACHE_DIR (now '
        f'{os.environ.get("HATEBM_CACHE_DIR", "unset")!r}) at a writable '
        'local folder.'
    ) from e
  file_name = f'{name}.hatebm'
  fetcher = pooch.create(
      path=str(folder),
      base_url='',
      registry={file_name: f'sha256:{entry.sha256}'},
      urls={file_name: entry.url},
      retry_if_failed=RETRIES,
      allow_updates=False,
  )
  try:
    path = fetcher.fetch(file_name, progressbar=False)
  except Exception as e:  # pylint: disable=broad-except
    # pooch streams into a temporary file and renames it only after the
    # hash matched; a target left by anything else is removed as well.
    target = folder / file_name
    if target.exists() and sha256_of(str(target)) != entry.sha256:
      target.unlink()
    message = str(e)
    if isinstance(e, ValueError) and 'hash' in message.lower():
      got = message.split('got ')[-1].split(',')[0].split('.')[0].strip()
      cause = (
          f'what it serves has SHA-256 {got}, not the registered '
          f'{entry.sha256} (in {RETRIES + 1} attempts): the file there is '
          'not the registered one, or it is damaged on the way'
      )
    else:
      cause = (
          f'{type(e).__name__}: {message.splitlines()[0]}; expected SHA-256 '
          f'{entry.sha256}. Check the network and retry'
      )
    raise IOError(
        f'Could not fetch the model {name!r} from {entry.url}: {cause}. '
        f'Nothing was kept in {folder}. Download the file yourself and pass '
        'its path if the problem persists.'
    ) from e
  # pooch's temporary file is private (0600); the cache may be shared.
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(path, 0o666 & ~umask)
  return path
