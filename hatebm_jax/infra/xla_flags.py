"""XLA settings applied before JAX starts (import this before jax).

On XLA:CPU (jax 0.10.2) the networks run 1.2x (forward passes) to 2x (hat
network update) faster with YNNPACK fusions turned off; no other XLA:CPU
setting tried helped (`python benchmarks/xla_cpu_flags.py`,
docs/performance.md). Other backends ignore the flag. Set
HATEBM_XLA_DEFAULTS=0 (or false/no/off) to run with $XLA_FLAGS exactly as
given.
"""

import os

CPU_FLAG = '--xla_cpu_experimental_ynn_fusion_type='


def apply() -> None:
  """Adds the XLA:CPU flag to $XLA_FLAGS unless it is already there (or
  $HATEBM_XLA_DEFAULTS is '0')."""
  if os.environ.get('HATEBM_XLA_DEFAULTS', '1').lower() in (
      '0',
      'false',
      'no',
      'off',
  ):
    return
  flags = os.environ.get('XLA_FLAGS', '')
  if CPU_FLAG not in flags:
    os.environ['XLA_FLAGS'] = f'{flags} {CPU_FLAG}'.strip()
