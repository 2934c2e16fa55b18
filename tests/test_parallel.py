"""One program over a device mesh, device-count-independent
randomness, a bank that stays on its devices, and checkpoints that move
between device counts, for every training mode.

The 8-device checks run in a subprocess (tests/multidevice_worker.py), since
the device count is fixed when JAX starts; the multi-process check starts
two processes of the real entry point on localhost
(tests/test_multiprocess.py).
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hatebm_jax.infra import parallel
from conftest import TESTS, device_env


@pytest.fixture(scope='module')
def eight_devices(tmp_path_factory):
  """What tests/multidevice_worker.py measured on 8 CPU devices."""
  out = tmp_path_factory.mktemp('eight_devices')
  proc = subprocess.run(
      [sys.executable, os.path.join(TESTS, 'multidevice_worker.py'), str(out)],
      env=device_env(8),
      cwd=TESTS,
      capture_output=True,
      text=True,
      timeout=1200,
  )
  assert proc.returncode == 0, proc.stderr[-5000:]
  with open(out / 'results.json') as f:
    return json.load(f)


def test_per_example_draws_ignore_batch_size_and_offset():
  key = jax.random.PRNGKey(3)
  small = parallel.per_example_normal(key, (3, 5))
  large = parallel.per_example_normal(key, (8, 5))
  np.testing.assert_array_equal(small, large[:3])
  np.testing.assert_array_equal(
      parallel.per_example_normal(key, (4, 5), offset=3), large[3:7]
  )
  np.testing.assert_array_equal(
      large[6], jax.random.normal(jax.random.fold_in(key, 6), (5,))
  )
  assert (
      abs(float(jnp.std(parallel.per_example_normal(key, (4000, 5))) - 1))
      < 0.02
  )


def test_interleave_pairs_rows():
  a, b = jnp.arange(3.0)[:, None], 10 + jnp.arange(3.0)[:, None]
  np.testing.assert_array_equal(
      parallel.interleave(a, b)[:, 0], [0, 10, 1, 11, 2, 12]
  )


MODES = ['synthesis', 'joint', 'sngan', 'autoencoder']


# How far 1 and 8 devices may differ, and why. 1 device sums the batch of 8
# in one reduction, 8 devices sum 1 example each and then all-reduce: the
# same terms in another order, so float32 round-off (2⁻²⁴ relative per
# addition) differs, and on some CPUs (AMD EPYC) the kernels of a batch of 1
# round differently from those of a batch of 8. The chains and Adam carry
# that on. To size the bounds, every float leaf of the state at step 2 was
# perturbed by 10⁻⁷ relative (about 2 ulp; 3 seeds x 4 modes) and trained 5
# steps on 1 device: losses moved by at most 1.1·10⁻⁵, state leaves (‖Δ‖/‖·‖)
# by 3.8·10⁻⁴ (joint, an Adam moment of a hat bias), SN-GAN's by 5.6·10⁻³.
# Measured 1 vs 8 devices on an Intel Xeon: losses 3.1·10⁻⁶, leaves 3.3·10⁻⁵.
# Since the comparison starts at step 0 (the bank's first fill counts as 0
# residual, so the first generator steps are no longer Adam on round-off),
# on an AMD EPYC: losses ≤ 3.9·10⁻⁵ (SN-GAN), leaves ≤ 3.1·10⁻⁴ (SN-GAN),
# 2.1·10⁻⁶ (synthesis). A real sharding fault is far above: another random
# stream on the 8 devices moves the losses by 10⁻¹ and a state leaf by 3.6
# (‖Δ‖/‖·‖).
METRIC_BOUND = 1e-4
STATE_BOUND = {'sngan': 1e-2}  # 1e-3 for the Hat EBM modes


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize('mode', MODES)
def test_eight_devices_match_one(eight_devices, mode):
  """A fresh start on 8 devices = on 1 (same seed and global batch): the
  same initial state and first-step losses; and 3 steps from one common
  initial state give the same losses and state."""
  result = eight_devices[mode]
  assert result['devices_used'] == 8
  # The initial states differ at most by one rounding of the networks'
  # forward pass (the bank's G_0 images): ~10⁻⁷ relative.
  assert result['init_rel'] < 1e-5
  for key in ('first_metric_rel', 'metric_rel'):
    for name, err in result[key].items():
      assert err < METRIC_BOUND, (key, name, err)
  assert result['metrics_1'].keys() == result['metrics_8'].keys()
  assert all(
      v != 0
      for k, v in result['metrics_1'].items()
      if k in ('ebm_loss', 'disc_loss', 'ae_loss')
  )
  # Every leaf of the state (networks, Adam moments, bank, key, step).
  # SN-GAN: except the generator biases that feed batch norm (exact
  # gradient 0, so Adam moves them by ±lr on round-off) and the running
  # means that absorb them (see the worker).
  assert result['state_rel'] < STATE_BOUND.get(mode, 1e-3)
  if mode == 'sngan':
    assert len(result['excluded']) == 37  # 10 biases x 3, 7 running means


# The quick start on 1 and 8 devices (its own networks, 3 steps from the
# same seed). Measured on an AMD EPYC: losses within 1.3·10⁻⁶, generator
# and bank leaves within 6.4·10⁻⁷, and the same 65,536 sample pixels; the
# largest leaf difference, 3.6·10⁻³, is one hat bias (block4/conv2) with an
# entry whose gradient is ~10⁻⁶ of its neighbours': the two devices' sums
# round it differently at 10⁻³ of itself, and Adam divides by that entry's
# own RMS, so the difference reaches the update at full size. A 10⁻⁷
# perturbation of the initial state moves 3 steps on 1 device by up to
# 1.8·10⁻⁵ in the losses, 2.7·10⁻⁶ in the bank and 3 of 65,536 pixels by 1
# level. Before the bank's first fill counted as 0 residual, the generator
# differed by 0.65 (‖Δ‖/‖·‖) and 39,660 pixels by up to 17 levels.
QUICK_START_BOUNDS = dict(
    metric=1e-4, generator_and_bank=1e-4, leaf=1e-2, pixels=1e-3, levels=1
)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_quick_start_agrees_on_one_and_eight_devices(eight_devices):
  result, bound = eight_devices['quick_start'], QUICK_START_BOUNDS
  assert result['step'] == 3
  assert max(result['metric_rel'].values()) < bound['metric']
  assert {'ebm_loss', 'gen_loss', 'hat_grad_norm'} <= set(result['metric_rel'])
  leaves = result['leaf_rel']
  assert len(leaves) > 100
  assert (
      max(
          err
          for path, err in leaves.items()
          if path.startswith(('.gen_', '.bank'))
      )
      < bound['generator_and_bank']
  )
  assert max(leaves.values()) < bound['leaf']
  assert result['pixels'] == 64 * 32 * 32
  assert result['pixels_differing'] <= bound['pixels'] * result['pixels']
  assert result['max_level_difference'] <= bound['levels']


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize('mode', MODES)
def test_checkpoints_move_between_device_counts(eight_devices, mode):
  """The 8-device run resumed on 1 device and the 1-device run resumed on
  8 reach the same state at step 5 (3 + 2 steps)."""
  result = eight_devices[mode]
  assert result['resumed_step'] == [5, 5]
  # Two runs that differ by round-off, carried 2 more steps: the bounds
  # above. A lost shard or a mis-restored leaf moves a whole tensor by O(1).
  assert result['resume_rel'] < STATE_BOUND.get(mode, 1e-3)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_compiled_step_keeps_the_bank_on_its_devices(eight_devices):
  """The synthesis step over 8 devices has one gradient all-reduce and no
  all-gather, all-to-all or permute: the bank (lanes split on 'data') is
  read and written where it lives."""
  hlo = eight_devices['hlo']
  assert hlo['bank_local_shapes'] == [[1, 4, 32, 32, 1], [1, 4, 16]]
  assert set(hlo['collectives']) == {'all-reduce'}, hlo['collectives']
  local_bank = 'f32[1,4,32,32,1]'
  assert not any(local_bank in s for s in hlo['collectives']['all-reduce'])
