"""Shared pieces of the benchmark scripts: set-up, timing, FLOPs, memory.

Import this module before jax: it puts the checkout on sys.path and applies
the XLA:CPU setting of `hatebm_jax.main` (hatebm_jax/infra/xla_flags.py), so the
benchmarks measure what training runs.

FLOPs come from XLA's cost analysis of the compiled program
(`compiled.cost_analysis()['flops']`, 2 per multiply-add). XLA counts the
body of a while loop once, whatever its trip count: the scripts count
programs without loops (fully unrolled) or multiply a step's count. Peak
memory comes from XLA's buffer assignment
(`compiled.memory_analysis()`) for the backend it runs on (another
compiler fuses, and so allocates, differently), and on GPU/TPU also from
the allocator's high-water mark.
"""

import json
import os
import platform
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
from hatebm_jax.infra import xla_flags  # pylint: disable=g-import-not-at-top

xla_flags.apply()
from hatebm_jax.infra import runtime  # pylint: disable=g-import-not-at-top

runtime.load_libraries_quietly()  # without the CUDA stub's start-up notices
import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from hatebm_jax import config_base  # pylint: disable=g-import-not-at-top
from hatebm_jax import validation

GIB = 2**30


def machine() -> dict:
  """What the numbers were measured on."""
  device = jax.devices()[0]
  return {
      'backend': jax.default_backend(),
      'device': device.device_kind,
      'devices': jax.device_count(),
      'cpu': platform.processor() or platform.machine(),
      'cpu_count': os.cpu_count(),
      'jax': jax.__version__,
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
  }


def describe(info: dict) -> str:
  """One line for the top of a table."""
  return (
      f"# {info['backend']}: {info['device']} x{info['devices']} "
      f"({info['cpu']}, {info['cpu_count']} CPUs), jax {info['jax']}, "
      f"XLA_FLAGS={info['xla_flags']!r}"
  )


def load_config(name: str, **overrides):
  """configs/<name>.py with `overrides` applied and validated.

  Raises:
    FileNotFoundError: no such config file.
    ValueError: an invalid value (`validation.validate`).
  """
  config = config_base.load_config_file(
      os.path.join(ROOT, 'configs', 'x'), name
  )
  with config.unlocked():
    for key, value in overrides.items():
      config[key] = value
  validation.validate(config)
  return config


def checked_config(parser, name: str, modes=None, **overrides):
  """`load_config`, turning a missing file, a mode not in `modes` or an
  invalid value into `parser.error` (a usage message, exit code 2)."""
  try:
    config = config_base.load_config_file(
        os.path.join(ROOT, 'configs', 'x'), name
    )
  except FileNotFoundError:
    known = sorted(
        f[:-3]
        for f in os.listdir(os.path.join(ROOT, 'configs'))
        if f.endswith('.py')
    )
    parser.error(f'config {name!r} does not exist; configs/ has {known}.')
  if modes and config.mode not in modes:
    parser.error(
        f'{name} is a {config.mode!r} config; this benchmark '
        f'takes {modes} configs.'
    )
  try:
    return load_config(name, **overrides)
  except ValueError as e:
    parser.error(f'{name}: {e}')


def parse_ints(parser, flag: str, text: str, minimum: int) -> list[int]:
  """Comma-separated integers >= minimum, or `parser.error`."""
  try:
    values = [int(t) for t in text.split(',')]
  except ValueError:
    parser.error(f'--{flag}={text!r}: give comma-separated integers.')
  if any(v < minimum for v in values):
    parser.error(f'--{flag}={text!r}: every value must be >= {minimum}.')
  return values


def json_path(name: str) -> str:
  """The default JSON output: benchmarks/<name> in this checkout."""
  return os.path.join(ROOT, 'benchmarks', name)


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
  return {
      'arguments_gib': args / GIB,
      'outputs_gib': outs / GIB,
      'aliased_gib': alias / GIB,
      'temporaries_gib': temp / GIB,
      'peak_gib': (args + outs - alias + temp) / GIB,
  }


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
    sizes = (
        (1024, 2048, 4096)
        if jax.default_backend() == 'cpu'
        else (4096, 8192, 16384)
    )
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
    best = max(best, (2 * n**3 / min(times) / 1e9, n))
  return {'gflops': best[0], 'size': best[1], 'dtype': jnp.dtype(dtype).name}


def print_header(header) -> None:
  """Prints the head of a Markdown table (rows follow with `print_row`)."""
  print_row(header)
  print_row(['---'] * len(header))


def print_row(cells) -> None:
  """Prints one Markdown table row."""
  print('| ' + ' | '.join(str(c) for c in cells) + ' |', flush=True)


def unroll_name(unroll) -> str:
  """'full' for a fully unrolled scan, else the unroll factor."""
  return 'full' if unroll is True else str(unroll)


def write_json(path: str, payload: dict, quiet: bool = False) -> None:
  """Writes the results (and the machine) as JSON, creating the folder.

  The scripts call it after every row, so an interrupted run keeps what it
  measured.
  """
  if not path:
    return
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  with open(path + '.tmp', 'w') as f:
    json.dump(payload, f, indent=1)
  os.replace(path + '.tmp', path)
  if not quiet:
    print(f'# wrote {path}', flush=True)
