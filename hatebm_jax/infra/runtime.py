"""Process set-up shared by the command-line entry points.

Call `setup()` at the start of an absl `main`: it keeps the console readable
and TensorFlow (used only for data input and event files) off accelerators.
Wrap the `main` in `report_errors` so that errors a user can act on print
as one line.
"""

import functools
import logging as std_logging
import os
import sys
from typing import Callable

_QUIET_PACKAGES = ('/orbax/', '/jax/_src/', '/clu/metric_writers/async')


class _QuietLibraries:
  """Hides the INFO chatter of Orbax and JAX internals from the console."""

  def filter(self, record) -> bool:
    return record.levelno > std_logging.INFO or not any(
        p in record.pathname for p in _QUIET_PACKAGES
    )


def setup() -> None:
  """Filters library INFO logs; hides GPUs from TensorFlow if it is there."""
  for handler in std_logging.getLogger().handlers:
    handler.addFilter(_QuietLibraries())
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    tf.config.set_visible_devices([], 'GPU')
  except ImportError:
    pass


# Errors a user can act on: invalid values (ValueError), missing, unreadable
# or misplaced files and URLs (OSError), a diverged run (FloatingPointError).
USER_ERRORS = (ValueError, OSError, FloatingPointError)


def report_errors(
    main: Callable[[list[str]], None],
) -> Callable[[list[str]], None]:
  """An absl `main` that prints `USER_ERRORS` as one line, `Error: <type>:
  <message>`, on stderr and exits with status 1, without a traceback.

  Set HATEBM_TRACEBACK=1 to see the traceback too.
  """

  @functools.wraps(main)
  def wrapped(argv: list[str]) -> None:
    try:
      main(argv)
    except USER_ERRORS as e:
      if os.environ.get('HATEBM_TRACEBACK', '0') not in ('', '0'):
        raise
      sys.exit(f'Error: {type(e).__name__}: {e}')

  return wrapped


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing (`flags_parser` of `app.run`) that also reports
  errors of config overrides (`--config.mcmc_stepz=3`: ml_collections
  raises them while parsing) as one line, and exits with status 1. A
  `--config=` file that does not exist is named as such before parsing:
  ml_collections would report it as a multi-line OSError, or, with an
  override after it, a traceback."""
  from absl import app  # pylint: disable=g-import-not-at-top

  for arg in argv[1:]:
    if arg.startswith('--config='):
      path = arg[len('--config=') :].split(':')[0]  # `file.py:arg` form
      if path and not os.path.isfile(path):
        sys.exit(
            f"FATAL Flags parsing error: --config='{path}' is not a file; "
            'the experiment configs are in configs/, e.g. '
            'configs/fashion_mnist_synth.py.'
        )
  try:
    return app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    if os.environ.get('HATEBM_TRACEBACK', '0') not in ('', '0'):
      raise
    message = e  # ml_collections wraps a KeyError in an AttributeError
    while isinstance(message, (AttributeError, KeyError)) and message.args:
      message = message.args[0]
    sys.exit(f'FATAL Flags parsing error: {" ".join(str(message).split())}')
