r"""Time per training iteration and per Langevin step of synthesis configs.

  python benchmarks/train_speed.py                      # both configs below
  python benchmarks/train_speed.py --configs=fashion_mnist_synth --repeats=20

For each config: the compiled synthesis training step (Langevin chain, hat
update, generator update with the replay bank) and the K-step chain alone,
timed after one warm-up call, and the step as the training loop runs it
(`train.jit_train_step`: one-device mesh, donated state, divergence guard),
to show what the guard costs; prints a table and writes JSON. The replay
bank is shrunk to two batches (`--bank_batches`) so that start-up does not
spend minutes filling it; its size does not change the cost of a step.
FLOP counts are those of the facts sheet (§7.2): per image, a hat forward
costs F_H and a Langevin step about 2 F_H.
"""

import argparse
import json
import os
import platform
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
from hatebm_jax import xla_flags  # pylint: disable=g-import-not-at-top

xla_flags.apply()  # the same XLA:CPU setting as hatebm_jax.main

import jax  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from hatebm_jax import config_base  # pylint: disable=g-import-not-at-top
from hatebm_jax import parallel  # pylint: disable=g-import-not-at-top
from hatebm_jax import synthesis  # pylint: disable=g-import-not-at-top
from hatebm_jax import train  # pylint: disable=g-import-not-at-top


def _time(fn, repeats):
  jax.block_until_ready(fn())  # compile and warm up
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def _time_loop_step(model, config, batch, repeats):
  """Median seconds of the training loop's own step (guard included); the
  state is donated, so each call continues from the previous one."""
  mesh = parallel.make_mesh(1)
  abstract = train.abstract_state(model, config)
  shardings = parallel.state_shardings(abstract, mesh)
  step = train.jit_train_step(model, mesh, shardings,
                              config.divergence_max_energy)
  carry = [jax.jit(model.init, out_shardings=shardings)(
      jax.random.PRNGKey(0)), train.init_health(model, config, abstract,
                                                mesh)[0]]

  def call():
    with jax.set_mesh(mesh):
      carry[0], metrics, carry[1] = step(carry[0], batch, carry[1])
    return metrics

  return _time(call, repeats)


def benchmark(name, repeats, bank_batches):
  config = config_base.load_config_file(
      os.path.join(ROOT, 'configs', 'x'), name)
  config.persistent_size = bank_batches * config.batch_size
  model = synthesis.SynthesisModel.from_config(config)
  state = jax.jit(model.init)(jax.random.PRNGKey(0))
  batch = jax.random.uniform(jax.random.PRNGKey(1), (config.batch_size,) +
                             tuple(config.image_dims), minval=-1.0)
  step = jax.jit(model.train_step)
  z = jax.random.normal(jax.random.PRNGKey(2),
                        (config.batch_size,) + model.latent_shape)
  chain = jax.jit(model.sample)
  start = time.perf_counter()
  jax.block_until_ready(step(state, batch))
  compile_s = time.perf_counter() - start
  t_iter = _time(lambda: step(state, batch)[1], repeats)
  t_chain = _time(lambda: chain(state.hat_params, state.gen_params,
                                state.gen_frozen, z, jax.random.PRNGKey(3))[1],
                  repeats)
  t_loop = _time_loop_step(model, config, batch, repeats)
  k, b = config.mcmc_steps, config.batch_size
  return {
      'config': name, 'batch_size': b, 'mcmc_steps': k,
      'langevin_unroll': str(model.sampler.unroll),
      'first_call_s': compile_s, 'iteration_s': t_iter,
      'loop_iteration_s': t_loop, 'guard_overhead': t_loop / t_iter - 1,
      'chain_s': t_chain, 'langevin_step_s': t_chain / k,
      'image_steps_per_s': b * k / t_chain,
      'iterations_per_hour': 3600.0 / t_iter,
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--configs', default='fashion_mnist_synth,cifar10_synth')
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--bank_batches', type=int, default=2)
  parser.add_argument('--json', default='benchmarks/train_speed.json')
  args = parser.parse_args()
  machine = (f'{platform.processor() or platform.machine()}, '
             f'{os.cpu_count()} CPUs, jax {jax.__version__}, '
             f'{jax.devices()[0].device_kind}')
  print(f'# {machine}')
  header = ('config', 'B', 'K', 'unroll', 'first call s', 's/iteration',
            's/iteration in the loop (guard)', 's/Langevin step',
            'image-steps/s')
  print(' | '.join(header))
  rows = []
  for name in args.configs.split(','):
    r = benchmark(name, args.repeats, args.bank_batches)
    rows.append(r)
    print(' | '.join([r['config'], str(r['batch_size']), str(r['mcmc_steps']),
                      r['langevin_unroll'], f"{r['first_call_s']:.1f}",
                      f"{r['iteration_s']:.3f}",
                      f"{r['loop_iteration_s']:.3f} ({r['guard_overhead']:+.1%})",
                      f"{r['langevin_step_s']:.4f}",
                      f"{r['image_steps_per_s']:.1f}"]), flush=True)
  with open(args.json, 'w') as f:
    json.dump({'machine': machine, 'results': rows}, f, indent=1)
  print(f'# wrote {args.json}')


if __name__ == '__main__':
  main()
