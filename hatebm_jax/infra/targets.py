"""Accelerator targets to compile for on a CPU-only machine.

A target names the hardware a user is about to rent, spelled as its vendor
spells it, and gives JAX devices that XLA's TPU or GPU compiler can compile
for without the hardware (`jax.experimental.topologies`):

- Cloud TPU accelerator types: `v3-8`, `v3-32`, `v4-8`, `v4-32`,
  `v5litepod-8` (also `v5e-8`), `v5litepod-16`, `v5p-8`, `v5p-32`, `v6e-8`,
  `v6e-16` and every other size Cloud TPU offers. The number counts
  TensorCores for v3, v4 and v5p (two per chip) and chips for v5e and v6e.
  JAX sees one device per TensorCore on v3 and one per chip elsewhere (v4 and
  v5p join a chip's two cores into one "megacore").
- GPU hosts: `8xH100`, `8xA100`, `8xH200`, and several hosts as
  `2x8xH100` (hosts × GPUs per host × model). XLA's GPU compiler reads a
  description of the device; ours are the files in
  `hatebm_jax/assets/gpu_targets/`, written from NVIDIA's specifications.
- `cpu`: `num_devices` fake CPU devices (XLA:CPU), as before.

The per-device memory and bf16 peak below are the vendors' published
figures (docs/accelerators.md lists them with their sources).

Compiling for a TPU needs libtpu, for a GPU the CUDA plugin and ptxas:
`pip install ".[aot]"`. `python -m hatebm_jax.aot` pins JAX to the CPU
platform before it starts, so that neither looks for hardware.
"""

import dataclasses
import importlib.resources
import math
import os
import re
from typing import Any, Optional

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class _TpuGeneration:
  """Facts of one Cloud TPU generation (docs/accelerators.md)."""

  topology: str  # the generation's name in libtpu topology strings
  counts_cores: bool  # the accelerator type's number counts TensorCores
  devices_per_chip: int  # JAX devices per chip
  memory_gib: float  # HBM per JAX device
  peak_tflops: float  # dense bf16 TFLOP/s per JAX device
  dims: int  # 2-D or 3-D torus of chips


_TPUS = {
    'v3': _TpuGeneration('v3', True, 2, 16.0, 61.5, 2),
    'v4': _TpuGeneration('v4', True, 1, 32.0, 275.0, 3),
    'v5litepod': _TpuGeneration('v5e', False, 1, 16.0, 197.0, 2),
    'v5p': _TpuGeneration('v5', True, 1, 95.0, 459.0, 3),
    'v6e': _TpuGeneration('v6e', False, 1, 32.0, 918.0, 2),
}
_TPU_ALIASES = {'v5e': 'v5litepod'}
# Chips per host: 2x2 on every multi-host slice; v5e and v6e slices of 1, 4
# or 8 chips are one host.
_HOST_CHIPS = (2, 2, 1)
_SINGLE_HOST_CHIPS = 8


@dataclasses.dataclass(frozen=True)
class _Gpu:
  """Facts of one GPU model (docs/accelerators.md)."""

  spec_file: str  # GpuTargetConfigProto text in assets/gpu_targets
  memory_gib: float
  peak_tflops: float  # dense bf16 TFLOP/s


_GPUS = {
    'H100': _Gpu('h100.txtpb', 80.0, 989.0),
    'H200': _Gpu('h200.txtpb', 141e9 / GIB, 989.0),
    'A100': _Gpu('a100.txtpb', 80.0, 312.0),
}
_MAX_GPUS_PER_HOST = 16
# JAX's GPU allocator takes this share of the memory unless
# XLA_PYTHON_CLIENT_MEM_FRACTION says otherwise (JAX's GPU memory docs).
JAX_GPU_MEMORY_FRACTION = 0.75


