"""Properties that make training fast: no recompilation, no stored chain,
the minimal FLOP count, and the bfloat16 compute option.

Speeds themselves are measured by the scripts in benchmarks/, never here.
"""

import contextlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from hatebm_jax.hat_ebm import langevin
from hatebm_jax.infra import parallel
from hatebm_jax.modes import synthesis
from hatebm_jax import train
from hatebm_jax import validation

LOWERING = '/jax/core/compile/jaxpr_to_mlir_module_duration'


@contextlib.contextmanager
def count_lowerings():
  """Counts the programs JAX lowers to XLA (every jit compile, persistent
  cache hit or not) inside the block; yields the list of their names."""
  names = []

  def listener(event, duration, **kwargs):
    del duration
    if event == LOWERING:
      names.append(kwargs.get('fun_name', '?'))

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield names
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


def test_train_step_compiles_once():
  """The training loop's step (mesh, donated state, divergence guard) runs
  steps 2..5 without compiling anything."""
  config = tiny_config()
  mesh = parallel.make_mesh(1)
  program = train.Program.build(config, mesh)
  step = program.step
  state = jax.jit(program.mode.init, out_shardings=program.shardings)(
      jax.random.PRNGKey(0)
  )
  health = program.fresh_health(mesh)
  images = jax.random.uniform(
      jax.random.PRNGKey(1), (8, 32, 32, 1), minval=-1.0
  )
  with jax.set_mesh(mesh):
    with count_lowerings() as first:
      state, _, health = step(state, images, health)
    with count_lowerings() as later:
      for _ in range(4):
        state, metrics, health = step(state, images, health)
      jax.block_until_ready(metrics)
  assert first, 'the first step must compile (the counter is live)'
  assert later == []
  assert int(state.step) == 5


@pytest.mark.slow
def test_training_loop_compiles_nothing_per_step(tmp_path):
  """A whole run through `train_and_evaluate`, with metrics, grids and
  checkpoints every step or two, compiles the same programs whether it
  runs 2 or 6 steps: nothing is compiled again as steps go by."""
  flags = dict(info_freq=1, plot_freq=2, checkpoint_freq=2, eval_freq=0)
  train.train_and_evaluate(
      tiny_config(num_training_steps=2, **flags), str(tmp_path / 'warm')
  )
  counts = {}
  for steps in (2, 6):
    with count_lowerings() as names:
      train.train_and_evaluate(
          tiny_config(num_training_steps=steps, **flags),
          str(tmp_path / f'run{steps}'),
      )
    counts[steps] = sorted(names)
  assert counts[2], 'a fresh model must be compiled (the counter is live)'
  assert counts[6] == counts[2]


def _synthesis_step_memory(num_steps):
  config = tiny_config(mcmc_steps=num_steps, langevin_unroll=0)
  model = synthesis.SynthesisMode.from_config(config)
  state = jax.eval_shape(model.init, jax.random.PRNGKey(0))
  images = jax.ShapeDtypeStruct((8, 32, 32, 1), jnp.float32)
  compiled = (
      jax.jit(model.train_step, donate_argnums=0).lower(state, images).compile()
  )
  return compiled.memory_analysis().temp_size_in_bytes, compiled


BATCH_BYTES = 8 * 32 * 32 * 1 * 4  # one batch of residuals y


@pytest.mark.slow
def test_chain_memory_does_not_grow_with_k():
  """The fully unrolled chain (the CPU default) keeps nothing per step:
  from K = 3 to K = 12 the temporaries of a synthesis iteration grow by
  less than one batch of images in all (storing y_k, or drawing each
  step's noise ahead, costs 9 batches or more)."""
  small, _ = _synthesis_step_memory(3)
  large, _ = _synthesis_step_memory(12)
  assert large - small < BATCH_BYTES, (small, large)


