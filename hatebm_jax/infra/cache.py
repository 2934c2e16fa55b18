"""The cache folder of converted weights, reference features and downloaded
models: $HATEBM_CACHE_DIR, default ~/.cache/hatebm_jax."""

import os

from etils import epath


def cache_dir() -> epath.Path:
  """$HATEBM_CACHE_DIR (local or gs://), default ~/.cache/hatebm_jax."""
  return epath.Path(
      os.environ.get(
          'HATEBM_CACHE_DIR', os.path.expanduser('~/.cache/hatebm_jax')
      )
  )
