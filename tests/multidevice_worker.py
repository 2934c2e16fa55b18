"""Runs in its own process with 8 CPU devices (tests/test_parallel.py).

  XLA_FLAGS=--xla_force_host_platform_device_count=8 \
      python tests/multidevice_worker.py OUTPUT_DIR

For each training mode (tiny networks, global batch 8, real Fashion-MNIST
batches), with the training loop's own pieces (`train.Program`: the mode's
state shapes and shardings, the jitted step with its divergence guard;
`parallel.global_batch`): initialises on a 1-device and on an 8-device mesh
and trains one step on each; restores the 1-device initial state onto both
meshes and trains 3 steps on each; checkpoints both, restores each onto the
other device count and trains 2 more steps; then compiles the synthesis
step for 8 devices and lists its collectives. The quick start's own config
(`quick_start`) trains 3 steps from a fresh start on each device count.
Writes OUTPUT_DIR/results.json for the test to assert on.
"""

import json
import os
import re
import sys

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')

import jax  # pylint: disable=g-import-not-at-top
import numpy as np

from hatebm_jax.infra import checkpoint
from hatebm_jax import data
from hatebm_jax import modes
from hatebm_jax.infra import parallel
from hatebm_jax.serving import draw
from hatebm_jax import train
from conftest import DATA_DIR, load_config, norm_error, tiny_config

SMALL = dict(data_dir=DATA_DIR, batch_size=8, eval_freq=0)
CONFIGS = {
    'synthesis': lambda: tiny_config(eval_freq=0),
    'joint': lambda: _stage(
        'fashion_mnist_refine',
        ebm_ngf=8,
        gen_ngf=16,
        mcmc_steps=2,
        gen_weights='unused',
    ),
    'sngan': lambda: _stage(
        'fashion_mnist_sngan', gen_ngf=16, disc_ndf=16, n_dis=2
    ),
    'autoencoder': lambda: _stage('fashion_mnist_ae', gen_ngf=8, inf_ngf=8),
}


def _stage(name, **overrides):
  c = load_config(name)
  for key, value in {**SMALL, **overrides}.items():
    c[key] = value
  return c


def relative_error(a, b):
  """max |a − b| / max |b| over one array (|a − b| where b is all 0)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  scale = np.abs(b).max() if b.size else 0.0
  diff = np.abs(a - b).max() if b.size else 0.0
  return float(diff / scale) if scale else float(diff)


class Runner:
  """One mode's model, data and compiled step per device count."""

  def __init__(self, config):
    self.config = config
    self.model = modes.build(config)
    self.abstract = self.model.abstract_state(config.seed)
    images, _ = data.load_fashion_mnist('train', DATA_DIR)
    per_step = self.model.images_per_step
    self.batches = data.ArrayBatches(images, per_step, config.seed)
    self._compiled = {}

  def mesh(self, n):
    if n not in self._compiled:
      mesh = parallel.make_mesh(n)
      self._compiled[n] = (mesh, train.Program.build(self.config, mesh))
    return self._compiled[n]

  def init(self, n):
    _, program = self.mesh(n)
    args = ()
    if self.config.mode == 'joint':  # a random "pretrained" generator
      args = self.model.gen.init(jax.random.PRNGKey(7))
    return jax.jit(self.model.init, out_shardings=program.shardings)(
        jax.random.PRNGKey(self.config.seed), *args
    )

  def train(self, n, state, steps):
    mesh, program = self.mesh(n)
    metrics = None
    health = program.fresh_health(mesh)
    with jax.set_mesh(mesh):
      for _ in range(steps):
        batch = self.batches.batch(int(parallel.to_host(state.step)))
        state, metrics, health = program.step(
            state, parallel.global_batch(batch, mesh), health
        )
    return state, {k: float(v) for k, v in parallel.to_host(metrics).items()}

  def save(self, state, workdir):
    ckpt = checkpoint.Checkpointer(workdir)
    ckpt.save(int(parallel.to_host(state.step)), state, self.config)
    ckpt.close()

  def restore(self, n, workdir):
    _, program = self.mesh(n)
    ckpt = checkpoint.Checkpointer(workdir)
    try:
      return ckpt.restore(
          parallel.with_shardings(self.abstract, program.shardings)
      )
    finally:
      ckpt.close()


def leaves(state):
  return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state))]