@pytest.mark.slow
def test_joint_chain_memory_does_not_grow_with_k():
  """The same for the joint chain (two noise draws per step: z and y)."""
  config = tiny_config(update_latents=True)
  model = synthesis.SynthesisMode.from_config(config)
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0))

  def temporaries(k):
    sampler = langevin.LangevinConfig.from_config(
        config, num_steps=k, unroll=True
    )

    def chain(hat, gen, frozen, z):
      return langevin.joint_langevin(
          lambda v: model.energy(hat, v),
          lambda u: model.generate(gen, frozen, u),
          z,
          jnp.zeros((8, 32, 32, 1)),
          jax.random.PRNGKey(0),
          sampler,
      )[:3]

    return (
        jax.jit(chain)
        .lower(
            params.hat_params,
            params.gen_params,
            params.gen_frozen,
            jax.ShapeDtypeStruct((8, 16), jnp.float32),
        )
        .compile()
        .memory_analysis()
        .temp_size_in_bytes
    )

  small, large = temporaries(3), temporaries(12)
  assert large - small < BATCH_BYTES, (small, large)


def test_chain_noise_is_the_step_keys_draw():
  """`chain_noise` draws exactly `per_example_normal(step_key)` for a
  finite state (the data dependency changes nothing but the schedule)."""
  key = jax.random.PRNGKey(3)
  y = jax.random.normal(jax.random.PRNGKey(4), (5, 4, 4, 2))
  np.testing.assert_array_equal(
      jax.jit(langevin.chain_noise)(key, y),
      parallel.per_example_normal(key, y.shape),
  )


def test_synthesis_iteration_does_the_minimal_flops():
  """Cost analysis: an iteration costs 4 F_G + (2K+6) F_H per image (facts
  §7.2: G(z) once per chain), plus up to 3% for noise draws, norms and
  Adam at these tiny widths; G(z) at every Langevin step would add K F_G
  (36% here). At least (2K+5) F_H + 3 F_G: the chain, the hat update and
  the generator update all run."""
  k = 4
  _, compiled = _synthesis_step_memory(k)
  config = tiny_config(mcmc_steps=k)
  model = synthesis.SynthesisMode.from_config(config)
  state = jax.eval_shape(model.init, jax.random.PRNGKey(0))
  x = jax.ShapeDtypeStruct((8, 32, 32, 1), jnp.float32)
  z = jax.ShapeDtypeStruct((8, 16), jnp.float32)

  def flops(fn, *args):
    return jax.jit(fn).lower(*args).compile().cost_analysis()['flops'] / 8

  f_h = flops(model.energy, state.hat_params, x)
  f_g = flops(model.generate, state.gen_params, state.gen_frozen, z)
  per_image = compiled.cost_analysis()['flops'] / 8
  minimal = 4 * f_g + (2 * k + 6) * f_h
  assert (2 * k + 5) * f_h + 3 * f_g < per_image <= 1.03 * minimal, (
      per_image,
      f_h,
      f_g,
  )


def test_joint_chain_runs_the_generator_once_per_step():
  """The joint chain's G forward of each step feeds both sub-steps: its
  cost is (2K + 1) F_G + 4K F_H per image (docs/official_release.md §7.2
  minimal), plus 1-2% for the noise draws and norms at these tiny widths; a
  second G forward
  per step (the official code's (3K + 1) F_G) would add 30% here."""
  k = 4
  config = tiny_config(mcmc_steps=k, update_latents=True)
  model = synthesis.SynthesisMode.from_config(config)
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0))
  z = jax.ShapeDtypeStruct((8, 16), jnp.float32)
  x = jax.ShapeDtypeStruct((8, 32, 32, 1), jnp.float32)
  sampler = langevin.LangevinConfig.from_config(config, unroll=True)

  def chain(hat, gen, frozen, z):
    return langevin.joint_langevin(
        lambda v: model.energy(hat, v),
        lambda u: model.generate(gen, frozen, u),
        z,
        jnp.zeros((8, 32, 32, 1)),
        jax.random.PRNGKey(0),
        sampler,
    )[:3]

  def flops(fn, *args):
    return jax.jit(fn).lower(*args).compile().cost_analysis()['flops'] / 8

  f_h = flops(model.energy, params.hat_params, x)
  f_g = flops(model.generate, params.gen_params, params.gen_frozen, z)
  per_image = flops(
      chain, params.hat_params, params.gen_params, params.gen_frozen, z
  )
  assert per_image <= 1.02 * ((2 * k + 1) * f_g + 4 * k * f_h), (
      per_image,
      f_h,
      f_g,
  )
  assert per_image > 2 * k * f_g + 4 * k * f_h - 2 * f_g


