"""The ahead-of-time compile of the paper's largest config for 32 devices,
on CPU fake devices, without running it."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from hatebm_jax import modes
from conftest import ROOT, device_env, load_config

GIB = 2**30


def _state_gib(config, devices):
  """The training state per device: networks and Adam replicated, the
  replay bank split over the devices."""
  abstract = modes.build(config).abstract_state(config.seed)
  nbytes = lambda tree: sum(
      int(np.prod(a.shape)) * a.dtype.itemsize for a in jax.tree.leaves(tree)
  )
  bank = nbytes(abstract.bank)
  return (nbytes(abstract) - bank + bank / devices) / GIB


@pytest.mark.slow
def test_imagenet_scaled_compiles_for_a_pod(tmp_path):
  """The paper's ImageNet 128 config compiled ahead of time for a 32-chip
  pod on this CPU: batch split, state per device and memory report."""
  devices = 32
  out = tmp_path / 'report.json'
  proc = subprocess.run(
      [
          sys.executable,
          '-m',
          'hatebm_jax.aot',
          '--config=' + os.path.join(ROOT, 'configs', 'imagenet_scaled.py'),
          f'--num_devices={devices}',
          f'--json={out}',
          '--nosampling',
      ],
      env=device_env(1),
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=900,
  )
  assert proc.returncode == 0, proc.stderr[-5000:]
  report = json.loads(out.read_text())
  assert report['num_devices'] == devices
  assert report['per_device_batch'] == 128 // devices
  assert report['mcmc_steps'] == 50
  # 278M parameters with two Adam moments (3.1 GiB) + 1/devices of the
  # 9,984-image 128x128 bank (1.83 GiB in all).
  expected = _state_gib(load_config('imagenet_scaled'), devices)
  # The report rounds each size to 10⁻³ GiB (aot.py), and XLA pads each of
  # the state's 303 buffers to its alignment (≤ 64 B each, < 10⁻⁴ GiB in all):
  # one rounding plus padding stays below 2·10⁻³ GiB.
  assert report['state_gib_per_device'] == pytest.approx(expected, abs=2e-3)
  assert report['argument_gib'] >= report['state_gib_per_device']
  # The donated state is reused for the output; the chain needs workspace.
  assert report['alias_gib'] == pytest.approx(
      report['state_gib_per_device'], abs=2e-3
  )
  assert report['temp_gib'] > 0.1
  # Peak is computed from unrounded byte counts, then rounded; the sum of the
  # four rounded sizes differs from it by at most 4 · 0.5·10⁻³ + 0.5·10⁻³.
  assert report['peak_gib'] == pytest.approx(
      report['argument_gib']
      + report['output_gib']
      + report['temp_gib']
      - report['alias_gib'],
      abs=3e-3,
  )
  assert f'on cpu: {devices} x cpu, 1 host(s); batch 128 (4 per device)' in (
      proc.stdout
  )
  assert 'peak of the step per device' in proc.stdout
  # Model FLOPs of the whole iteration, the 50-step chain counted 50 times:
  # docs/official_release.md §7.2 counts 545 TFLOP, charging every layer's
  # input gradient a full forward pass; XLA's count of the same program is
  # lower by 7-14% on the hat networks (docs/performance.md).
  assert 0.85 * 545 < report['model_tflop_per_iteration'] < 545
  assert report['langevin_loop_steps'] == 50


def test_aot_rejects_a_batch_that_does_not_split(tmp_path):
  proc = subprocess.run(
      [
          sys.executable,
          '-m',
          'hatebm_jax.aot',
          '--config=' + os.path.join(ROOT, 'configs', 'cifar10_synth.py'),
          '--num_devices=3',
      ],
      env=device_env(1),
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert proc.returncode != 0
  assert 'batch_size=128 must be divisible by the number of devices, 3' in (
      proc.stderr
  )
