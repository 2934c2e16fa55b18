r"""Seconds and FLOPs of one full training iteration, for every mode.

  python benchmarks/train_speed.py                         # quick-start configs
  python benchmarks/train_speed.py --configs=cifar10_synth \
      --settings=32x10,64x20,128x50 --repeats=1            # vs the official code
  python benchmarks/train_speed.py --configs=fashion_mnist_synth --loop

For each config (and each batch x K setting, default the config's own) it
builds the model of the config's mode (synthesis, joint, autoencoder,
SN-GAN), compiles `model.train_step` once (timed), times it (median of
--repeats calls after a warm-up call), and reads its FLOPs from XLA's cost
analysis.
The Langevin loops are fully unrolled on CPU, so the count is exact there;
elsewhere the same program is compiled unrolled once for the count. For the
Hat EBM modes it also measures F_H and F_G (one forward pass of the hat
network and of the generator, per image, cost analysis) and prints the
iteration's FLOPs per image beside the minimal count of docs/official_release.md
(§7.2): synthesis 4 F_G + (2K+6) F_H (G(z) once per chain), joint
(2K+2) F_G + (4K+6) F_H (one G forward per Langevin step). The replay bank
is shrunk to two batches (--bank_batches): its size does not change the
cost of a step, only the minutes spent filling it. Joint configs run over a
randomly initialised generator (its weights do not change the cost).
With --loop it also times the step as the training loop runs it
(`train.Program`: mesh, donated state, divergence guard).
"""

import argparse
import time

import common  # pylint: disable=g-bad-import-order  (sets XLA flags first)

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

from hatebm_jax.modes import joint  # pylint: disable=g-import-not-at-top
from hatebm_jax import modes  # pylint: disable=g-import-not-at-top
from hatebm_jax.infra import parallel
from hatebm_jax.modes import synthesis  # pylint: disable=g-import-not-at-top
from hatebm_jax import train  # pylint: disable=g-import-not-at-top

# The official TF2 release on this project's CPU machine, seconds per
# iteration (docs/performance.md).
OFFICIAL_S = {
    ('cifar10_synth', 32, 10): 15.2,
    ('cifar10_synth', 64, 20): 51.8,
    ('cifar10_synth', 128, 50): 234.0,
}
DEFAULT_CONFIGS = (
    'fashion_mnist_synth,fashion_mnist_refine,'
    'fashion_mnist_ae,fashion_mnist_sngan'
)


def _config(parser, name, batch, steps, bank_batches, unroll=None):
  """configs/<name>.py with a BxK setting (None: the config's own)."""
  # Joint runs are timed over a random generator (_init); the key only has
  # to be set for validation, and other modes ignore it.
  overrides = {'gen_weights': '(not read: random generator)'}
  if batch is not None:
    overrides['batch_size'] = batch
  if steps is not None:
    overrides['mcmc_steps'] = steps
  if unroll is not None:
    overrides['langevin_unroll'] = unroll
  config = common.checked_config(parser, name, **overrides)
  with config.unlocked():
    config.persistent_size = bank_batches * config.batch_size
  return config


def _init(model, config):
  key = jax.random.PRNGKey(config.seed)
  if isinstance(model, joint.JointMode):
    return jax.jit(model.init)(
        key, *jax.jit(model.gen.init)(jax.random.PRNGKey(1))
    )
  return jax.jit(model.init)(key)


def _forward_flops(model, state, config):
  """(F_H, F_G) per image from the cost analysis (None where absent)."""
  b = config.batch_size
  x = jnp.zeros((b,) + tuple(config.image_dims))
  z = jnp.zeros((b,) + tuple(model.latent_shape))
  f_h = f_g = None
  if model.capabilities.energy:
    f_h = (
        common.flops(jax.jit(model.energy).lower(state.hat_params, x).compile())
        / b
    )
  f_g = (
      common.flops(
          jax.jit(model.generate)
          .lower(state.gen_params, state.gen_frozen, z)
          .compile()
      )
      / b
  )
  return f_h, f_g


def _minimal(model, config, f_h, f_g):
  """The official release's (docs/official_release.md) minimal FLOPs per image (§7.2), or None."""
  k = config.mcmc_steps
  if isinstance(model, synthesis.SynthesisMode):
    return 4 * f_g + (2 * k + 6) * f_h, f'4 F_G + {2 * k + 6} F_H'
  if isinstance(model, joint.JointMode):
    return (
        (2 * k + 2) * f_g + (4 * k + 6) * f_h,
        f'{2 * k + 2} F_G + {4 * k + 6} F_H',
    )
  return None, ''


def _loop_step_time(config, state, batch, repeats):
  """Median seconds of the training loop's step (`train.Program`: the state
  is donated, so each call continues from the previous one)."""
  mesh = parallel.make_mesh(1)
  program = train.Program.build(config, mesh)
  carry = [jax.device_put(state, program.shardings), program.fresh_health(mesh)]

  def call():
    with jax.set_mesh(mesh):
      carry[0], metrics, carry[1] = program.step(carry[0], batch, carry[1])
    return metrics

  return common.time_call(call, repeats)[1]


