r"""Speed of the residual Langevin step and chain of each paper hat network.

  python benchmarks/langevin_speed.py                    # CPU defaults
  python benchmarks/langevin_speed.py --networks=ebm32 --batch=128 --steps=50
  python benchmarks/langevin_speed.py --dtypes=float32,bfloat16 --unroll=1,5

For each hat network of the paper (docs/official_release.md §7.1: 32 px ngf 256
= CIFAR-10, 64 px ngf 1024 = CelebA, 128 px ngf 1024 = ImageNet, 128 px ngf 2048
= the scaled ImageNet net) it compiles and times

  * one Langevin step y <- y - clip((eps^2/2T) grad H(G(z) + y)) + eps xi,
    timed as half of a 2-step chain (`langevin.residual_langevin`; a
    1-step program compiled alone runs 3x slower on XLA:CPU, which lays
    out its transposed kernels differently: docs/performance.md), and
  * the K-step chain as training runs it (the `langevin_unroll` of the
    config: fully unrolled on CPU, rolled elsewhere),

on random float32 images standing in for G(z) (the chain's cost does not
depend on them). It prints images x steps per second, the FLOPs of a step
from XLA's cost analysis (a chain's count is K times a step's: XLA counts a
while-loop body once, whatever its trip count), the achieved FLOP/s, and
that as a fraction of the `jnp.dot` peak it
measures first in the same dtype. Writes JSON (--json).
"""

import argparse
import dataclasses
import functools

import common  # pylint: disable=g-bad-import-order  (sets XLA flags first)

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

from hatebm_jax.hat_ebm import langevin  # pylint: disable=g-import-not-at-top
from hatebm_jax.modes import synthesis  # pylint: disable=g-import-not-at-top

# name: (config, hat-network forward GMAC per image, docs/official_release.md
# §7.1)
NETWORKS = {
    'ebm32': ('cifar10_synth', 1.081),
    'ebm64': ('celeba_synth', 1.098),
    'ebm128': ('imagenet_synth', 4.693),
    'ebm128x2048': ('imagenet_scaled', 18.714),
}
CPU_BATCH = {'ebm32': 32, 'ebm64': 16, 'ebm128': 4, 'ebm128x2048': 2}
ACCELERATOR_BATCH = {
    'ebm32': 128,
    'ebm64': 128,
    'ebm128': 64,
    'ebm128x2048': 32,
}


@functools.partial(jax.jit, static_argnums=(0, 5))
def _chain(model, hat_params, x_gen, y0, key, sampler):
  frozen = jax.lax.stop_gradient(hat_params)
  y, _ = langevin.residual_langevin(
      lambda x: model.energy(frozen, x), x_gen, y0, key, sampler
  )
  return y