def compare(mode, out):
  """1 vs 8 devices: init and first-step losses from a fresh start; losses
  and states after 3 steps from one common state (the 1-device initial
  state, restored on both); cross-count resume."""
  runner = Runner(CONFIGS[mode]())
  result, states, inits = {}, {}, {}
  keep = range(len(jax.tree.leaves(runner.abstract)))
  for n in (1, 8):  # a fresh start on each device count
    state = runner.init(n)
    inits[n] = leaves(state)
    _, result[f'first_metrics_{n}'] = runner.train(n, state, 1)
  result['init_rel'] = max(norm_error(a, b) for a, b in zip(inits[8], inits[1]))
  result['first_metric_rel'] = {
      k: relative_error(result['first_metrics_8'][k], v)
      for k, v in result['first_metrics_1'].items()
  }
  # The common start is step 0: since the bank's first fill counts as
  # exactly 0 residual (`replay_bank.fit_residual`), the first steps are
  # no longer Adam steps on round-off (docs/official_release.md §5).
  runner.save(runner.init(1), os.path.join(out, f'{mode}_start'))
  for n in (1, 8):
    state = runner.restore(n, os.path.join(out, f'{mode}_start'))
    state, metrics = runner.train(n, state, 3)
    result[f'metrics_{n}'] = metrics
    if n == 8:  # the state really is laid out over 8 devices
      result['devices_used'] = len(
          jax.tree.leaves(state)[0].sharding.device_set
      )
    states[n] = leaves(state)
    runner.save(state, os.path.join(out, f'{mode}_{n}'))
  result['metric_rel'] = {
      k: relative_error(result['metrics_8'][k], v)
      for k, v in result['metrics_1'].items()
  }
  result['state_rel'] = max(
      norm_error(a, b) for a, b in zip(states[8], states[1])
  )
  if mode == 'sngan':
    # The generator's conv and dense biases feed batch norm in training
    # mode, which removes them: their exact gradient is 0, the computed one
    # round-off, which Adam scales up to ±lr on any device count (and the
    # running means take them in). Compare every other leaf.
    paths = [
        jax.tree_util.keystr(p)
        for p, _ in jax.tree_util.tree_flatten_with_path(runner.abstract)[0]
    ]
    keep = [i for i, p in enumerate(paths) if not _before_batch_norm(p)]
    result['excluded'] = [p for i, p in enumerate(paths) if i not in keep]
    result['state_rel'] = max(
        norm_error(states[8][i], states[1][i]) for i in keep
    )
  resumed = {}
  for source, n in ((8, 1), (1, 8)):
    state = runner.restore(n, os.path.join(out, f'{mode}_{source}'))
    state, _ = runner.train(n, state, 2)
    resumed[n] = leaves(state)
  result['resumed_step'] = [int(resumed[1][0]), int(resumed[8][0])]
  result['resume_rel'] = max(
      norm_error(resumed[1][i], resumed[8][i]) for i in keep
  )
  return result, runner


def _before_batch_norm(path):
  """Generator biases whose output goes into a batch norm (all but the
  output conv's), their Adam moments, and the batch norms' running means,
  which take those biases in."""
  if path.startswith('.gen_frozen'):
    return path.endswith("['mean']")
  return path.startswith(('.gen_params', '.gen_opt_state')) and any(
      f"['{layer}']['bias']" in path
      for layer in ('dense', 'conv1', 'conv2', 'shortcut')
  )


def collectives(hlo):
  """{op: [result shapes]} of the cross-device ops in compiled HLO text."""
  found = {}
  for line in hlo.splitlines():
    match = re.match(
        r'\s*(ROOT )?%\S+ = (.*?) (all-gather|all-to-all|'
        r'all-reduce|collective-permute|reduce-scatter)'
        r'(-start)?\(',
        line,
    )
    if match:
      found.setdefault(match.group(3), []).append(match.group(2)[:200])
  return found


def quick_start():
  """The quick start's own config (networks of 66k and 125k parameters,
  batch 8, K = 10, bank of 1,024) trained 3 steps from a fresh start on 1
  and on 8 devices, and 64 samples drawn from each: how far they differ."""
  config = load_config('fashion_mnist_synth')
  config.data_dir, config.eval_freq = DATA_DIR, 0
  runner = Runner(config)
  states, metrics, images = {}, {}, {}
  for n in (1, 8):
    state, metrics[n] = runner.train(n, runner.init(n), 3)
    states[n] = jax.device_get(state)
    z = jax.random.normal(jax.random.PRNGKey(5), (64, 128))
    x_gen, y = jax.jit(runner.model.draw, static_argnums=3)(
        states[n], z, jax.random.PRNGKey(6), 'ebm'
    )
    images[n] = draw.to_uint8(np.asarray(x_gen + y))
  paths = [
      jax.tree_util.keystr(p)
      for p, _ in jax.tree_util.tree_flatten_with_path(states[1])[0]
  ]
  errors = {
      p: norm_error(a, b)
      for p, a, b in zip(paths, leaves(states[8]), leaves(states[1]))
  }
  return {
      'step': int(states[8].step),
      'metric_rel': {
          k: relative_error(metrics[8][k], v) for k, v in metrics[1].items()
      },
      'leaf_rel': errors,
      'pixels_differing': int((images[8] != images[1]).sum()),
      'pixels': int(images[1].size),
      'max_level_difference': int(
          np.abs(images[8].astype(int) - images[1]).max()
      ),
  }


def main(out):
  assert jax.device_count() == 8, jax.devices()
  results = {'quick_start': quick_start()}
  for mode in CONFIGS:
    results[mode], runner = compare(mode, out)
    if mode == 'synthesis':
      mesh, program = runner.mesh(8)
      batch = jax.ShapeDtypeStruct(
          (8, 32, 32, 1), np.float32, sharding=parallel.batch_sharding(mesh)
      )
      with jax.set_mesh(mesh):
        health = program.fresh_health(mesh)
        hlo = (
            program.step.lower(
                parallel.with_shardings(runner.abstract, program.shardings),
                batch,
                health,
            )
            .compile()
            .as_text()
        )
      results['hlo'] = {
          'collectives': collectives(hlo),
          'bank_local_shapes': [
              [a.shape[0] // 8] + list(a.shape[1:])
              for a in jax.tree.leaves(runner.abstract.bank)
          ],
      }
  with open(os.path.join(out, 'results.json'), 'w') as f:
    json.dump(results, f, indent=1)


if __name__ == '__main__':
  main(sys.argv[1])
