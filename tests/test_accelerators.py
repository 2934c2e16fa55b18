"""Compiling for TPU slices and GPU hosts on this CPU (the `[aot]` extra):
the targets, what the compiled step does across devices, the loop-corrected
counts, and the aot command's report and refusal."""

import json
import os
import re
import subprocess
import sys

import jax
from jax.experimental.compilation_cache import compilation_cache
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import CONFIG_DIR, ROOT, device_env, load_config, tiny_config
from hatebm_jax import compiled
from hatebm_jax.infra import hlo
from hatebm_jax.infra import parallel
from hatebm_jax.infra import targets


@pytest.fixture(autouse=True, scope='module')
def _no_persistent_cache():
  """JAX's persistent compilation cache (conftest) cannot load executables
  of compile-only TPU and GPU devices (a warning at each): off here."""
  jax.config.update('jax_enable_compilation_cache', False)
  compilation_cache.reset_cache()
  yield
  jax.config.update('jax_enable_compilation_cache', True)
  compilation_cache.reset_cache()


# name -> (libtpu topology or GPU layout, JAX devices, hosts, chips)
TARGETS = {
    'v3-8': ('v3:2x2', 8, 1, 4),
    'v3-32': ('v3:4x4', 32, 4, 16),
    'v3-2048': ('v3:32x32', 2048, 256, 1024),
    'v4-8': ('v4:2x2x1', 4, 1, 4),
    'v4-32': ('v4:2x2x4', 16, 4, 16),
    'v4-384': ('v4:4x4x12', 192, 48, 192),
    'v5litepod-1': ('v5e:1x1', 1, 1, 1),
    'v5litepod-8': ('v5e:2x4', 8, 1, 8),
    'v5e-16': ('v5e:4x4', 16, 4, 16),
    'v5p-8': ('v5:2x2x1', 4, 1, 4),
    'v5p-32': ('v5:2x2x4', 16, 4, 16),
    'v6e-8': ('v6e:2x4', 8, 1, 8),
    'v6e-16': ('v6e:4x4', 16, 4, 16),
    '8xH100': ('1x1x8', 8, 1, 8),
    '8xA100': ('1x1x8', 8, 1, 8),
    '2x8xH100': ('1x2x8', 16, 2, 16),
}
KINDS = {
    'v3': 'TPU v3',
    'v4': 'TPU v4',
    'v5litepod': 'TPU v5 lite',
    'v5e': 'TPU v5 lite',
    'v5p': 'TPU v5',
    'v6e': 'TPU v6 lite',
}


@pytest.mark.parametrize('name', sorted(TARGETS))
def test_targets_are_the_vendors_slices(name):
  """Each accelerator type gives the devices and hosts of the real slice:
  a v3 core per device, a v4/v5p chip per device (megacore), 4 chips per
  host on multi-host slices, v5e/v6e slices of ≤ 8 chips on one host."""
  topology, devices, hosts, chips = TARGETS[name]
  target = targets.parse(name)
  assert (target.topology, target.num_devices, target.num_hosts) == (
      topology,
      devices,
      hosts,
  )
  assert target.num_chips == chips
  found = target.devices()
  assert len(found) == devices
  assert len({d.process_index for d in found}) == hosts
  if target.platform == 'tpu':
    assert found[0].device_kind == KINDS[name.split('-')[0]]
  else:
    assert found[0].device_kind.startswith('NVIDIA ' + name.split('x')[-1])
    assert target.usable_gib == pytest.approx(0.75 * target.memory_gib)


@pytest.mark.parametrize(
    'name, message',
    [
        ('v3-16', 'offers no v3 slice of 16 TensorCores'),
        ('v5litepod-2', 'offers no v5litepod slice of 2 chips'),
        ('v4-12', 'offers no v4 slice of 12 TensorCores'),
        ('v7-8', "unknown TPU generation 'v7'"),
        ('8xB200', "unknown GPU 'B200'"),
        ('0x8xH100', 'give 1 to 16 GPUs per host and at least one host'),
        ('tpu', "--topology='tpu' is not a target"),
    ],
)
def test_unknown_targets_are_refused_by_name(name, message):
  with pytest.raises(ValueError, match=message):
    targets.parse(name)


@pytest.mark.parametrize(
    'typed, name',
    [('V3-8', 'v3-8'), ('8xh100', '8xH100'), ('2X8xa100', '2x8xA100')],
)
def test_target_names_are_read_without_regard_to_case(typed, name):
  assert targets.parse(typed).name == name


