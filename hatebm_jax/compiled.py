"""A config's programs compiled for a target, and what the compiler says.

`report(config, target)` lowers and compiles the training step (and the
sampling program of `python -m hatebm_jax.sample`) for the devices of a
`infra.targets.Target` (a TPU slice, GPU hosts, or fake CPU devices), runs
nothing, and reads back:

- memory per device: XLA's buffer assignment (arguments, outputs, temporaries,
  donated buffers) and whether it fits: on TPU the compiler itself refuses a
  program that does not fit in HBM; on GPU the peak is compared with the share
  of memory JAX's allocator takes;
- model FLOPs of one iteration of the global batch: XLA's HLO cost analysis
  of the program lowered for one CPU device (the same arithmetic on any
  target);
- on TPU, the compiler's own estimate of the step's time: the cycles it
  estimates for every instruction, the loop's per trip (`estimate_seconds`:
  an estimate, not a measurement);
- the collectives of the compiled step (`infra.hlo`).

XLA's cost analysis counts a while-loop body once, whatever its trip count.
The Langevin chain is a `lax.scan` of n steps (n = K for synthesis, K − 1
for the joint chain, whose first and last half-steps sit outside the loop).
FLOPs are therefore counted at two unrolls of the scan, u = 1 and u = 2,
which differ by exactly one or two steps (`bodies_counted`); one step's
count follows, and the count of all n steps is
Q(u=1) + (n − bodies(u=1)) · step. The time estimate reads the loop's trip
count from the compiled program instead.
"""

import dataclasses
import re
import time
from typing import Any, Callable, Optional

import jax
import ml_collections
import numpy as np

from hatebm_jax import models
from hatebm_jax import modes
from hatebm_jax import train
from hatebm_jax import validation
from hatebm_jax.infra import hlo
from hatebm_jax.infra import parallel
from hatebm_jax.infra import targets
from hatebm_jax.modes import base

GIB = 2**30
SAMPLE_BATCH = 64  # `python -m hatebm_jax.sample --batch_size` default
_OUT_OF_MEMORY = re.compile(
    r'RESOURCE_EXHAUSTED.*?\(([\d.]+)([KMGT]?)\).*?\(([\d.]+)([KMGT]?)\)',
    re.S,
)
_UNITS = {'': 1, 'K': 2**10, 'M': 2**20, 'G': 2**30, 'T': 2**40}


@dataclasses.dataclass
class Build:
  """One program compiled (or refused) for the target.

  Attributes:
    compiled: the compiled program, or None when it does not fit.
    module: its optimised HLO (None when refused).
    memory: bytes per device: 'argument', 'output', 'temp', 'alias',
      'generated_code', 'peak' (argument + output + temp − alias).
    seconds: the compiler's `optimal_seconds` (TPU), else None.
    needed_bytes, available_bytes: from the TPU compiler's refusal.
    compile_s: wall time of lowering and compiling.
  """

  compiled: Any = None
  module: Optional[hlo.Module] = None
  memory: dict = dataclasses.field(default_factory=dict)
  seconds: Optional[float] = None
  needed_bytes: Optional[int] = None
  available_bytes: Optional[int] = None
  compile_s: float = 0.0

  @property
  def refused(self) -> bool:
    return self.compiled is None


def compile_program(lower: Callable[[], Any], what: str = '') -> Build:
  """Lowers and compiles; a TPU out-of-memory refusal becomes a Build
  with `needed_bytes` instead of an exception. Reports `what` and the
  time taken to `progress`."""
  start = time.time()
  build = _compile_and_read(lower, start)
  if what:
    verdict = ' (does not fit)' if build.refused else ''
    progress(f'compiled {what} in {build.compile_s:.1f} s{verdict}')
  return build


def progress(message: str) -> None:
  """Where compile progress goes: nowhere by default; `hatebm_jax.aot`
  prints it."""
  del message


