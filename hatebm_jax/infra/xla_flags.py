"""XLA settings applied before JAX starts its backends.

On XLA:CPU (jax 0.10.2) the networks run 1.2x (forward passes) to 2x (hat
network update) faster with YNNPACK fusions turned off; no other XLA:CPU
setting tried helped (`python benchmarks/xla_cpu_flags.py`,
docs/performance.md). The flag also changes how float32 sums are rounded,
so samples drawn with and without it differ by round-off (up to 2 uint8
levels in 0.2% of pixels for the shipped model). Other backends ignore it.

`import hatebm_jax` applies it (`apply`), and so does every command-line
entry point, as long as JAX has not yet started its backends (its first
computation or device query): XLA reads $XLA_FLAGS once, then. A program
that ran JAX before importing hatebm_jax keeps its own settings, and
`hatebm_jax.load_pretrained` warns that its samples may then differ by
round-off from those of `python -m hatebm_jax.sample` (`in_effect`). Set
HATEBM_XLA_DEFAULTS=0 (or false/no/off) to run with $XLA_FLAGS exactly as
given.
"""

import os
import sys

CPU_FLAG = '--xla_cpu_experimental_ynn_fusion_type='
_state = {'late': False}  # applied after JAX had started its backends


def _disabled() -> bool:
  return os.environ.get('HATEBM_XLA_DEFAULTS', '1').lower() in (
      '0',
      'false',
      'no',
      'off',
  )


def _backends_started() -> bool:
  jax = sys.modules.get('jax')
  if jax is None:
    return False
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top

  started = getattr(xla_bridge, 'backends_are_initialized', None)
  return bool(started and started())


def apply() -> None:
  """Adds the XLA:CPU flag to $XLA_FLAGS unless it is already there (or
  $HATEBM_XLA_DEFAULTS is '0'); notes when JAX's backends had already
  started, so that the flag cannot take effect (`in_effect`)."""
  if _disabled():
    return
  flags = os.environ.get('XLA_FLAGS', '')
  if CPU_FLAG not in flags:
    _state['late'] = _backends_started()
    os.environ['XLA_FLAGS'] = f'{flags} {CPU_FLAG}'.strip()


def in_effect() -> bool:
  """False when `apply` came after JAX had started its backends without
  the flag: this process then computes with other XLA:CPU settings than
  the command-line entry points (True when the defaults are turned off on
  purpose)."""
  return not _state['late']
