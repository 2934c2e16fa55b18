r"""Which XLA:CPU settings speed up the parts of a synthesis iteration.

  python benchmarks/xla_cpu_flags.py                  # cifar10_synth, B = 32
  python benchmarks/xla_cpu_flags.py --config=fashion_mnist_synth --batch=64

Each candidate $XLA_FLAGS value runs in its own process (XLA reads the flags
once) and times, on the config's networks: a Langevin step (half of a
2-step chain), the hat-network update on B positive and B negative samples,
the generator update on B bank pairs, and one forward pass of H and of G.
Prints seconds and GFLOP/s (XLA cost analysis) per part and the iteration
time they add up to at the config's K; writes JSON. The winner is what
`hatebm_jax/infra/xla_flags.py` sets.
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
YNN_OFF = '--xla_cpu_experimental_ynn_fusion_type='
CANDIDATES = {
    'XLA default': '',
    'YNNPACK fusions off (ours)': YNN_OFF,
    'YNNPACK off + XNNPACK graph fusion': (
        YNN_OFF + ' --xla_cpu_experimental_xnn_graph_fusion_mode='
        'XNN_GRAPH_FUSION_MODE_GREEDY'
    ),
    # Fails to compile with jax 0.10.2 ('partition compile failed'):
    'YNNPACK off + oneDNN dot/eltwise': (
        YNN_OFF + ' --xla_cpu_use_onednn=true '
        '--xla_cpu_experimental_onednn_fusion_type=dot,eltwise'
    ),
    'YNNPACK off + fast math': YNN_OFF + ' --xla_cpu_enable_fast_math=true',
}
PARTS = (
    'langevin_step',
    'hat_update',
    'gen_update',
    'hat_forward',
    'gen_forward',
)


def worker(config_name, batch, repeats):
  """Runs in the child: times each part, prints one JSON line."""
  sys.path.insert(0, os.path.dirname(HERE))
  import dataclasses  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from hatebm_jax import config_base  # pylint: disable=g-import-not-at-top
  from hatebm_jax.hat_ebm import langevin  # pylint: disable=g-import-not-at-top
  from hatebm_jax.hat_ebm import loss  # pylint: disable=g-import-not-at-top
  from hatebm_jax.modes import synthesis  # pylint: disable=g-import-not-at-top

  sys.path.insert(0, HERE)
  import common  # pylint: disable=g-import-not-at-top

  config = config_base.load_config_file(
      os.path.join(os.path.dirname(HERE), 'configs', 'x'), config_name
  )
  config.batch_size, config.persistent_size = batch, 2 * batch
  m = synthesis.SynthesisMode.from_config(config)
  st = jax.jit(m.init)(jax.random.PRNGKey(0))
  shape = (batch,) + tuple(config.image_dims)
  x = jax.random.uniform(jax.random.PRNGKey(1), shape, minval=-1.0)
  z = jax.random.normal(jax.random.PRNGKey(2), (batch,) + m.latent_shape)
  two = dataclasses.replace(m.sampler, num_steps=2, unroll=True)

  def chain(st, x):
    hat = jax.lax.stop_gradient(st.hat_params)
    return langevin.residual_langevin(
        lambda v: m.energy(hat, v),
        x,
        jnp.zeros_like(x),
        jax.random.PRNGKey(3),
        two,
    )[0]

  def hat_update(st, x):
    return loss.hat_update(
        m.hat_opt,
        m.energy,
        st.hat_params,
        st.hat_opt_state,
        x,
        x[::-1],
        m.sampler.temperature,
    )

  def gen_update(st, z, x):
    def loss(gp):
      return jnp.mean(jnp.square(m.generate(gp, st.gen_frozen, z) - x))

    grads = jax.grad(loss)(st.gen_params)
    updates, opt = m.gen_opt.update(grads, st.gen_opt_state, st.gen_params)
    return optax.apply_updates(st.gen_params, updates), opt

  parts = {
      'langevin_step': (chain, (st, x), 0.5),
      'hat_update': (hat_update, (st, x), 1.0),
      'gen_update': (gen_update, (st, z, x), 1.0),
      'hat_forward': (lambda st, x: m.energy(st.hat_params, x), (st, x), 1.0),
      'gen_forward': (
          lambda st, z: m.generate(st.gen_params, st.gen_frozen, z),
          (st, z),
          1.0,
      ),
  }
  out = {}
  for name, (fn, args, scale) in parts.items():
    compiled = jax.jit(fn).lower(*args).compile()
    _, seconds = common.time_call(lambda: compiled(*args), repeats)
    out[name] = {
        's': seconds * scale,
        'gflops': common.flops(compiled) / seconds / 1e9,
    }
  k = config.mcmc_steps
  out['iteration_s'] = (
      k * out['langevin_step']['s']
      + out['hat_update']['s']
      + out['gen_update']['s']
      + out['gen_forward']['s']
  )
  print('RESULT ' + json.dumps(out), flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', default='cifar10_synth')
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument(
      '--candidates',
      default='',
      help='indices into the candidate list (default all)',
  )
  parser.add_argument(
      '--json', default=os.path.join(HERE, 'xla_cpu_flags.json')
  )
  parser.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    worker(args.config, args.batch, args.repeats)
    return
  sys.path.insert(0, HERE)
  import common  # pylint: disable=g-import-not-at-top

  common.checked_config(
      parser,
      args.config,
      modes=('synthesis',),
      batch_size=args.batch,
      persistent_size=2 * max(args.batch, 1),
  )
  if args.repeats < 0:
    parser.error(f'--repeats={args.repeats} must be >= 0.')
  names = list(CANDIDATES)
  if args.candidates:
    indices = common.parse_ints(parser, 'candidates', args.candidates, 0)
    if max(indices) >= len(names):
      parser.error(
          f'--candidates={args.candidates!r}: indices run from 0 to '
          f'{len(names) - 1}: '
          + ', '.join(f'{i} {n}' for i, n in enumerate(names))
          + '.'
      )
    names = [names[i] for i in indices]
  print(
      f'# {args.config}, batch {args.batch}; seconds (GFLOP/s) per part; '
      'iteration = K steps + both updates + G(z)',
      flush=True,
  )
  common.print_header(('XLA_FLAGS', *PARTS, 'iteration s'))
  results, failed = {}, []
  for name in names:
    env = dict(
        os.environ,
        XLA_FLAGS=CANDIDATES[name],
        TF_CPP_MIN_LOG_LEVEL='2',
        HATEBM_XLA_DEFAULTS='0',
    )
    env.pop('JAX_COMPILATION_CACHE_DIR', None)
    proc = subprocess.run(
        [
            sys.executable,
            os.path.abspath(__file__),
            '--worker',
            f'--config={args.config}',
            f'--batch={args.batch}',
            f'--repeats={args.repeats}',
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [
        line for line in proc.stdout.splitlines() if line.startswith('RESULT ')
    ]
    if proc.returncode or not lines:
      last = (proc.stderr.strip().splitlines() or ['(no output)'])[-1]
      common.print_row(
          [
              f'{name} `{CANDIDATES[name]}`',
              f'failed (exit {proc.returncode}): {last}',
          ]
      )
      failed.append(name)
      continue
    r = json.loads(lines[-1][len('RESULT ') :])
    results[name] = {'xla_flags': CANDIDATES[name], **r}
    common.print_row(
        [f'{name} `{CANDIDATES[name]}`']
        + [f"{r[p]['s']:.3f} ({r[p]['gflops']:.0f})" for p in PARTS]
        + [f"{r['iteration_s']:.2f}"]
    )
    common.write_json(
        args.json,
        {
            'machine': common.machine(),
            'config': args.config,
            'batch': args.batch,
            'results': results,
        },
        quiet=True,
    )
  print(f'# wrote {args.json}')
  if failed:
    sys.exit(f'{len(failed)} of {len(names)} candidates failed: {failed}')


if __name__ == '__main__':
  main()