@dataclasses.dataclass(frozen=True)
class Target:
  """Hardware to compile for.

  Attributes:
    name: as given, e.g. 'v3-32', '8xH100', 'cpu'.
    platform: 'tpu', 'gpu' or 'cpu'.
    num_devices: JAX devices of the whole slice or cluster.
    num_hosts: machines (JAX processes) they belong to.
    num_chips: chips to pay for (TPU chip-hours; GPUs; 0 on CPU).
    memory_gib: memory per device, GiB (None on CPU: host memory).
    usable_gib: what a program may hold per device: the HBM on TPU (the
      compiler itself refuses a program that needs more), the share JAX's
      allocator takes on GPU (`gpu_memory_fraction`); None on CPU.
    peak_tflops: dense bf16 peak per device, TFLOP/s (None on CPU).
    topology: what `jax.experimental.topologies` is given: a libtpu
      topology such as 'v3:4x4', or 'slices x hosts x GPUs' on GPU.
    chips_per_host: libtpu's chips_per_host_bounds (TPU only).
    chip_config: libtpu's chip_config_name: 'megacore' where one JAX
      device drives a chip's two TensorCores (v4, v5p), else 'default'.
    gpu_spec: the GpuTargetConfigProto file (GPU only).
    gpu_memory_fraction: the allocator share `usable_gib` assumes (GPU).
  """

  name: str
  platform: str
  num_devices: int
  num_hosts: int
  num_chips: int
  memory_gib: Optional[float]
  usable_gib: Optional[float]
  peak_tflops: Optional[float]
  topology: str = ''
  chips_per_host: Optional[tuple[int, int, int]] = None
  chip_config: str = 'default'
  gpu_spec: str = ''
  gpu_memory_fraction: Optional[float] = None

  def devices(self) -> list[Any]:
    """The target's JAX devices, compile-only on TPU and GPU.

    Needs JAX started on the CPU platform (JAX_PLATFORMS=cpu) and, for TPU
    and GPU targets, the `[aot]` extra.

    Raises:
      ValueError: when there are fewer CPU devices than `num_devices`.
      ImportError: when libtpu or the CUDA plugin is missing (says how to
        install them).
    """
    import jax  # pylint: disable=g-import-not-at-top

    if self.platform == 'cpu':
      devices = jax.devices('cpu')
      if len(devices) < self.num_devices:
        raise ValueError(
            f'{self.num_devices} CPU devices asked for, JAX has '
            f'{len(devices)}: run python -m hatebm_jax.aot, which makes '
            'them (XLA_FLAGS=--xla_force_host_platform_device_count).'
        )
      return devices[: self.num_devices]
    from jax.experimental import topologies  # pylint: disable=g-import-not-at-top

    _check_installed(self.platform)
    # Several processes (test workers, two aot commands) may compile at once;
    # libtpu otherwise holds a lock file for one process.
    os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')
    if self.platform == 'tpu':
      found = topologies.get_topology_desc(
          platform='tpu',
          topology_name=self.topology,
          chips_per_host_bounds=self.chips_per_host,
          chip_config_name=self.chip_config,
      ).devices
    else:
      found = topologies.get_topology_desc(
          platform='cuda',
          target_config=read_gpu_spec(self.gpu_spec),
          topology=self.topology,
      ).devices
    if len(found) != self.num_devices:  # a libtpu that counts otherwise
      raise RuntimeError(
          f'{self.name}: the compiler made {len(found)} devices, '
          f'expected {self.num_devices}.'
      )
    return list(found)


def read_gpu_spec(file_name: str) -> str:
  """The text of one of the package's GPU descriptions."""
  folder = importlib.resources.files('hatebm_jax') / 'assets' / 'gpu_targets'
  return (folder / file_name).read_text()