def benchmark(parser, name, batch, steps, repeats, bank_batches, loop, peak):
  """One row: one training iteration of configs/<name>.py."""
  config = _config(parser, name, batch, steps, bank_batches)
  model = modes.build(config)
  state = _init(model, config)
  images = model.images_per_step
  data = jax.random.uniform(
      jax.random.PRNGKey(1), (images,) + tuple(config.image_dims), minval=-1.0
  )
  start = time.perf_counter()
  step = jax.jit(model.train_step).lower(state, data).compile()
  compile_s = time.perf_counter() - start
  first, seconds = common.time_call(lambda: step(state, data)[1], repeats)
  if jax.default_backend() == 'cpu' or config.mode in ('autoencoder',):
    flops = common.flops(step)
  else:  # count on the fully unrolled program (rolled loops count once)
    unrolled = modes.build(_config(parser, name, batch, steps, bank_batches, 0))
    flops = common.flops(
        jax.jit(unrolled.train_step).lower(state, data).compile()
    )
  f_h, f_g = _forward_flops(model, state, config)
  minimal, formula = _minimal(model, config, f_h, f_g)
  b, k = config.batch_size, config.mcmc_steps
  official = OFFICIAL_S.get((name, b, k))
  row = {
      'config': name,
      'mode': config.mode,
      'batch': b,
      'mcmc_steps': k if config.mode in ('synthesis', 'joint') else None,
      'unroll': common.unroll_name(
          getattr(getattr(model, 'sampler', None), 'unroll', '')
      ),
      'compile_s': compile_s,
      'first_call_s': first,
      'iteration_s': seconds,
      'iteration_tflop': flops / 1e12,
      'gflop_per_image': flops / b / 1e9,
      'f_h_gflop': f_h and f_h / 1e9,
      'f_g_gflop': f_g / 1e9,
      'minimal_gflop_per_image': minimal and minimal / 1e9,
      'minimal_formula': formula,
      'within_minimal': None if minimal is None else flops / b <= minimal,
      'gflops_per_s': flops / seconds / 1e9,
      'fraction_of_matmul_peak': flops / seconds / 1e9 / peak,
      'official_s': official,
      'speedup_vs_official': official and official / seconds,
  }
  if loop:
    row['loop_iteration_s'] = _loop_step_time(config, state, data, repeats)
    row['guard_overhead'] = row['loop_iteration_s'] / seconds - 1
  return row


def _settings(parser, text):
  """[(B, K), ...] from 'BxK,...'; [(None, None)] (the config's own) for
  an empty text."""
  if not text:
    return [(None, None)]
  out = []
  for item in text.split(','):
    b, x, k = item.partition('x')
    if not (x and b.isdigit() and k.isdigit() and int(b) and int(k)):
      parser.error(
          f'--settings: {item!r} is not BxK with integers B, K >= 1 '
          '(e.g. 32x10).'
      )
    out.append((int(b), int(k)))
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--configs', default=DEFAULT_CONFIGS)
  parser.add_argument(
      '--settings',
      default='',
      help='BxK pairs, e.g. 32x10,64x20,128x50 (default: '
      "each config's own batch_size and mcmc_steps)",
  )
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--bank_batches', type=int, default=2)
  parser.add_argument(
      '--loop',
      action='store_true',
      help="also time the training loop's own step",
  )
  parser.add_argument('--json', default=common.json_path('train_speed.json'))
  args = parser.parse_args()
  if args.repeats < 0 or args.bank_batches < 1:
    parser.error('--repeats must be >= 0 and --bank_batches >= 1.')
  runs = [
      (name, b, k)
      for name in args.configs.split(',')
      for b, k in _settings(parser, args.settings)
  ]
  for name, b, k in runs:  # every setting is checked before anything runs
    _config(parser, name, b, k, args.bank_batches)
  info = common.machine()
  print(common.describe(info), flush=True)
  peak = common.matmul_peak()
  print(f"# jnp.dot float32 peak: {peak['gflops']:.1f} GFLOP/s", flush=True)
  common.print_header(
      (
          'config',
          'mode',
          'B',
          'K',
          'compile s',
          's / iteration',
          'TFLOP / iteration (XLA)',
          'GFLOP / image (minimal: formula)',
          'GFLOP/s (of peak)',
          'official s (speed-up)',
      )
  )
  rows = []
  for name, batch, steps in runs:
    r = benchmark(
        parser,
        name,
        batch,
        steps,
        args.repeats,
        args.bank_batches,
        args.loop,
        peak['gflops'],
    )
    rows.append(r)
    minimal = (
        ''
        if r['minimal_gflop_per_image'] is None
        else f" ({r['minimal_gflop_per_image']:.4g}: "
        f"{r['minimal_formula']})"
    )
    official = (
        ''
        if r['official_s'] is None
        else f"{r['official_s']:.1f} ({r['speedup_vs_official']:.2f}x)"
    )
    loop = (
        ''
        if 'loop_iteration_s' not in r
        else f" [loop {r['loop_iteration_s']:.3f}, "
        f"{r['guard_overhead']:+.1%}]"
    )
    common.print_row(
        (
            r['config'],
            r['mode'],
            r['batch'],
            r['mcmc_steps'] or '',
            f"{r['compile_s']:.1f}",
            f"{r['iteration_s']:.3f}{loop}",
            f"{r['iteration_tflop']:.4g}",
            f"{r['gflop_per_image']:.4g}{minimal}",
            f"{r['gflops_per_s']:.0f} ({r['fraction_of_matmul_peak']:.0%})",
            official,
        )
    )
    common.write_json(
        args.json,
        {'machine': info, 'matmul_peak': peak, 'results': rows},
        quiet=True,
    )
  print(f'# wrote {args.json}')


if __name__ == '__main__':
  main()