def _compile_and_read(lower: Callable[[], Any], start: float) -> Build:
  try:
    compiled = lower().compile()
  except jax.errors.JaxRuntimeError as e:
    match = _OUT_OF_MEMORY.search(str(e))
    if not match:
      raise
    to_bytes = lambda v, u: int(float(v) * _UNITS[u])
    return Build(
        needed_bytes=to_bytes(match.group(1), match.group(2)),
        available_bytes=to_bytes(match.group(3), match.group(4)),
        compile_s=time.time() - start,
    )
  stats = compiled.memory_analysis()
  memory = {
      'argument': stats.argument_size_in_bytes,
      'output': stats.output_size_in_bytes,
      'temp': stats.temp_size_in_bytes,
      'alias': stats.alias_size_in_bytes,
      'generated_code': stats.generated_code_size_in_bytes,
  }
  memory['peak'] = (
      memory['argument'] + memory['output'] + memory['temp'] - memory['alias']
  )
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  seconds = (cost or {}).get('optimal_seconds')
  return Build(
      compiled=compiled,
      module=hlo.Module.parse(compiled.as_text()),
      memory=memory,
      seconds=float(seconds) if seconds is not None and seconds > 0 else None,
      compile_s=time.time() - start,
  )


# ---------------------------------------------------------------------------
# Loop correction.


def bodies_counted(n: int, unroll: int) -> int:
  """Langevin steps a once-per-loop count sees in `lax.scan(length=n,
  unroll=unroll)`: jax lowers it to a while loop of n // u trips whose
  body holds u steps, plus n mod u steps after it; a single trip (or none)
  is no loop at all."""
  trips, remainder = divmod(n, unroll)
  if trips == 0 or (unroll != 1 and trips == 1 and remainder == 0):
    return n
  return unroll + remainder


def loop_corrected(
    first: float, second: float, n: int, bodies: tuple[int, int]
) -> float:
  """A quantity of all n loop steps from counts at two unrolls.

  Args:
    first, second: the counts (FLOPs, seconds) of the programs at the two
      unrolls, each with `bodies[i]` Langevin steps counted.
    n: the chain's steps in the loop.
    bodies: steps counted in each.

  Returns:
    first + (n − bodies[0]) · (second − first) / (bodies[1] − bodies[0]),
    or `first` when it already counts all n steps.
  """
  if bodies[0] == n:
    return first
  if bodies[1] == bodies[0]:
    raise ValueError(f'Two counts of the same {bodies[0]} steps: no body.')
  body = (second - first) / (bodies[1] - bodies[0])
  return first + (n - bodies[0]) * body