def _check_installed(platform: str) -> None:
  """Raises ImportError naming the extra when a compiler is missing."""
  import importlib.util  # pylint: disable=g-import-not-at-top

  needed = {
      'tpu': ('libtpu', 'libtpu'),
      'gpu': ('jax_plugins.xla_cuda12', 'the CUDA 12 plugin of JAX'),
  }[platform]
  try:
    found = importlib.util.find_spec(needed[0]) is not None
  except ModuleNotFoundError:
    found = False
  if not found:
    raise ImportError(
        f'Compiling for a {platform.upper()} needs {needed[1]}: '
        'pip install -e ".[aot]" (or pip install "hatebm_jax[aot]").'
    )


# ---------------------------------------------------------------------------
# Parsing names.

EXAMPLES = (
    'v3-8, v3-32, v4-8, v4-32, v5litepod-8, v5litepod-16, v5p-8, v5p-32, '
    'v6e-8, v6e-16, 8xH100, 8xA100, 2x8xH100, cpu'
)


def parse(name: str, num_devices: int = 1) -> Target:
  """The target a name stands for.

  Args:
    name: a Cloud TPU accelerator type ('v3-32'), a GPU host or cluster
      ('8xH100', '2x8xA100'), or 'cpu'.
    num_devices: fake CPU devices of the 'cpu' target (≥ 1); ignored
      otherwise.

  Raises:
    ValueError: naming the value and what is allowed, for an unknown name
      or a size the vendor does not offer.
  """
  text = name.strip()
  if text.lower() == 'cpu':
    if num_devices < 1:
      raise ValueError(f'--num_devices={num_devices} must be >= 1.')
    return Target('cpu', 'cpu', num_devices, 1, 0, None, None, None)
  tpu = re.fullmatch(r'(v\d+[a-z]*)-(\d+)', text.lower())
  if tpu:
    return _tpu(text.lower(), tpu.group(1), int(tpu.group(2)))
  gpu = re.fullmatch(r'(?:(\d+)x)?(\d+)x([A-Za-z]\d+)', text, re.IGNORECASE)
  if gpu:
    hosts, per_host = int(gpu.group(1) or 1), int(gpu.group(2))
    model = gpu.group(3).upper()
    name = (
        f'{hosts}x{per_host}x{model}' if gpu.group(1) else f'{per_host}x{model}'
    )
    return _gpu(name, hosts, per_host, model)
  raise ValueError(
      f'--topology={name!r} is not a target: give a Cloud TPU accelerator '
      f'type, a GPU host (GPUs x model) or cpu, e.g. {EXAMPLES}.'
  )


def _tpu(name: str, generation: str, count: int) -> Target:
  generation = _TPU_ALIASES.get(generation, generation)
  if generation not in _TPUS:
    raise ValueError(
        f'--topology={name}: unknown TPU generation {generation!r}; '
        f'known: {", ".join(_TPUS)} (v5e is spelled v5litepod by Cloud TPU).'
    )
  spec = _TPUS[generation]
  chips = count // 2 if spec.counts_cores else count
  shape = _chip_shape(spec, chips, count)
  if shape is None:
    raise ValueError(
        f'--topology={name}: Cloud TPU offers no {generation} slice of '
        f'{count} {"TensorCores" if spec.counts_cores else "chips"}; '
        'offered sizes include '
        f'{", ".join(f"{generation}-{n}" for n in _sizes(spec))}.'
    )
  if chips <= _SINGLE_HOST_CHIPS and not spec.counts_cores:
    per_host = (shape + (1,))[:3]  # the whole slice on one host
  else:
    per_host = _HOST_CHIPS
  return Target(
      name=name,
      platform='tpu',
      num_devices=chips * spec.devices_per_chip,
      num_hosts=chips // math.prod(per_host),
      num_chips=chips,
      memory_gib=spec.memory_gib,
      usable_gib=spec.memory_gib,
      peak_tflops=spec.peak_tflops,
      topology=f'{spec.topology}:{"x".join(map(str, shape))}',
      chips_per_host=per_host,
      chip_config='megacore'
      if spec.devices_per_chip == 1 and spec.counts_cores
      else 'default',
  )


def _pow2(n: int) -> bool:
  return n >= 1 and n & (n - 1) == 0


