"""Runs in its own process with 8 CPU devices (tests/test_parallel.py).

  XLA_FLAGS=--xla_force_host_platform_device_count=8 \
      python tests/multidevice_worker.py OUTPUT_DIR

Trains tiny synthesis, SN-GAN and joint runs through the real training
loop on 1 and on 8 devices, resumes each on the other device count, lowers
the synthesis step on 8 devices, and writes what it measured to
OUTPUT_DIR/results.json for the test to assert on.
"""

import json
import re
import os
import shutil
import sys

os.environ.setdefault('XLA_FLAGS',
                      '--xla_force_host_platform_device_count=8')

import jax  # pylint: disable=g-import-not-at-top
import numpy as np

from hatebm_jax import checkpoint
from hatebm_jax import modes
from hatebm_jax import parallel
from hatebm_jax import train
from conftest import DATA_DIR, load_config, tiny_config

STEPS = dict(num_training_steps=3, info_freq=1, plot_freq=100,
             checkpoint_freq=3, fcd_freq=0, num_plot=4)


def stage_config(name, **overrides):
  c = load_config(name)
  for key, value in {**STEPS, 'data_dir': DATA_DIR, **overrides}.items():
    c[key] = value
  return c


def saved_state(config, workdir):
  """The newest checkpoint of workdir as numpy leaves (one device)."""
  model = modes.build_model(config)
  ckpt = checkpoint.Checkpointer(workdir)
  try:
    state = ckpt.restore(train.abstract_state(model, config))
  finally:
    ckpt.close()
  return [np.asarray(x) for x in jax.tree.leaves(state)]


def relative_error(a, b):
  """max |a − b| / max |b| over one array (0 for equal arrays)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  scale = np.abs(b).max() if b.size else 0.0
  return float(np.abs(a - b).max() / scale) if scale else float(
      np.abs(a - b).max())


def compare(config, out, name):
  """1 vs 8 devices for `config`: losses, states, cross-count resume."""
  runs = {}
  for n in (1, 8):
    config.num_devices = n
    workdir = os.path.join(out, f'{name}_{n}')
    runs[n] = (train.train_and_evaluate(config, workdir),
               saved_state(config, workdir), workdir)
  (metrics_1, state_1, wd_1), (metrics_8, state_8, wd_8) = runs[1], runs[8]
  result = {
      'metrics_1': metrics_1, 'metrics_8': metrics_8,
      'metric_rel': {k: relative_error(metrics_8[k], metrics_1[k])
                     for k in metrics_1},
      'state_rel': max(relative_error(a, b)
                       for a, b in zip(state_8, state_1)),
      'state_elementwise_rtol_1e-4': all(
          np.allclose(a, b, rtol=1e-4, atol=1e-6)
          for a, b in zip(state_8, state_1)),
  }
  # Resume each run on the other device count for 2 more steps.
  config.num_training_steps = 5
  for n, workdir in ((1, wd_8), (8, wd_1)):
    config.num_devices = n
    train.train_and_evaluate(config, workdir)
  config.num_training_steps = 3
  resumed_8to1, resumed_1to8 = (saved_state(config, wd_8),
                                saved_state(config, wd_1))
  result['resumed_step'] = [int(resumed_8to1[0]), int(resumed_1to8[0])]
  result['resume_rel'] = max(relative_error(a, b) for a, b in
                             zip(resumed_8to1, resumed_1to8))
  return result


def joint_runs(results, out):
  """An SN-GAN on 8 devices, then joint runs over its generator."""
  sngan_dir = os.path.join(out, 'sngan')
  train.train_and_evaluate(stage_config(
      'fashion_mnist_sngan', gen_ngf=16, disc_ndf=16, batch_size=8, n_dis=2,
      num_training_steps=2, checkpoint_freq=2), sngan_dir)
  joint = stage_config('fashion_mnist_refine', ebm_ngf=8, gen_ngf=16,
                       batch_size=8, mcmc_steps=2, gen_weights=sngan_dir)
  results['joint'] = compare(joint, out, 'joint')


def collectives(hlo):
  """{op: [result shapes]} of the cross-device ops in compiled HLO text."""
  found = {}
  for line in hlo.splitlines():
    match = re.match(r'\s*(ROOT )?%\S+ = (.*?) (all-gather|all-to-all|'
                     r'all-reduce|collective-permute|reduce-scatter)'
                     r'(-start)?\(', line)
    if match:
      found.setdefault(match.group(3), []).append(match.group(2)[:200])
  return found


def main(out, parts):
  assert jax.device_count() == 8, jax.devices()
  results = {'devices': jax.device_count()}
  synth = tiny_config(**STEPS)
  if 'train' in parts:
    results['synthesis'] = compare(synth, out, 'synthesis')
    joint_runs(results, out)
  # The compiled synthesis step on 8 devices: collectives it contains.
  synth.num_devices = 8
  model = modes.build_model(synth)
  mesh = parallel.make_mesh(8)
  abstract = train.abstract_state(model, synth)
  shardings = parallel.state_shardings(abstract, mesh)
  batch = jax.ShapeDtypeStruct((8, 32, 32, 1), np.float32,
                               sharding=parallel.batch_sharding(mesh))
  with jax.set_mesh(mesh):
    hlo = train.jit_train_step(model, mesh, shardings).lower(
        parallel.with_shardings(abstract, shardings), batch).compile(
        ).as_text()
  results['hlo'] = {
      'collectives': collectives(hlo),
      'bank_local_shapes': [
          [a.shape[0] // 8] + list(a.shape[1:])
          for a in jax.tree.leaves(abstract.bank)]}
  with open(os.path.join(out, 'results.json'), 'w') as f:
    json.dump(results, f, indent=1, default=str)
  shutil.rmtree(os.path.join(out, 'sngan'), ignore_errors=True)


if __name__ == '__main__':
  main(sys.argv[1], sys.argv[2:] or ['train', 'hlo'])