def _scan_lengths(jaxpr, unroll: int) -> list[int]:
  """Lengths of the `lax.scan`s of a jaxpr (nested ones included) whose
  unroll is `unroll`."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == 'scan' and eqn.params.get('unroll') == unroll:
      found.append(eqn.params['length'])
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        if hasattr(sub, 'jaxpr') and hasattr(sub, 'consts'):  # ClosedJaxpr
          found += _scan_lengths(sub.jaxpr, unroll)
        elif hasattr(sub, 'eqns'):  # Jaxpr
          found += _scan_lengths(sub, unroll)
  return found


def chain_length(traced, unroll: int) -> int:
  """n, the steps of the Langevin scan of a traced program whose chain is
  unrolled `unroll` ≥ 2 times (0 without a chain: no other scan of the
  package's programs uses an unroll above 1).

  Raises:
    ValueError: for several chains of different lengths.
  """
  lengths = set(_scan_lengths(traced.jaxpr.jaxpr, unroll))
  if len(lengths) > 1:
    raise ValueError(f'Langevin scans of different lengths: {lengths}.')
  return lengths.pop() if lengths else 0


def _unrolls(config: ml_collections.ConfigDict) -> tuple[int, ...]:
  """The chain unrolls to compile at: the config's (rolled, 1, when left
  on auto, as on accelerators) and twice that; only one for a fully
  unrolled chain (0), which XLA counts whole."""
  unroll = 1 if config.langevin_unroll == -1 else config.langevin_unroll
  return (0,) if unroll == 0 else (unroll, 2 * unroll)


# ---------------------------------------------------------------------------
# The programs.


def _with_unroll(
    config: ml_collections.ConfigDict, unroll: int, **changes
) -> ml_collections.ConfigDict:
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.langevin_unroll = unroll
    for key, value in changes.items():
      config[key] = value
  return config


def _step_args(program: train.Program, mesh: jax.sharding.Mesh) -> tuple:
  """Abstract (state, batch, health) of a training step on `mesh`."""
  config_images = program.mode.images_per_step
  batch = jax.ShapeDtypeStruct(
      (config_images,) + tuple(program.mode.image_shape),
      np.float32,
      sharding=parallel.batch_sharding(mesh),
  )
  with jax.set_mesh(mesh):
    health = jax.eval_shape(lambda: program.fresh_health(mesh))
  return (
      parallel.with_shardings(program.abstract, program.shardings),
      batch,
      health,
  )


def _cpu_mesh() -> jax.sharding.Mesh:
  return jax.sharding.Mesh(
      np.array(jax.devices('cpu')[:1]), (parallel.DATA_AXIS,)
  )


def training_flops(config: ml_collections.ConfigDict, unroll: int):
  """(global FLOPs counted by XLA with the loop once, the traced program)
  of the step lowered for one CPU device at `unroll`."""
  mesh = _cpu_mesh()
  program = train.Program.build(_with_unroll(config, unroll), mesh)
  args = _step_args(program, mesh)
  with jax.set_mesh(mesh):
    traced = program.step.trace(*args)
    flops = traced.lower().cost_analysis()['flops']
  return float(flops), traced


def compile_step(
    config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, unroll: int
) -> tuple[Build, train.Program]:
  """The training step of `config` compiled over `mesh` at `unroll`."""
  program = train.Program.build(_with_unroll(config, unroll), mesh)
  args = _step_args(program, mesh)

  def lower():
    with jax.set_mesh(mesh):
      return program.step.lower(*args)

  what = (
      f'the training step (batch {config.batch_size}, K = '
      f'{config.mcmc_steps}, chain unroll {unroll})'
  )
  return compile_program(lower, what), program


def _sampling_program(config, unroll, device):
  """(jitted draw, abstract args) of `python -m hatebm_jax.sample`: one
  device, `SAMPLE_BATCH` chains, the state a restored run samples with."""
  mode = modes.build(_with_unroll(config, unroll))
  on = lambda tree: jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(
          a.shape, a.dtype, sharding=jax.sharding.SingleDeviceSharding(device)
      ),
      tree,
  )
  state = base.for_sampling(
      mode.abstract_state(config.seed), config.sample_weights
  )
  z = jax.ShapeDtypeStruct(
      (SAMPLE_BATCH,) + tuple(mode.latent_shape), np.float32
  )
  key = jax.eval_shape(lambda: jax.random.PRNGKey(0))
  source = mode.capabilities.sources[0]
  draw = jax.jit(mode.draw, static_argnums=3)
  return draw, (on(state), on(z), on(key), source)


# ---------------------------------------------------------------------------
# The report.


def _gib(value: Optional[float]) -> Optional[float]:
  return None if value is None else round(value / GIB, 3)


def _round(value: Optional[float]) -> Optional[float]:
  """6 significant digits (JSON and console), None kept."""
  return None if value is None else float(f'{value:.6g}')


def _state_bytes(program: train.Program, mesh_size: int) -> int:
  """Bytes per device of the training state as laid out (split leaves
  1/N of their size)."""
  total = 0
  for leaf, sharding in zip(
      jax.tree.leaves(program.abstract), jax.tree.leaves(program.shardings)
  ):
    size = int(np.prod(leaf.shape)) * np.dtype(leaf.dtype).itemsize
    total += size // mesh_size if sharding.spec else size
  return total


def _fits(build: Build, target: targets.Target) -> Optional[bool]:
  if build.refused:
    return False
  if target.usable_gib is None:
    return None
  return build.memory['peak'] <= target.usable_gib * GIB


def _need_bytes(build: Build) -> int:
  return build.needed_bytes if build.refused else build.memory['peak']


def check_config(
    config: ml_collections.ConfigDict, target: targets.Target
) -> ml_collections.ConfigDict:
  """`config` validated for `target`, its automatic choices made as
  training on the target would make them (`stem_conv`; the chain's
  unroll is `_unrolls`); a joint config may leave `gen_weights` empty:
  compiling reads no weights.

  Raises:
    ValueError: for an invalid config, a config.num_devices other than the
      target's, or a batch that does not split over its devices.
  """
  if config.mode == 'joint' and not config.gen_weights:
    # The pretrained generator's shapes come from the config; its weights
    # are never read here.
    config = config.copy_and_resolve_references()
    config.gen_weights = 'not read: compiled from shapes only'
  if config.stem_conv == 'auto':
    # What training on the target would pick.
    config = config.copy_and_resolve_references()
    config.stem_conv = models.stem_conv(config, target.platform)
  validation.validate(config)
  if config.num_devices not in (0, target.num_devices):
    raise ValueError(
        f'config.num_devices={config.num_devices} differs from the '
        f'{target.num_devices} devices of --topology={target.name}: leave it 0.'
    )
  images = modes.build(config).images_per_step
  if images % target.num_devices:
    raise ValueError(
        f'batch_size={config.batch_size} must be divisible by the number of '
        f'devices, {target.num_devices} ({target.name}): each device takes an '
        'equal share of the global batch.'
    )
  return config


def report(
    config: ml_collections.ConfigDict,
    target: targets.Target,
    devices: list[Any],
    sampling: bool = True,
    search: bool = True,
) -> dict:
  """Compiles `config`'s training step (and sampling program) for `target`.

  Args:
    config: an experiment config (`check_config` is applied).
    target: what to compile for.
    devices: `target.devices()`.
    sampling: also compile the program of `python -m hatebm_jax.sample`.
    search: when the step does not fit, find the largest batch that does,
      by compiling.

  Returns:
    A JSON-ready dict; docs/accelerators.md describes every key. Sizes in
    GiB per device, FLOPs in TFLOP (10¹²) of the global batch, times in
    seconds and hours.

  Raises:
    ValueError: see `check_config`.
  """
  config = check_config(config, target)
  unrolls = _unrolls(config)
  mesh = jax.sharding.Mesh(np.array(devices), (parallel.DATA_AXIS,))
  start = time.time()
  first, program = compile_step(config, mesh, unrolls[0])
  flops, n = {}, 0
  for u in unrolls:
    flops[u], traced = training_flops(config, u)
    if u != unrolls[0]:
      n = chain_length(traced, u)
  model_flops = corrected(flops, unrolls, n)
  out = _header(config, target, devices, program, n)
  out.update(_memory(first, target, program))
  out['model_tflop_per_iteration'] = _round(model_flops / 1e12)
  out['model_tflop_per_image'] = _round(
      model_flops / 1e12 / program.mode.images_per_step
  )
  seconds = None
  if target.platform == 'tpu':
    seconds = estimate_seconds(first, devices[0])
  out.update(_estimate(config, target, seconds, model_flops))
  if out['fits'] is False and search:
    progress(
        f'batch {config.batch_size} does not fit: searching for the largest '
        'batch that does, one compile per try (--nosearch skips this)'
    )
    out['largest_fitting_batch'] = largest_batch(config, target, mesh, first)
  if first.refused:
    out['collectives'] = None
    out['collectives_in_langevin_loop'] = None
  else:
    found = hlo.collectives(first.module)
    out['collectives'] = hlo.summary(found)
    out['collectives_in_langevin_loop'] = sum(
        c.runs for c in found if c.in_loop
    )
  if sampling:
    out['sampling'] = sampling_report(config, target, devices[0])
  out['compile_s'] = round(time.time() - start, 1)
  return out


def _header(config, target, devices, program, n) -> dict:
  images = program.mode.images_per_step
  return {
      'config': config.exp_name,
      'mode': config.mode,
      'target': target.name,
      'platform': target.platform,
      'device_kind': devices[0].device_kind,
      'num_devices': target.num_devices,
      'num_hosts': target.num_hosts,
      'num_chips': target.num_chips,
      'global_batch': config.batch_size,
      'per_device_batch': config.batch_size // target.num_devices,
      'images_per_device': images // target.num_devices,
      'mcmc_steps': config.mcmc_steps
      if program.mode.capabilities.chain
      else None,
      'langevin_loop_steps': n,
      'compute_dtype': config.compute_dtype,
      'stem_conv': config.stem_conv,
  }


def _memory(build: Build, target: targets.Target, program) -> dict:
  memory = build.memory
  fits = _fits(build, target)
  need = _need_bytes(build)
  usable = target.usable_gib
  return {
      'device_memory_gib': target.memory_gib,
      'usable_memory_gib': _round(usable),
      'gpu_memory_fraction': target.gpu_memory_fraction,
      'state_gib_per_device': _gib(_state_bytes(program, target.num_devices)),
      'argument_gib': _gib(memory.get('argument')),
      'output_gib': _gib(memory.get('output')),
      'temp_gib': _gib(memory.get('temp')),
      'alias_gib': _gib(memory.get('alias')),
      'generated_code_gib': _gib(memory.get('generated_code')),
      'peak_gib': _gib(need),
      'fits': fits,
      'headroom_gib': (
          None if usable is None else round(usable - need / GIB, 3)
      ),
  }


def _estimate(config, target, seconds, model_flops) -> dict:
  """What the TPU compiler's estimate of one iteration implies (None
  elsewhere, or when the step does not fit)."""
  out = {
      'peak_bf16_tflops_per_device': target.peak_tflops,
      'estimated_iteration_s': None,
      'estimated_bf16_utilization': None,
      'num_training_steps': config.num_training_steps,
      'estimated_training_hours': None,
      'estimated_chip_hours': None,
  }
  if seconds is None:
    return out
  hours = config.num_training_steps * seconds / 3600
  peak = seconds * target.num_devices * target.peak_tflops * 1e12
  out.update(
      estimated_iteration_s=_round(seconds),
      estimated_bf16_utilization=_round(model_flops / peak),
      estimated_training_hours=_round(hours),
      estimated_chip_hours=_round(hours * target.num_chips),
  )
  return out


def sampling_report(
    config: ml_collections.ConfigDict, target: targets.Target, device: Any
) -> dict:
  """The program of `python -m hatebm_jax.sample` (one device, `SAMPLE_BATCH`
  chains of the training K, the state a restored run holds) compiled for
  one device of the target: memory, whether it fits, its model FLOPs and,
  on TPU, the estimated seconds per batch."""
  unrolls = _unrolls(config)
  cpu = jax.devices('cpu')[0]
  flops, n = {}, 0
  for u in unrolls:
    draw, args = _sampling_program(config, u, cpu)
    traced = draw.trace(*args)
    flops[u] = float(traced.lower().cost_analysis()['flops'])
    if u != unrolls[0]:
      n = chain_length(traced, u)

  draw, args = _sampling_program(config, unrolls[0], device)
  first = compile_program(
      lambda: draw.lower(*args),
      f'the sampling program (batch {SAMPLE_BATCH}, K = {config.mcmc_steps}, '
      f'chain unroll {unrolls[0]})',
  )
  out = {
      'batch': SAMPLE_BATCH,
      'peak_gib': _gib(_need_bytes(first)),
      'fits': _fits(first, target),
      'model_tflop_per_batch': _round(corrected(flops, unrolls, n) / 1e12),
      'estimated_batch_s': None,
      'estimated_samples_per_s': None,
  }
  if target.platform == 'tpu':
    seconds = estimate_seconds(first, device)
    if seconds is not None:
      out['estimated_batch_s'] = _round(seconds)
      out['estimated_samples_per_s'] = _round(SAMPLE_BATCH / seconds)
  return out


def corrected(counts: dict, unrolls: tuple, n: int) -> float:
  """A count of all n chain steps from counts at `unrolls` (XLA's cost
  analysis of unoptimised programs: jax's scan lowering decides what is
  counted)."""
  if len(unrolls) == 1 or not n:
    return counts[unrolls[0]]
  bodies = tuple(bodies_counted(n, u) for u in unrolls)
  return loop_corrected(counts[unrolls[0]], counts[unrolls[1]], n, bodies)


_SECONDS_PER_CYCLE = {}  # device kind -> seconds per estimated cycle
_CALIBRATION_SIDE = 16384


def seconds_per_cycle(device: Any) -> tuple[float, float]:
  """(seconds per estimated cycle, matmul TFLOP/s) of the TPU compiler's
  model of `device`: a 16384² bf16 matmul, compute-bound, compiled for one
  device; its `optimal_seconds` (the roofline at the model's peak) over
  its `estimated_cycles`. Cached per device kind.

  Raises:
    ValueError: when the compiler gives no cycle estimate (not a TPU).
  """
  kind = device.device_kind
  if kind not in _SECONDS_PER_CYCLE:
    x = jax.ShapeDtypeStruct(
        (_CALIBRATION_SIDE,) * 2,
        jax.numpy.bfloat16,
        sharding=jax.sharding.SingleDeviceSharding(device),
    )
    build = compile_program(lambda: jax.jit(jax.numpy.matmul).lower(x, x))
    cycles = sum(t.cycles or 0 for t in hlo.timed(build.module))
    if not cycles or build.seconds is None:
      raise ValueError(f'{kind}: the compiler gives no cycle estimates.')
    _SECONDS_PER_CYCLE[kind] = (
        build.seconds / cycles,
        2 * _CALIBRATION_SIDE**3 / build.seconds / 1e12,
    )
  return _SECONDS_PER_CYCLE[kind]


def estimate_seconds(build: Build, device: Any) -> Optional[float]:
  """The TPU compiler's estimate of one call of a compiled program, in
  seconds: the `estimated_cycles` it annotates every executed instruction
  with (the entry computation, and each loop body once per trip: the
  Langevin chain counted K times), at `seconds_per_cycle`.

  Not the compiler's `optimal_seconds`, which cannot be trusted here
  (measured on jax 0.10.2, libtpu 0.0.42, docs/accelerators.md): it costs
  a while loop as −1 s and leaves its body out (a 10-step float32 scan of
  matmuls over 4 v5e chips: −0.9995 s rolled, 2.1 ms unrolled), counts
  some instructions it cannot cost (the `ConcatBitcast` custom calls of
  weights staged into on-chip memory) as −1 s each, and gives nothing
  usable for `imagenet_scaled` on a v6e slice even with the chain
  unrolled. Instructions without a cycle estimate (collectives, async
  copies, a few small ones) add nothing.

  Returns:
    Seconds, or None when the program does not fit, the compiler gives no
    cycle estimates (GPU, CPU), or a loop's trip count is unknown.
  """
  if build.refused or any(
      loop.trip_count is None for loop in hlo.loops(build.module)
  ):
    return None
  cycles = sum(t.cycles * t.runs for t in hlo.timed(build.module) if t.cycles)
  if not cycles:
    return None
  return cycles * seconds_per_cycle(device)[0]


# ---------------------------------------------------------------------------
# The largest batch that fits.


def largest_batch(
    config: ml_collections.ConfigDict,
    target: targets.Target,
    mesh: jax.sharding.Mesh,
    refused: Build,
) -> Optional[int]:
  """The largest global batch (a multiple of the device count) whose
  training step fits on `target`, found by compiling; None when not even
  one image per device fits.

  The memory of a step is close to affine in the per-device batch b, and
  the peaks of compiled steps are exact, while a refusal only bounds (the
  TPU compiler reports what it needed when it gave up, after trying to
  rematerialise). So: b = 1 and b = 2 are compiled, then the line through
  the two largest batches that fit predicts the largest one; where it
  predicts the largest batch seen to fit, the next one is tried, and where
  it predicts one seen not to, the bounds are bisected. With memory affine
  in b that is four compiles: 1, 2, the prediction, one more.
  """
  devices = target.num_devices
  high = config.batch_size // devices  # does not fit
  peaks = {}  # per-device batch -> peak bytes of a step that fits
  capacity = (
      refused.available_bytes
      if refused.available_bytes
      else (target.usable_gib or 0) * GIB
  )

  def fits(b):
    candidate = _with_unroll(
        config, config.langevin_unroll, batch_size=b * devices
    )
    try:
      validation.validate(candidate)
    except ValueError:  # e.g. a batch beyond the replay bank
      return False
    build, _ = compile_step(candidate, mesh, _unrolls(candidate)[0])
    verdict = _fits(build, target) is not False
    progress(
        f'batch {b * devices} needs {_need_bytes(build) / GIB:.3g} GiB per '
        f'device: {"fits" if verdict else "does not fit"}'
    )
    if verdict:
      peaks[b] = _need_bytes(build)
    return verdict

  if high <= 1 or not fits(1):
    return None
  low = 1
  while high - low > 1:
    if len(peaks) < 2:
      guess = 2 if low == 1 else (low + high) // 2
    else:
      (b1, p1), (b2, p2) = sorted(peaks.items())[-2:]
      slope = (p2 - p1) / (b2 - b1)
      predicted = b2 + int((capacity - p2) / slope) if slope > 0 else high
      if predicted <= low:  # the line says low is the largest: check low + 1
        guess = low + 1
      elif predicted >= high:
        guess = (low + high) // 2
      else:
        guess = predicted
    if fits(guess):
      low = guess
    else:
      high = guess
  return low * devices