def test_a_missing_compiler_names_the_extra(monkeypatch):
  import importlib.util  # pylint: disable=g-import-not-at-top

  real = importlib.util.find_spec
  monkeypatch.setattr(
      importlib.util,
      'find_spec',
      lambda name, *a: None if name == 'libtpu' else real(name, *a),
  )
  with pytest.raises(
      ImportError, match=r'needs libtpu: pip install -e "\.\[aot\]"'
  ):
    targets.parse('v3-8').devices()


def test_gpu_memory_fraction_follows_jax(monkeypatch):
  monkeypatch.setenv('XLA_PYTHON_CLIENT_MEM_FRACTION', '.9')
  assert targets.parse('8xH100').usable_gib == pytest.approx(72.0)
  monkeypatch.setenv('XLA_PYTHON_CLIENT_MEM_FRACTION', '1.5')
  with pytest.raises(ValueError, match=r"'1.5' must be a number in \(0, 1\]"):
    targets.parse('8xH100')


# ---------------------------------------------------------------------------
# Reading compiled programs.


def _toy(devices, steps):
  """A scan of `steps` steps whose body sums over the split axis (one
  all-reduce per step), then an all-gather of the result: compiled."""
  mesh = jax.sharding.Mesh(np.array(devices), ('data',))
  split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  whole = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

  def f(x):
    def body(c, _):
      return c + jnp.sum(c * c), None

    c, _ = jax.lax.scan(body, x, None, length=steps)
    return jax.lax.with_sharding_constraint(c, whole)

  x = jax.ShapeDtypeStruct(
      (len(devices) * 128, 256), jnp.float32, sharding=split
  )
  return jax.jit(f, out_shardings=whole).lower(x).compile()


@pytest.mark.parametrize('name', ['v5litepod-4', '4xH100'])
def test_hlo_finds_loops_and_collectives(name):
  """Trip counts (GPU: XLA's annotation; TPU: the loop condition) and
  collectives with the bytes and runs per call."""
  program = _toy(targets.parse(name).devices(), steps=7)
  module = hlo.Module.parse(program.as_text())
  assert [loop.trip_count for loop in hlo.loops(module)] == [7]
  found = hlo.collectives(module)
  in_loop = [c for c in found if c.in_loop]
  assert [(c.kind, c.runs) for c in in_loop] == [('all-reduce', 7)]
  assert in_loop[0].bytes == 4  # one float32 partial sum per device
  gathers = [c for c in found if c.kind == 'all-gather']
  assert [(c.runs, c.bytes, c.in_loop) for c in gathers] == [
      (1, 4 * 128 * 256 * 4, False)  # the whole [512, 256] float32 result
  ]
  rows = {r['kind']: r for r in hlo.summary(found)}
  assert rows['all-reduce']['runs'] == rows['all-reduce']['in_loop'] == 7


