"""Shared pieces of the benchmark scripts: set-up, timing, FLOPs, memory.

Import this module before jax: it puts the checkout on sys.path and applies
the XLA:CPU setting of `hatebm_jax.main` (hatebm_jax/xla_flags.py), so the
benchmarks measure what training runs.

FLOPs come from XLA's cost analysis of the compiled program
(`compiled.cost_analysis()['flops']`, 2 per multiply-add). XLA counts the
body of a while loop once, whatever its trip count: `loop_flops` corrects
for that. Peak memory comes from XLA's buffer assignment
(`compiled.memory_analysis()`), which is what the program needs on any
backend, and on GPU/TPU also from the allocator's high-water mark.
"""

import json
import os
import platform
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
from hatebm_jax import xla_flags  # pylint: disable=g-import-not-at-top

xla_flags.apply()

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from hatebm_jax import config_base  # pylint: disable=g-import-not-at-top

GIB = 2 ** 30


def machine() -> dict:
  """What the numbers were measured on."""
  device = jax.devices()[0]
  return {'backend': jax.default_backend(), 'device': device.device_kind,
          'devices': jax.device_count(), 'cpu': platform.processor() or
          platform.machine(), 'cpu_count': os.cpu_count(),
          'jax': jax.__version__, 'xla_flags': os.environ.get('XLA_FLAGS', '')}


def describe(info: dict) -> str:
  """One line for the top of a table."""
  return (f"# {info['backend']}: {info['device']} x{info['devices']} "
          f"({info['cpu']}, {info['cpu_count']} CPUs), jax {info['jax']}, "
          f"XLA_FLAGS={info['xla_flags']!r}")


def load_config(name: str, **overrides):
  """configs/<name>.py with `overrides` applied and validated."""
  config = config_base.load_config_file(os.path.join(ROOT, 'configs', 'x'),
                                        name)
  with config.unlocked():
    for key, value in overrides.items():
      config[key] = value
  config_base.validate(config)
  return config


def time_call(fn, repeats: int) -> tuple[float, float]:
  """(seconds of the first call, median seconds of `repeats` more calls).

  `fn()` returns device arrays; each call is waited for. The first call is
  the warm-up (it compiles, unless `fn` was compiled before); with
  repeats=0 its time is also the second number.
  """
  start = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return first, float(np.median(times)) if times else first


def flops(compiled) -> float:
  """FLOPs of one call of a compiled program (loop bodies counted once)."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older jax: one dict per device
    analysis = analysis[0]
  return float(analysis.get('flops', 0.0))


def loop_flops(outside: float, body: float, trips: int) -> float:
  """FLOPs of a program with one while loop, corrected for XLA's count.

  Args:
    outside: cost analysis of the program (the body counted once in it).
    body: cost analysis of one trip of the loop body, compiled alone.
    trips: the loop's trip count (K / unroll for a rolled Langevin scan).

  Returns:
    outside + (trips - 1) * body.
  """
  return outside + (trips - 1) * body


def memory(compiled) -> dict:
  """XLA's buffer assignment of a compiled program, in GiB.

  'peak' = arguments + outputs - aliased (donated) + temporaries: what the
  program holds at its high point, generated code excluded.
  """
  m = compiled.memory_analysis()
  if m is None:
    return {}
  args, outs = m.argument_size_in_bytes, m.output_size_in_bytes
  alias, temp = m.alias_size_in_bytes, m.temp_size_in_bytes
  return {'arguments_gib': args / GIB, 'outputs_gib': outs / GIB,
          'aliased_gib': alias / GIB, 'temporaries_gib': temp / GIB,
          'peak_gib': (args + outs - alias + temp) / GIB}


def device_peak_gib() -> float | None:
  """The allocator's high-water mark on the first device (GPU/TPU), GiB."""
  stats = jax.devices()[0].memory_stats()
  if not stats or 'peak_bytes_in_use' not in stats:
    return None
  return stats['peak_bytes_in_use'] / GIB


def matmul_peak(dtype=jnp.float32, sizes=None, repeats: int = 5) -> dict:
  """The best `jnp.dot` throughput of square matrices on this device.

  Args:
    dtype: operand dtype (the default precision of the backend is used,
      as in the networks).
    sizes: matrix sides tried; the best is reported.
    repeats: timed calls per size (the minimum counts).

  Returns:
    {'gflops': best GFLOP/s, 'size': its matrix side, 'dtype': name}.
  """
  if sizes is None:
    sizes = (1024, 2048, 4096) if jax.default_backend() == 'cpu' else (
        4096, 8192, 16384)
  best = (0.0, 0)
  dot = jax.jit(jnp.dot)
  for n in sizes:
    a = jax.random.normal(jax.random.PRNGKey(n), (n, n)).astype(dtype)
    jax.block_until_ready(dot(a, a))
    times = []
    for _ in range(repeats):
      start = time.perf_counter()
      jax.block_until_ready(dot(a, a))
      times.append(time.perf_counter() - start)
    best = max(best, (2 * n ** 3 / min(times) / 1e9, n))
  return {'gflops': best[0], 'size': best[1], 'dtype': jnp.dtype(dtype).name}


def table(header, rows) -> str:
  """A Markdown table."""
  lines = [' | '.join(header), ' | '.join('---' for _ in header)]
  lines += [' | '.join(str(c) for c in row) for row in rows]
  return '\n'.join(lines)


def write_json(path: str, payload: dict) -> None:
  """Writes the results (and the machine) as JSON; prints where."""
  if not path:
    return
  with open(path, 'w') as f:
    json.dump(payload, f, indent=1)
  print(f'# wrote {path}', flush=True)