def _chip_shape(
    spec: _TpuGeneration, chips: int, count: int
) -> Optional[tuple[int, ...]]:
  """The torus of a slice, e.g. 16 v3 chips -> (4, 4), or None when Cloud
  TPU offers no such slice."""
  if spec.counts_cores and count % 2:
    return None
  if spec.dims == 2:
    # v3: 4 chips, or 16 to 1,024; v5e and v6e: 1, or 4 to 256; powers of
    # two, as square as possible.
    if spec.counts_cores:
      offered = chips == 4 or (_pow2(chips) and 16 <= chips <= 1024)
    else:
      offered = chips == 1 or (_pow2(chips) and 4 <= chips <= 256)
    if not offered:
      return None
    k = chips.bit_length() - 1
    return (2 ** (k // 2), 2 ** (k - k // 2))
  # v4, v5p: 4 chips (2x2x1), 8 (2x2x2), 16 (2x2x4), 32 (2x4x4), and from
  # 64 chips every AxBxC with A, B, C multiples of 4; the most cubic one.
  small = {4: (2, 2, 1), 8: (2, 2, 2), 16: (2, 2, 4), 32: (2, 4, 4)}
  if chips in small:
    return small[chips]
  if chips < 64 or chips % 64:
    return None
  best = None
  for a in range(4, round(chips ** (1 / 3)) + 5, 4):
    for b in range(a, chips // a + 1, 4):
      c, remainder = divmod(chips, a * b)
      if remainder or c < b or c % 4:
        continue
      if best is None or c < best[2]:
        best = (a, b, c)
  return best


def _sizes(spec: _TpuGeneration) -> list[int]:
  """A few accelerator-type numbers of a generation, for error messages."""
  if spec.dims == 3:
    chips = [4, 8, 16, 32, 64, 128]
  elif spec.counts_cores:
    chips = [4, 16, 32, 64, 128]
  else:
    chips = [1, 4, 8, 16, 32, 64, 128, 256]
  return [c * 2 if spec.counts_cores else c for c in chips]


def _gpu(name: str, hosts: int, per_host: int, model: str) -> Target:
  if model not in _GPUS:
    raise ValueError(
        f'--topology={name}: unknown GPU {model!r}; known: '
        f'{", ".join(_GPUS)} (e.g. 8xH100, 2x8xA100).'
    )
  if not 1 <= per_host <= _MAX_GPUS_PER_HOST or hosts < 1:
    raise ValueError(
        f'--topology={name}: give 1 to {_MAX_GPUS_PER_HOST} GPUs per host '
        'and at least one host, e.g. 8xH100 or 2x8xH100.'
    )
  spec = _GPUS[model]
  fraction = gpu_memory_fraction()
  return Target(
      name=name,
      platform='gpu',
      num_devices=hosts * per_host,
      num_hosts=hosts,
      num_chips=hosts * per_host,
      memory_gib=spec.memory_gib,
      usable_gib=spec.memory_gib * fraction,
      peak_tflops=spec.peak_tflops,
      topology=f'1x{hosts}x{per_host}',
      gpu_spec=spec.spec_file,
      gpu_memory_fraction=fraction,
  )


def gpu_memory_fraction() -> float:
  """The share of a GPU's memory JAX's allocator takes: $XLA_PYTHON_CLIENT_
  MEM_FRACTION (set it here as it will be set on the GPU hosts) or JAX's
  default, 0.75.

  Raises:
    ValueError: for a value that is not a number in (0, 1].
  """
  text = os.environ.get('XLA_PYTHON_CLIENT_MEM_FRACTION', '')
  if not text:
    return JAX_GPU_MEMORY_FRACTION
  try:
    value = float(text)
  except ValueError:
    value = -1.0
  if not 0 < value <= 1:
    raise ValueError(
        f'XLA_PYTHON_CLIENT_MEM_FRACTION={text!r} must be a number in (0, 1].'
    )
  return value