@pytest.mark.slow
def test_bfloat16_compute_keeps_float32_state_and_energies():
  """compute_dtype='bfloat16': networks compute in bfloat16, while
  parameters, their Adam moments, the Langevin residual, energies and
  losses stay float32, and the energies agree with float32 compute to
  bfloat16 precision."""
  c32 = tiny_config()
  c16 = tiny_config(compute_dtype='bfloat16')
  validation.validate(c16)
  m32 = synthesis.SynthesisMode.from_config(c32)
  m16 = synthesis.SynthesisMode.from_config(c16)
  state = jax.jit(m32.init)(jax.random.PRNGKey(0))
  x = jax.random.uniform(jax.random.PRNGKey(1), (8, 32, 32, 1), minval=-1.0)
  e32 = m32.energy(state.hat_params, x)
  e16 = m16.energy(state.hat_params, x)
  assert e16.dtype == jnp.float32
  scale = float(jnp.abs(e32).max())
  # bfloat16 keeps 8 significant bits: each rounding is up to 2⁻⁸ = 0.4%
  # relative; the tiny hat network rounds activations at about five places
  # (input, convolutions, dense), so 2% of the energy scale holds their sum.
  np.testing.assert_allclose(e16, e32, atol=0.02 * scale)
  jaxpr = str(jax.make_jaxpr(m16.energy)(state.hat_params, x))
  assert 'bf16[8,32,32' in jaxpr and 'conv_general_dilated' in jaxpr
  assert 'bf16[8,32,32' not in str(
      jax.make_jaxpr(m32.energy)(state.hat_params, x)
  )
  grad = jax.grad(lambda v: m16.energy(state.hat_params, v).sum())(x)
  assert grad.dtype == jnp.float32
  g32 = m32.generate(state.gen_params, state.gen_frozen, jnp.ones((2, 16)))
  g16 = m16.generate(state.gen_params, state.gen_frozen, jnp.ones((2, 16)))
  assert g16.dtype == jnp.float32
  # Generator outputs lie in [-1, 1] (tanh); bfloat16's spacing is at most
  # 2⁻⁸ there and about six roundings (layers, batch norm) add up: 0.05.
  np.testing.assert_allclose(g16, g32, atol=0.05)
  assert not np.array_equal(g16, g32)

  new_state, metrics = jax.jit(m16.train_step)(state, x)
  for path, leaf in jax.tree_util.tree_leaves_with_path(new_state):
    if jnp.issubdtype(leaf.dtype, jnp.floating):
      assert leaf.dtype == jnp.float32, jax.tree_util.keystr(path)
  for name, value in metrics.items():
    assert value.dtype == jnp.float32 and np.isfinite(value), name
  _, y, _ = m16.sample(
      state.hat_params,
      state.gen_params,
      state.gen_frozen,
      jnp.ones((2, 16)),
      jax.random.PRNGKey(2),
  )
  assert y.dtype == jnp.float32


@pytest.mark.parametrize(
    'dtype, mode, message',
    [
        ('float16', 'synthesis', 'float16 overflows: .* 1/T = 1/mcmc_temp'),
        (
            'float64',
            'synthesis',
            re.escape("choose 'float32' or 'bfloat16'"),
        ),
        ('bfloat16', 'sngan', "the 'sngan' mode trains in float32"),
    ],
)
def test_compute_dtype_refused(dtype, mode, message):
  with pytest.raises(ValueError, match=message):
    validation.validate(tiny_config(compute_dtype=dtype, mode=mode))
