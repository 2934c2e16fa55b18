"""Process set-up shared by the command-line entry points.

Call `setup()` at the start of an absl `main`: it keeps the console readable
and TensorFlow (used only for data input and event files) off accelerators.
Wrap the `main` in `report_errors` so that errors a user can act on print
as one line.
"""

import contextlib
import functools
import importlib
import logging as std_logging
import os
import pkgutil
import sys
import tempfile
from typing import Callable, Iterator
import warnings

_QUIET_PACKAGES = ('/orbax/', '/jax/_src/', '/clu/metric_writers/async')


# Orbax logs a failed background save from several of its threads, each
# with a traceback (~130 lines for a full disk), and then raises it at the
# next save or wait, where `infra.checkpoint` reports it as one line.
_ORBAX = '/orbax/'


class _QuietLibraries:
  """Hides the INFO chatter of Orbax and JAX internals from the console,
  and Orbax's error logs of a failed save, which it also raises (reported
  as the command's error line; kept with HATEBM_TRACEBACK=1)."""

  def filter(self, record) -> bool:
    if record.levelno >= std_logging.ERROR and (
        _ORBAX in record.pathname or record.name == 'asyncio'
    ):
      # asyncio: "Task exception was never retrieved", Orbax's other reads
      # of the same failed restore.
      return _traceback_wanted()
    return record.levelno > std_logging.INFO or not any(
        p in record.pathname for p in _QUIET_PACKAGES
    )


def _traceback_wanted() -> bool:
  return os.environ.get('HATEBM_TRACEBACK', '0') not in ('', '0')


def _quiet_follow_ons(unraisable) -> None:
  """`sys.unraisablehook` that drops the follow-on messages of a failed
  Orbax restore: TensorStore's threads still finish their reads and call
  back into Orbax's asyncio loop, already closed ('RuntimeError: Event
  loop is closed'), and Orbax's unfinished read coroutines report their
  errors when collected (hundreds of tracebacks). The failure itself is
  the command's error line; HATEBM_TRACEBACK=1 shows them all."""
  if not _traceback_wanted():
    error = unraisable.exc_value
    if isinstance(error, RuntimeError) and str(error) == 'Event loop is closed':
      return
    frame = unraisable.exc_traceback
    while frame is not None:
      if _ORBAX in frame.tb_frame.f_code.co_filename:
        return
      frame = frame.tb_next
  sys.__unraisablehook__(unraisable)


def setup(tensorflow: bool = True) -> None:
  """Filters library INFO logs and the follow-on noise of failed
  TensorStore reads and writes; loads JAX and, with `tensorflow`, TensorFlow
  (hiding GPUs from it) without their start-up notices (`_START_UP_NOISE`).
  A command that never touches TensorFlow passes False and starts seconds
  sooner."""
  for handler in std_logging.getLogger().handlers:
    handler.addFilter(_QuietLibraries())
  sys.unraisablehook = _quiet_follow_ons
  if not _traceback_wanted():
    # Orbax's write coroutines left unawaited by a failed save (a full
    # disk), reported at exit after the command's error line.
    warnings.filterwarnings(
        'ignore',
        message='coroutine .* was never awaited',
        category=RuntimeWarning,
    )
  load_libraries_quietly(tensorflow)


def load_libraries_quietly(tensorflow: bool = True) -> None:
  """Imports JAX, its installed PJRT plugins (`jax_plugins.*`) and, with
  `tensorflow`, TensorFlow (keeping it off GPUs), without their start-up
  noise (`_START_UP_NOISE`): a command calls it before anything else imports
  them (`parse_flags` does for JAX, which configs import). It starts no JAX
  backend (`start_jax` does), so `jax.distributed.initialize` may still
  follow."""
  with _start_up_noise_dropped():
    importlib.import_module('jax')
    try:
      import jax_plugins  # pylint: disable=g-import-not-at-top
    except ImportError:
      jax_plugins = None
    for plugin in pkgutil.iter_modules(getattr(jax_plugins, '__path__', [])):
      try:
        importlib.import_module(f'jax_plugins.{plugin.name}')
      except ImportError:
        pass  # JAX reports a broken plugin itself when it starts.
    if not tensorflow:
      return
    try:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
    except ImportError:
      return
    tf.config.set_visible_devices([], 'GPU')