def benchmark(config, network, repeats, peaks):
  """One row: the step and the chain of `network` with `config`'s batch,
  K, compute dtype and unroll."""
  config_name, gmac = NETWORKS[network]
  batch, steps, dtype = (
      config.batch_size,
      config.mcmc_steps,
      config.compute_dtype,
  )
  model = synthesis.SynthesisMode.from_config(config)
  hat_params, _ = jax.jit(model.hat.init)(jax.random.PRNGKey(0))
  shape = (batch,) + tuple(config.image_dims)
  x_gen = jax.random.uniform(jax.random.PRNGKey(1), shape, minval=-1.0)
  y0 = jnp.zeros(shape)
  key = jax.random.PRNGKey(2)
  sampler = model.sampler
  two = dataclasses.replace(sampler, num_steps=2, unroll=True)
  args = (model, hat_params, x_gen, y0, key)

  step_c = _chain.lower(*args, two).compile()
  chain_c = _chain.lower(*args, sampler).compile()
  step_flops = common.flops(step_c) / 2
  # XLA counts a while body once (and may unroll a short loop itself), so
  # the chain's count is K steps' (its set-up is a few key splits).
  chain_flops = steps * step_flops
  _, t_step = common.time_call(lambda: step_c(*args[1:]), repeats)
  t_step /= 2
  first, t_chain = common.time_call(
      lambda: chain_c(*args[1:]), max(1, repeats // 2)
  )
  peak = peaks[dtype]['gflops']
  step_gflops = step_flops / t_step / 1e9
  chain_gflops = chain_flops / t_chain / 1e9
  memory = common.memory(chain_c)
  return {
      'network': network,
      'config': config_name,
      'hat_params': sum(x.size for x in jax.tree.leaves(hat_params)),
      'batch': batch,
      'steps': steps,
      'dtype': dtype,
      'unroll': common.unroll_name(sampler.unroll),
      'step_s': t_step,
      'chain_s': t_chain,
      'chain_first_call_s': first,
      'image_steps_per_s': batch * steps / t_chain,
      'xla_gflop_per_image_step': step_flops / batch / 1e9,
      'facts_gflop_per_image_step': 4 * gmac,
      'chain_xla_flops_raw': common.flops(chain_c),
      'chain_flops': chain_flops,
      'step_gflops_per_s': step_gflops,
      'chain_gflops_per_s': chain_gflops,
      'step_fraction_of_matmul_peak': step_gflops / peak,
      'chain_fraction_of_matmul_peak': chain_gflops / peak,
      'chain_peak_memory_gib': memory.get('peak_gib'),
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--networks', default=','.join(NETWORKS))
  parser.add_argument(
      '--batch',
      default='',
      help='one batch for all networks, or one per network; '
      'default: per network and backend (see CPU_BATCH)',
  )
  parser.add_argument(
      '--steps',
      type=int,
      default=None,
      help='K of the chain (default 10 on CPU, 50 elsewhere)',
  )
  parser.add_argument(
      '--dtypes',
      default='',
      help='compute dtypes (default float32 on CPU, '
      'float32,bfloat16 elsewhere)',
  )
  parser.add_argument(
      '--unroll',
      default='-1',
      help='langevin_unroll values to compare (-1 = the '
      'backend default, 0 = fully unrolled)',
  )
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--json', default=common.json_path('langevin_speed.json'))
  args = parser.parse_args()

  cpu = jax.default_backend() == 'cpu'
  networks = args.networks.split(',')
  for n in networks:
    if n not in NETWORKS:
      parser.error(f'--networks: {n!r} is not one of {list(NETWORKS)}.')
  batches = (
      common.parse_ints(parser, 'batch', args.batch, 1)
      if args.batch
      else [(CPU_BATCH if cpu else ACCELERATOR_BATCH)[n] for n in networks]
  )
  if len(batches) == 1:
    batches *= len(networks)
  if len(batches) != len(networks):
    parser.error(
        f'--batch gives {len(batches)} values for ' f'{len(networks)} networks.'
    )
  steps = (10 if cpu else 50) if args.steps is None else args.steps
  dtypes = (args.dtypes or ('float32' if cpu else 'float32,bfloat16')).split(
      ','
  )
  unrolls = common.parse_ints(parser, 'unroll', args.unroll, -1)
  if args.repeats < 0:
    parser.error(f'--repeats={args.repeats} must be >= 0.')
  # Every setting is checked before anything is timed.
  configs = [
      (
          network,
          common.checked_config(
              parser,
              NETWORKS[network][0],
              batch_size=batch,
              mcmc_steps=steps,
              compute_dtype=dtype,
              langevin_unroll=unroll,
          ),
      )
      for network, batch in zip(networks, batches)
      for dtype in dtypes
      for unroll in unrolls
  ]

  info = common.machine()
  print(common.describe(info), flush=True)
  peaks = {d: common.matmul_peak(jnp.dtype(d)) for d in dtypes}
  for d, p in peaks.items():
    print(
        f"# jnp.dot {d} peak: {p['gflops']:.1f} GFLOP/s "
        f"({p['size']}x{p['size']})",
        flush=True,
    )
  print(
      '# step: half of a 2-step fully unrolled chain; chain: K steps with '
      'the given unroll',
      flush=True,
  )
  common.print_header(
      (
          'network',
          'hat params',
          'B',
          'K',
          'dtype',
          'unroll',
          's / step',
          's / chain',
          'image-steps / s',
          'GFLOP / image-step (XLA; facts)',
          'step GFLOP/s (of peak)',
          'chain GFLOP/s (of peak)',
          'chain peak GiB',
      )
  )
  rows = []
  for network, config in configs:
    r = benchmark(config, network, args.repeats, peaks)
    rows.append(r)
    common.print_row(
        (
            r['network'],
            f"{r['hat_params'] / 1e6:.1f}M",
            r['batch'],
            r['steps'],
            r['dtype'],
            r['unroll'],
            f"{r['step_s']:.3f}",
            f"{r['chain_s']:.2f}",
            f"{r['image_steps_per_s']:.1f}",
            f"{r['xla_gflop_per_image_step']:.2f} "
            f"({r['facts_gflop_per_image_step']:.2f})",
            f"{r['step_gflops_per_s']:.0f} "
            f"({r['step_fraction_of_matmul_peak']:.0%})",
            f"{r['chain_gflops_per_s']:.0f} "
            f"({r['chain_fraction_of_matmul_peak']:.0%})",
            f"{r['chain_peak_memory_gib']:.3g}",
        )
    )
    common.write_json(
        args.json,
        {'machine': info, 'matmul_peak': peaks, 'results': rows},
        quiet=True,
    )
  print(f'# wrote {args.json}')


if __name__ == '__main__':
  main()