def test_tpu_refusal_is_read_from_the_compiler():
  """The TPU compiler refuses a program beyond HBM; `_compile` returns the
  memory it asked for and the HBM it had instead of raising."""
  device = targets.parse('v5litepod-1').devices()[0]
  x = jax.ShapeDtypeStruct(
      (6 * 2**30 // 4,),
      jnp.float32,
      sharding=jax.sharding.SingleDeviceSharding(device),
  )
  build = compiled.compile_program(
      lambda: jax.jit(lambda a: (a + 1, a * 2, a - 1)).lower(x)
  )
  assert build.refused
  assert build.available_bytes < 16 * 2**30 < build.needed_bytes


@pytest.mark.parametrize('n', range(1, 8))
def test_loop_correction_counts_every_step(n):
  """`loop_corrected` on counts made the way XLA makes them (outside part
  O plus the bodies `bodies_counted` says are visible) gives O + n·B."""
  outside, body = 1000.0, 7.0
  counts = [outside + compiled.bodies_counted(n, u) * body for u in (1, 2)]
  bodies = (compiled.bodies_counted(n, 1), compiled.bodies_counted(n, 2))
  assert compiled.loop_corrected(*counts, n, bodies) == outside + n * body


@pytest.mark.parametrize('mode', ['synthesis', 'joint'])
@pytest.mark.slow
def test_model_flops_equal_the_unrolled_program(mode):
  """The loop-corrected FLOPs of the rolled chain equal XLA's count of the
  fully unrolled program (where every step is visible), exactly: both are
  sums of the same per-operation counts."""
  config = _tiny(mode, mcmc_steps=5)
  flops = {u: compiled.training_flops(config, u)[0] for u in (0, 1, 2)}
  n = compiled.chain_length(compiled.training_flops(config, 2)[1], 2)
  assert n == (5 if mode == 'synthesis' else 4)  # joint: K − 1 in the loop
  assert flops[1] < flops[0]
  corrected = compiled.corrected(flops, (1, 2), n)
  # The scan's own bookkeeping (its counter, the compare, the slice of the
  # step's key: a few scalar operations per step) is counted in the loop
  # and not in the unrolled program: at most tens of FLOPs a step, of
  # hundreds of millions.
  assert abs(corrected - flops[0]) <= 50 * n


@pytest.mark.slow
def test_time_estimate_counts_every_langevin_step():
  """The TPU estimate of the rolled step (its loop body's cycles times the
  trip count) against that of the step unrolled at the same K, where every
  step is its own instructions: the same work, scheduled and fused as one
  step or as four; they agree to 5%."""
  devices = targets.parse('v5litepod-4').devices()
  mesh = jax.sharding.Mesh(np.array(devices), (parallel.DATA_AXIS,))
  config = tiny_config(batch_size=8, mcmc_steps=4)
  rolled, _ = compiled.compile_step(config, mesh, 1)
  unrolled, _ = compiled.compile_step(config, mesh, 0)
  assert [loop.trip_count for loop in hlo.loops(rolled.module)] == [4]
  assert not hlo.loops(unrolled.module)
  estimate = compiled.estimate_seconds(rolled, devices[0])
  assert estimate == pytest.approx(
      compiled.estimate_seconds(unrolled, devices[0]), rel=0.05
  )
  # Counted once, the loop body alone would leave three steps out.
  once = sum(t.cycles for t in hlo.timed(rolled.module) if t.cycles)
  per_cycle = compiled.seconds_per_cycle(devices[0])[0]
  assert once * per_cycle < 0.9 * estimate


def _tiny(mode, **overrides):
  if mode == 'synthesis':
    return tiny_config(**overrides)
  config = load_config('fashion_mnist_refine')
  small = dict(ebm_ngf=8, gen_ngf=8, batch_size=8, mcmc_steps=2)
  for key, value in {**small, **overrides}.items():
    config[key] = value
  return config


# ---------------------------------------------------------------------------
# The compiled training step keeps its data split.


def _param_bytes(program):
  """float32 bytes of the trained networks' parameters."""
  state = program.abstract
  trained = [state.hat_params] + (
      [state.gen_params]
      if program.mode.__class__.__name__ == 'SynthesisMode'
      else []
  )
  return sum(int(np.prod(a.shape)) * 4 for a in jax.tree.leaves(trained))


@pytest.mark.slow
@pytest.mark.parametrize('mode', ['synthesis', 'joint'])
@pytest.mark.parametrize('name', ['v5litepod-8', '8xH100'])
def test_compiled_step_keeps_batch_and_bank_split(name, mode):
  """The step compiled for an 8-chip TPU slice and an 8-GPU host: the batch
  and the replay bank stay split (their per-device buffers are 1/8 of the
  whole), the Langevin loop runs its K steps with no collective, the
  gradients are all-reduced once per iteration (the bytes of the trained
  parameters, plus a few scalar metrics), and nothing is all-gathered,
  scattered or permuted."""
  target = targets.parse(name)
  mesh = jax.sharding.Mesh(np.array(target.devices()), (parallel.DATA_AXIS,))
  config = _tiny(mode, mcmc_steps=4)
  build, program = compiled.compile_step(config, mesh, 1)
  assert not build.refused
  loops = hlo.loops(build.module)
  assert [loop.trip_count for loop in loops] == [
      4 if mode == 'synthesis' else 3
  ]
  found = hlo.collectives(build.module)
  assert {c.kind for c in found} == {'all-reduce'}
  assert not [c for c in found if c.in_loop]
  reduced = sum(c.bytes * c.runs for c in found)
  gradients = _param_bytes(program)
  # XLA may reduce a small intermediate in place of a gradient (the hat
  # head's 8x1 kernel here) and adds the metrics' scalars: within 1%; a
  # gradient reduced twice would add its whole size.
  assert reduced == pytest.approx(gradients, rel=0.01)
  state_in = build.compiled.input_shardings[0][0]
  for path, sharding in jax.tree_util.tree_leaves_with_path(state_in):
    split = any(getattr(k, 'name', None) == 'bank' for k in path)
    assert (sharding.spec == jax.sharding.PartitionSpec('data')) == split, path
  batch = build.compiled.input_shardings[0][1]
  assert batch.shard_shape((8, 32, 32, 1)) == (1, 32, 32, 1)
  assert build.compiled.output_shardings[0] == state_in


# ---------------------------------------------------------------------------
# The command.


def _aot(*flags, env=None, timeout=600):
  return subprocess.run(
      [sys.executable, '-m', 'hatebm_jax.aot', *flags],
      env=env or device_env(1),
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=timeout,
  )


TINY_AOT = [
    '--config=' + os.path.join(CONFIG_DIR, 'fashion_mnist_synth.py'),
    '--config.ebm_ngf=8',
    '--config.gen_ngf=8',
    '--config.mcmc_steps=4',
]


@pytest.mark.slow
def test_aot_reports_a_tpu_slice(tmp_path):
  """The report for a TPU slice: memory that fits, the model FLOPs of K
  steps, and the compiler's loop-corrected time with what it implies."""
  out = tmp_path / 'r.json'
  proc = _aot(*TINY_AOT, '--topology=v5litepod-8', f'--json={out}')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stderr == ''  # libtpu's start-up warnings are held back
  r = json.loads(out.read_text())
  assert (r['target'], r['device_kind'], r['num_devices'], r['num_hosts']) == (
      'v5litepod-8',
      'TPU v5 lite',
      8,
      1,
  )
  assert r['per_device_batch'] == 1 and r['langevin_loop_steps'] == 4
  assert r['fits'] is True and r['peak_gib'] < r['device_memory_gib'] == 16.0
  assert r['collectives_in_langevin_loop'] == 0
  assert r['estimated_iteration_s'] > 0
  hours = r['num_training_steps'] * r['estimated_iteration_s'] / 3600
  assert r['estimated_training_hours'] == pytest.approx(hours, rel=1e-4)
  utilization = r['model_tflop_per_iteration'] / (
      r['estimated_iteration_s'] * 8 * 197.0
  )
  # The report rounds each number to 6 significant digits.
  assert r['estimated_bf16_utilization'] == pytest.approx(utilization, rel=1e-4)
  assert r['sampling']['fits'] and r['sampling']['estimated_batch_s'] > 0
  assert 'estimated s per iteration' in proc.stdout


@pytest.mark.slow
def test_aot_refuses_a_batch_that_does_not_fit_naming_the_largest_that_does():
  """A GPU host whose allocator may hold only 2.5 MiB per GPU (the step of
  these narrow networks needs 1.4 MiB at 1 image per device, 4.9 MiB at
  8): batch 64 does not fit; the error is one line naming the largest batch
  that does. The search's progress lines show that batch compiled and within
  the 2.5 MiB, and 8 more (one per device) compiled and beyond them."""
  usable = 2.5 * 2**20
  env = device_env(1)
  env['XLA_PYTHON_CLIENT_MEM_FRACTION'] = repr(usable / (80 * 2**30))
  proc = _aot(
      *TINY_AOT,
      '--topology=8xH100',
      '--config.batch_size=64',
      '--nosampling',
      env=env,
  )
  assert proc.returncode == 1, proc.stdout
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1, proc.stderr
  assert 'batch_size=64 does not fit on 8xH100' in lines[0]
  largest = int(lines[0].split('--config.batch_size=')[1].rstrip('.'))
  assert 8 <= largest < 64 and largest % 8 == 0
  compiled_batches = {
      int(m.group(1)): (float(m.group(2)) * 2**30, m.group(3) == 'fits')
      for m in re.finditer(
          r'batch (\d+) needs ([0-9.e+-]+) GiB per device: (fits|does not fit)',
          proc.stdout,
      )
  }
  # The needs are printed to 3 significant digits: 0.5% of a need.
  need, fits = compiled_batches[largest]
  assert fits and need <= usable * 1.005
  if largest + 8 < 64:  # else the refused batch itself
    need, fits = compiled_batches[largest + 8]
    assert not fits and need > usable * 0.995


def test_aot_refuses_a_json_path_before_compiling(tmp_path):
  """A --json file that cannot be written is refused in one line before
  the compile (which takes minutes for a large config), not after it."""
  for path, message in (
      (tmp_path / 'missing' / 'r.json', 'does not exist; create it first'),
      (tmp_path, 'is a directory'),
  ):
    proc = _aot(*TINY_AOT, f'--json={path}')
    assert proc.returncode == 1
    assert message in proc.stderr.strip().splitlines()[-1]
    assert 'Compiling' not in proc.stdout


def test_aot_names_bad_flags():
  proc = _aot(*TINY_AOT, '--topology=v5litepod-8', '--num_devices=8')
  assert proc.returncode == 1
  assert '--num_devices=8 is for --topology=cpu' in proc.stderr
  proc = _aot(*TINY_AOT, '--topology=v9-8')
  assert proc.returncode == 1
  assert "unknown TPU generation 'v9'" in proc.stderr