def start_jax() -> list[object]:
  """Starts JAX's backends and returns `jax.devices()`, without the
  start-up noise of NVIDIA's CUDA stub (`_START_UP_NOISE`); every other line
  is kept, e.g. JAX's 'falling back to CPU' or a plugin's failure. Call it
  after `jax.distributed.initialize` (which must come before any backend
  starts) and before other JAX work."""
  import jax  # pylint: disable=g-import-not-at-top

  with _start_up_noise_dropped():
    return jax.devices()


# Lines that TensorFlow and JAX's CUDA plugin write to file descriptor 2 as
# they load when NVIDIA's pip libraries are installed (the [aot] extra, a GPU
# host) but no NVIDIA driver is: a notice per library that no GPU will be
# used (before absl's logging is set up, past TF_CPP_MIN_LOG_LEVEL), and
# TensorFlow's notice of oneDNN. A machine without a GPU knows.
_START_UP_NOISE = (
    'WARNING: All log messages before absl::InitializeLog() is called',
    'cudart_stub.cc:',
    'oneDNN custom operations are on',
)


@contextlib.contextmanager
def _fd2_held() -> Iterator[list[bytes]]:
  """Holds back what is written to file descriptor 2 inside the block. The
  caller appends to the yielded list, before the block ends, the function
  that picks which of the held bytes are written back (all by default)."""
  sys.stderr.flush()
  saved = os.dup(2)
  keep = []
  with tempfile.TemporaryFile() as held:
    os.dup2(held.fileno(), 2)
    try:
      yield keep
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      held.seek(0)
      text = held.read()
      if keep and not _traceback_wanted():
        text = keep[-1](text)
      sys.stderr.buffer.write(text)
      sys.stderr.flush()


def _without_start_up_noise(text: bytes) -> bytes:
  return b''.join(
      line
      for line in text.splitlines(keepends=True)
      if not any(n.encode() in line for n in _START_UP_NOISE)
  )


@contextlib.contextmanager
def _start_up_noise_dropped() -> Iterator[None]:
  """Holds back file descriptor 2 inside the block, then writes back every
  line but `_START_UP_NOISE` (everything with HATEBM_TRACEBACK=1)."""
  with _fd2_held() as keep:
    keep.append(_without_start_up_noise)
    yield


@contextlib.contextmanager
def native_logs_hidden() -> Iterator[None]:
  """Holds back what is written to file descriptor 2 inside the block:
  libtpu's start-up warnings about the TPU it is not on, and the CUDA
  plugin's and TensorFlow's 'Could not find cuda drivers', which mean
  nothing to a command that only compiles (`hatebm_jax.aot`). Python's
  logging goes there too and is held back with them. Shown anyway when the
  block ends with an exception other than SystemExit (a command's error
  line, or a clean exit, needs nothing more), or with HATEBM_TRACEBACK=1."""
  with _fd2_held() as keep:
    try:
      yield
    except SystemExit:
      keep.append(lambda text: b'')
      raise
    else:
      keep.append(lambda text: b'')


# Errors a user can act on: invalid values (ValueError), missing, unreadable
# or misplaced files and URLs, full or read-only disks (OSError), a diverged
# run (FloatingPointError), a missing optional package (ImportError, whose
# message names the extra to install); and TensorFlow's file-system errors (gs:// paths
# through tf.io.gfile: a missing bucket, no credentials), see `_is_user_error`.
USER_ERRORS = (ValueError, OSError, FloatingPointError, ImportError)


def _is_user_error(error: BaseException) -> bool:
  if isinstance(error, USER_ERRORS):
    return True
  tf = sys.modules.get('tensorflow')
  errors = getattr(tf, 'errors', None)
  return errors is not None and isinstance(error, errors.OpError)


