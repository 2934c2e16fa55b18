"""Where exported models live: local paths, gs:// and http(s):// URLs.

Reading and writing the bytes of an exported model (`file_format`), and the
path rules of the commands: what names an exported model rather than a
training workdir, and where `sample` and `evaluate` write their outputs.
"""

import contextlib
import os
from typing import Iterator
import urllib.parse
import urllib.request
import uuid

from etils import epath

from hatebm_jax.serving import registry

SUFFIX = '.hatebm'
URL_SCHEMES = ('http://', 'https://')
# The package folder: models shipped inside it write their outputs to the
# current folder, never into site-packages.
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def local(path: str) -> str:
  """`path` with a file:// prefix removed."""
  return path[len('file://') :] if path.startswith('file://') else path


def is_exported(path: str) -> bool:
  """Whether `path` names an exported model rather than a workdir: a
  registered model name (`registry`), an http(s) URL, a name ending in
  `.hatebm`, or an existing file."""
  path = local(str(path))
  if registry.is_registered(path):
    return True
  if path.startswith(URL_SCHEMES) or path.endswith(SUFFIX):
    return True
  try:
    return epath.Path(path).is_file()
  except Exception:  # pylint: disable=broad-except  (unreachable gs://)
    return False


def read_bytes(path: str) -> bytes:
  """The bytes of an exported model: a registered name (downloaded once and
  checked against its SHA-256, `registry.resolve`), a local path, gs:// or
  http(s):// (read as it is, unchecked).

  Raises:
    ValueError: for an empty path, or a folder (a training workdir says
      how to export it).
    FileNotFoundError: nothing at `path`, or a URL that cannot be read.
    IOError: a registered model whose file or download fails its check.
  """
  path = local(path)
  if registry.is_registered(path):
    path = registry.resolve(path)
  if not path:
    raise ValueError(
        'The model path is empty: give a .hatebm file, an '
        'https:// URL or a gs:// path.'
    )
  if path.startswith(URL_SCHEMES):
    try:
      with urllib.request.urlopen(path, timeout=60) as response:
        return response.read()
    except OSError as e:
      raise FileNotFoundError(f'Cannot download the model {path}: {e}') from e
  target = epath.Path(path)
  if target.is_dir():
    workdir, kind = path, 'a folder'
    if (target / 'checkpoints').exists():
      kind = 'a training workdir'
    elif target.name == 'checkpoints':
      workdir, kind = str(target.parent), 'a checkpoints folder'
    raise ValueError(
        f'{path} is {kind}, not an exported model. Export one with '
        f'python -m hatebm_jax.export --workdir={workdir} '
        f'--output=model{SUFFIX} (the sample and evaluate entry points also '
        'take a workdir).'
    )
  if not target.exists():
    raise FileNotFoundError(
        f'No exported model at {path}{registry.did_you_mean(path)}. Export '
        'one from a training run with python -m hatebm_jax.export '
        f'--workdir=<run> --output={path}, or give a registered name '
        f'({", ".join(sorted(registry.MODELS))}).'
    )
  return target.read_bytes()


def checked_output(output: str) -> epath.Path:
  """The path `export` and `convert` may write to (local or gs://).

  Raises:
    ValueError: `output` is empty, a URL or an existing folder.
  """
  if not output:
    raise ValueError(
        '--output is empty: give the file to write, e.g. '
        f'/tmp/model{SUFFIX} or gs://BUCKET/model{SUFFIX}.'
    )
  if str(output).startswith(URL_SCHEMES):
    raise ValueError(
        f'--output={output!r}: models are written to a local path or '
        'gs://; upload the file to a web server yourself.'
    )
  target = epath.Path(output)
  if target.is_dir():
    raise ValueError(
        f'--output={output!r} is a folder: give a file name, '
        f'e.g. {output.rstrip("/")}/model{SUFFIX}.'
    )
  return target


def write_atomically(target: epath.Path, data: bytes, output: str) -> None:
  """Writes `data` to a temporary name beside `target`, then renames it
  over any existing file, so a reader never sees half a file.

  Raises:
    ValueError: when a part of the target's folder is a file (`output`
      names the flag value in the message).
  """
  try:
    target.parent.mkdir(parents=True, exist_ok=True)
  except (FileExistsError, NotADirectoryError) as e:
    raise ValueError(
        f'--output={output!r}: a part of {target.parent} is a '
        'file, not a folder.'
    ) from e
  # A name of its own: concurrent writers of one target never share it.
  temporary = target.parent / f'.{target.name}.{uuid.uuid4().hex[:12]}.tmp'
  try:
    temporary.write_bytes(data)
    temporary.replace(target)  # an existing file is overwritten
  except OSError as e:
    raise OSError(
        f'Cannot write {target} ({type(e).__name__}: {e.strerror or e}); '
        'nothing was written there.'
    ) from e
  finally:
    if temporary.exists():
      temporary.unlink()


@contextlib.contextmanager
def staged(folder: epath.Path) -> Iterator[epath.Path]:
  """A fresh temporary folder beside `folder` to write outputs into; when
  the block ends, its files are moved into `folder` (created, files of the
  same names replaced); on failure `folder` is left as it was. On gs://,
  where an object is written whole or not at all and folders are only
  name prefixes, the outputs go to `folder` directly.

  Raises:
    OSError: naming `folder`, when writing or moving fails (a full or
      read-only disk).
  """
  folder = epath.Path(folder)
  if '://' in str(folder):
    try:
      folder.mkdir(parents=True, exist_ok=True)
      yield folder
    except OSError as e:
      raise OSError(
          f'Writing to {folder} failed ({type(e).__name__}: {e.strerror or e}).'
      ) from e
    return
  staging = folder.parent / f'.{folder.name}.{uuid.uuid4().hex[:12]}.tmp'
  try:
    staging.mkdir(parents=True)
    yield staging
    folder.mkdir(parents=True, exist_ok=True)
    for path in staging.iterdir():
      path.replace(folder / path.name)
  except OSError as e:
    raise OSError(
        f'Writing to {folder} failed ({type(e).__name__}: '
        f'{e.strerror or e}); nothing was left there.'
    ) from e
  finally:
    if staging.exists():
      staging.rmtree()


def eval_folder(source: str, step: int) -> epath.Path:
  """Default output folder of sampling and evaluation.

  `<workdir>/eval/step_<step>` for a training run; `<name>_eval/step_<step>`
  beside an exported `<name>.hatebm`, or in the current folder for a URL
  and for the models shipped inside the package.
  """
  source = str(source)
  if not is_exported(source):
    return epath.Path(source) / 'eval' / f'step_{step}'
  if source.startswith(URL_SCHEMES):
    file_name, folder = urllib.parse.urlparse(source).path, epath.Path('.')
  else:
    file_name, folder = source, epath.Path(source).parent
    if not source.startswith('gs://') and os.path.abspath(source).startswith(
        _PACKAGE + os.sep
    ):
      folder = epath.Path('.')
  name = file_name.rstrip('/').rsplit('/', 1)[-1].removesuffix(SUFFIX)
  return folder / f'{name or "model"}_eval' / f'step_{step}'
