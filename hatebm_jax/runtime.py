"""Process set-up shared by the command-line entry points.

Call `setup()` at the start of an absl `main`: it keeps the console readable
and TensorFlow (used only for data input and event files) off accelerators.
"""

import logging as std_logging

_QUIET_PACKAGES = ('/orbax/', '/jax/_src/', '/clu/metric_writers/async')


class _QuietLibraries:
  """Hides the INFO chatter of Orbax and JAX internals from the console."""

  def filter(self, record) -> bool:
    return record.levelno > std_logging.INFO or not any(
        p in record.pathname for p in _QUIET_PACKAGES)


def setup() -> None:
  """Filters library INFO logs; hides GPUs from TensorFlow if it is there."""
  for handler in std_logging.getLogger().handlers:
    handler.addFilter(_QuietLibraries())
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.config.set_visible_devices([], 'GPU')
  except ImportError:
    pass