def one_line(error: BaseException) -> str:
  """'Error: <type>: <message>' with the message's lines joined."""
  message = getattr(error, 'message', None) or str(error)
  return f'Error: {type(error).__name__}: {" ".join(message.split())}'


def report_errors(
    main: Callable[[list[str]], None],
) -> Callable[[list[str]], None]:
  """An absl `main` that prints errors a user can act on (`USER_ERRORS`,
  TensorFlow's file-system errors) as one line, `Error: <type>: <message>`,
  on stderr and exits with status 1, without a traceback.

  Set HATEBM_TRACEBACK=1 to see the traceback too.
  """

  @functools.wraps(main)
  def wrapped(argv: list[str]) -> None:
    try:
      main(argv)
    except Exception as e:  # pylint: disable=broad-except
      if not _is_user_error(e) or _traceback_wanted():
        raise
      sys.exit(one_line(e))

  return wrapped


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing (`flags_parser` of `app.run`) with every error as
  one line, `FATAL Flags parsing error: ...`, naming the flag, and exit
  status 1: a mistyped or ill-typed flag or `--config.<key>` (absl prints
  two lines, ml_collections raises), a `--config=` file that does not
  exist, is not a Python file, or fails to load (its own exception)."""
  from absl import flags  # pylint: disable=g-import-not-at-top

  if any(a == '--config' or a.startswith('--config=') for a in argv[1:]):
    # Loading a config imports JAX (through the project's modules); a
    # command without one (export) parses its flags before JAX loads.
    load_libraries_quietly(tensorflow=False)

  def fail(message):
    sys.exit(f'FATAL Flags parsing error: {" ".join(str(message).split())}')

  for arg in argv[1:]:
    if arg.startswith('--config='):
      path = arg[len('--config=') :].split(':')[0]  # `file.py:arg` form
      if path and not os.path.isfile(path):
        fail(
            f"--config='{path}' is not a file; the experiment configs are "
            'in configs/, e.g. configs/fashion_mnist_synth.py.'
        )
      if path and not path.endswith('.py'):
        fail(
            f"--config='{path}' is not a Python config file: give a .py "
            'file with a get_config() function, e.g. '
            'configs/fashion_mnist_synth.py.'
        )
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except
    if _traceback_wanted():
      raise
    if isinstance(e, flags.Error):
      text = str(e)
      if 'Flag --config must have a value' in text:
        fail(
            '--config is required: an experiment config file, e.g. '
            '--config=configs/fashion_mnist_synth.py (all of them are in '
            'configs/).'
        )
      if 'Traceback (most recent call last)' in text:  # a config's own error
        text = text.split('Traceback (most recent call last)')[0] + (
            text.strip().splitlines()[-1]
        )
      fail(text)
    message = e  # ml_collections wraps a KeyError in an AttributeError
    while isinstance(message, (AttributeError, KeyError)) and message.args:
      message = message.args[0]
    if isinstance(e, AttributeError) and "attribute 'get_config'" in str(
        message
    ):
      fail(
          'the --config file has no get_config() function: give an '
          'experiment config, e.g. --config=configs/fashion_mnist_synth.py.'
      )
    if isinstance(e, (AttributeError, KeyError)):
      key, _, rest = ' '.join(str(message).split()).partition(' ')
      fail(f'--config.{key.strip(chr(39))}: the config has no such key. {rest}')
    if isinstance(e, (TypeError, ValueError)):
      fail(message)
    # The config file itself raised while loading (SyntaxError, NameError..).
    fail(f'the --config file failed to load: {type(e).__name__}: {message}')


def no_arguments(argv: list[str]) -> None:
  """Refuses positional arguments (absl's `argv` beyond the program).

  Raises:
    ValueError: naming them.
  """
  if len(argv) > 1:
    raise ValueError(
        f'Unexpected arguments {argv[1:]}: every option is a flag, '
        '--name=value (--helpshort lists them).'
    )
