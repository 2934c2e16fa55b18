"""XLA settings applied before JAX starts (import this before jax).

XLA:CPU convolutions run ~1.3x faster without YNNPACK fusions (measured by
benchmarks/train_speed.py; shared/reference/platform_notes.md). Other
backends ignore the flag.
"""

import os

CPU_FLAG = '--xla_cpu_experimental_ynn_fusion_type='


def apply() -> None:
  """Adds the XLA:CPU flag to $XLA_FLAGS unless it is already there."""
  flags = os.environ.get('XLA_FLAGS', '')
  if CPU_FLAG not in flags:
    os.environ['XLA_FLAGS'] = f'{flags} {CPU_FLAG}'.strip()
