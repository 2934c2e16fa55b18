"""A damaged checkpoint is never restored, sampled or trained on.

Every checkpoint carries the CRC-32 of each state leaf and of its config
(`infra.integrity`); restoring checks them, with the dtypes, shapes and
finiteness. Rotation keeps the newest checkpoint a restore has checked.
"""

import json
import os
import shutil
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hatebm_jax import train
from hatebm_jax.infra import checkpoint
from hatebm_jax.infra import integrity
from hatebm_jax.modes import synthesis
from hatebm_jax.serving import run as run_lib
from conftest import ROOT, main_command, tiny_config


@pytest.fixture(scope='module')
def finished(tiny_run):
  """A tiny run with checkpoints 2 and 4 (copy before changing it), and its
  state at step 4."""
  return tiny_run, _restore(tiny_run, 4)


def _abstract():
  model = synthesis.SynthesisMode.from_config(tiny_config())
  return jax.eval_shape(model.init, jax.random.PRNGKey(0))


def _restore(workdir, step):
  ckpt = checkpoint.Checkpointer(str(workdir), read_only=True)
  try:
    return ckpt.restore(_abstract(), step)
  finally:
    ckpt.close()


def _flip(path, fraction, count=64):
  """Inverts `count` bytes of a file from `fraction` of its length on."""
  data = bytearray(path.read_bytes())
  start = min(int(len(data) * fraction), max(len(data) - count, 0))
  for i in range(start, min(start + count, len(data))):
    data[i] ^= 0xFF
  path.write_bytes(bytes(data))


def _data_files(workdir, step):
  """The files of the arrays' OCDBT databases (values and B-tree nodes)."""
  state = workdir / 'checkpoints' / str(step) / 'state'
  return sorted(
      p for p in state.rglob('*') if p.is_file() and p.parent.name == 'd'
  )


def _same(a, b):
  return all(
      np.array_equal(np.asarray(x), np.asarray(y))
      for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
  )


def test_fingerprints_name_each_changed_leaf():
  state = {
      'bank': {'images': jnp.arange(24.0).reshape(2, 3, 4)},
      'step': jnp.int32(7),
      'w': jnp.ones((3, 2)),
  }
  record = integrity.fingerprint(state)
  assert integrity.problems(state, record) == []
  assert record['leaves']['w'] == {
      'dtype': 'float32',
      'shape': [3, 2],
      'crc32': integrity._crc(np.ones((3, 2), np.float32)),  # pylint: disable=protected-access
      'rows': False,
  }
  changed = dict(state, w=state['w'].at[1, 0].set(1.0 + 2**-23))  # one ulp
  assert [p.split(':')[0] for p in integrity.problems(changed, record)] == ['w']
  broken = dict(state, w=state['w'].at[0, 0].set(jnp.nan))
  lines = integrity.problems(broken, record)
  assert lines[-1] == 'w: 1 non-finite values' and len(lines) == 2
  cast = dict(state, w=state['w'].astype(jnp.bfloat16))
  assert integrity.problems(cast, record) == [
      'w: bfloat16[3, 2] restored, float32[3, 2] saved'
  ]
  # A checkpoint without fingerprints: only finiteness is checked.
  assert integrity.problems(changed, None) == []
  assert integrity.problems(broken, None) == ['w: 1 non-finite values']


@pytest.mark.slow
def test_every_byte_flip_is_refused_or_never_read(finished, tmp_path):
  """64 inverted bytes at two places of data files of the newest
  checkpoint (the 5 largest, where the array values are, the
  checkpoint's own B-tree and the 2 smallest): the restore either refuses
  it with an error that names the damage and the intact step 2, or gives
  the saved state bit for bit (bytes no reader touches: the per-process
  B-tree nodes that Orbax merged into the checkpoint's own B-tree stay in
  the files)."""
  source, saved = finished
  workdir = tmp_path / 'run'
  shutil.copytree(source, workdir)
  by_size = sorted(_data_files(workdir, 4), key=lambda p: p.stat().st_size)
  own_tree = [p for p in by_size if p.parent.parent.name == 'state']
  assert len(own_tree) == 1 and len(by_size) >= 4
  refused = {}
  for path in sorted(set(by_size[-5:] + own_tree + by_size[:2])):
    original = path.read_bytes()
    for fraction in (0.1, 0.5):
      _flip(path, fraction)
      try:
        state = _restore(workdir, 4)
      except IOError as e:
        refused[path] = refused.get(path, 0) + 1
        message = str(e)
        assert 'checkpoints/4' in message and '\n' not in message
        assert 'is damaged' in message or 'cannot be read' in message
        assert 'The newest intact checkpoint is step 2 (checked)' in message
      else:
        assert _same(state, saved), (path.name, fraction)
      path.write_bytes(original)
  # Not vacuous: the checkpoint's own B-tree and the largest file (mostly
  # the replay bank's values) refuse every flip, and values in another file
  # at least one. Which other files hold values, and where, changes from
  # run to run (Orbax's writes race; seen: 2 to 5 of the 5 largest files
  # are values, the rest per-process B-tree nodes, never read).
  assert refused.get(own_tree[0]) == 2 and refused.get(by_size[-1]) == 2
  assert len(set(refused) - {own_tree[0], by_size[-1]}) >= 1, refused


def test_damaged_newest_checkpoint_is_never_trained_on(finished, tmp_path):
  source, _ = finished
  workdir = tmp_path / 'run'
  shutil.copytree(source, workdir)
  # The replay bank's images: the largest value file of the checkpoint.
  largest = max(_data_files(workdir, 4), key=lambda p: p.stat().st_size)
  _flip(largest, 0.5)
  before = {p: p.stat().st_mtime_ns for p in workdir.rglob('*')}
  with pytest.raises(checkpoint.DamagedCheckpointError) as error:
    train.train_and_evaluate(tiny_config(num_training_steps=6), str(workdir))
  message = str(error.value)
  assert 'bank/images: CRC-32' in message
  assert 'it was not used' in message
  assert 'The newest intact checkpoint is step 2 (checked)' in message
  assert f'mv {workdir}/checkpoints/4 {workdir}/damaged_checkpoint_4' in message
  assert {p: p.stat().st_mtime_ns for p in workdir.rglob('*')} == before
  # Sampling and export refuse it too, and take the intact step.
  with pytest.raises(checkpoint.DamagedCheckpointError, match='bank/images'):
    run_lib.load_run(str(workdir))
  assert run_lib.load_run(str(workdir), step=2).step == 2
  # Moved away as the message says, the run resumes from step 2.
  os.rename(workdir / 'checkpoints' / '4', workdir / 'damaged_checkpoint_4')
  train.train_and_evaluate(tiny_config(num_training_steps=6), str(workdir))
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['2', '4', '6']


def test_no_intact_checkpoint_left_is_said(finished, tmp_path):
  source, _ = finished
  workdir = tmp_path / 'run'
  shutil.copytree(source, workdir)
  for step in (2, 4):
    _flip(max(_data_files(workdir, step), key=lambda p: p.stat().st_size), 0.5)
  with pytest.raises(
      checkpoint.DamagedCheckpointError,
      match=r'None of the older checkpoints \(steps \[2\]\) is intact',
  ):
    run_lib.load_run(str(workdir))


def test_damaged_config_is_refused(finished, tmp_path):
  source, _ = finished
  workdir = tmp_path / 'run'
  shutil.copytree(source, workdir)
  saved = workdir / 'checkpoints' / '4' / 'config' / 'metadata'
  saved.write_text(
      saved.read_text().replace('"mcmc_steps": 2', '"mcmc_steps": 3')
  )
  with pytest.raises(
      checkpoint.DamagedCheckpointError,
      match=r'checkpoints/4 is damaged: its config .*The newest intact '
      r'checkpoint is step 2 \(checked\)',
  ):
    run_lib.load_run(str(workdir))


def _edit_fingerprints(workdir, edit):
  """Applies `edit` to the text of checkpoint 4's fingerprint item."""
  path = workdir / 'checkpoints' / '4' / 'fingerprints' / 'metadata'
  path.write_text(edit(path.read_text()))


@pytest.mark.parametrize(
    'damage, what',
    [
        # A key of the record, or a leaf's name, one letter off.
        (lambda t: t.replace('"rows"', '"rowz"', 1), 'are malformed'),
        (lambda t: t.replace('gen_frozen', 'gen_frojen', 1), 'disagree with'),
        # A CRC lost or of the wrong type; another format.
        (lambda t: t.replace('"crc32": ', '"crc32": null, "x": ', 1), 'are '),
        (lambda t: t.replace('"crc32": ', '"crc32": "abc", "x": ', 1), 'are '),
        (lambda t: t.replace('crc32-c-order-v1', 'crc32-c-order-v2'), 'are '),
        (lambda t: t.replace('"config_crc32"', '"config_crc33"'), 'are '),
    ],
)
def test_damaged_fingerprints_are_damage_not_a_mismatch(
    finished, tmp_path, damage, what
):
  """Damage to the fingerprint item is refused like damage to the arrays:
  one line naming the checkpoint and the intact step 2, never a traceback
  or advice to start a new workdir."""
  source, _ = finished
  workdir = tmp_path / 'run'
  shutil.copytree(source, workdir)
  _edit_fingerprints(workdir, damage)
  calls = [lambda: run_lib.load_run(str(workdir))]
  if what != 'are ':  # a key or a name: also through training's own checks
    calls.append(
        lambda: train.train_and_evaluate(
            tiny_config(num_training_steps=6), str(workdir)
        )
    )
  for call in calls:
    with pytest.raises(checkpoint.DamagedCheckpointError) as error:
      call()
    message = str(error.value)
    assert message.startswith(f'Checkpoint {workdir}/checkpoints/4 is damaged')
    assert f'its fingerprints (fingerprints/metadata) {what}' in message
    assert 'The newest intact checkpoint is step 2 (checked)' in message
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['2', '4']


def test_lost_fingerprints_are_damage(finished, tmp_path):
  """A checkpoint saved with fingerprints that has lost them is not taken
  for one written before they existed: a flipped value byte beside it
  must not pass."""
  source, _ = finished
  workdir = tmp_path / 'run'
  shutil.copytree(source, workdir)
  shutil.rmtree(workdir / 'checkpoints' / '4' / 'fingerprints')
  _flip(max(_data_files(workdir, 4), key=lambda p: p.stat().st_size), 0.5, 1)
  with pytest.raises(
      checkpoint.DamagedCheckpointError,
      match=r'checkpoints/4 is damaged: its fingerprints \(fingerprints/\) are '
      r'missing, though it was saved with them; it was not used. The newest '
      r'intact checkpoint is step 2 \(checked\)',
  ):
    train.train_and_evaluate(tiny_config(num_training_steps=6), str(workdir))
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['2', '4']


@pytest.mark.slow
def test_rotation_keeps_the_checked_checkpoint_until_a_newer_is_checked(
    finished, tmp_path
):
  """max_to_keep=1: a run resumed from step 4 keeps checkpoint 4 (checked
  by the restore) beside its newest, 5; the next resume checks step 5, and
  step 4 goes at the following save."""
  source, _ = finished
  workdir = tmp_path / 'run'
  shutil.copytree(source, workdir)
  config = lambda steps: tiny_config(
      num_training_steps=steps, checkpoint_freq=1, max_to_keep=1
  )
  folder = workdir / 'checkpoints'
  train.train_and_evaluate(config(5), str(workdir))
  assert sorted(os.listdir(folder)) == ['4', '5']
  train.train_and_evaluate(config(6), str(workdir))
  assert sorted(os.listdir(folder)) == ['5', '6']


def test_cast_or_reshaped_leaves_are_refused_by_sampling_and_export(
    finished, tmp_path
):
  """A checkpoint whose hat parameters were cast to bfloat16 (saved so,
  with fingerprints of what it holds), or one without fingerprints whose
  arrays have another shape: sampling and export name the entries."""
  source, saved = finished
  cast = tmp_path / 'cast'
  shutil.copytree(source, cast)
  shutil.rmtree(cast / 'checkpoints' / '4')
  ckpt = checkpoint.Checkpointer(str(cast))
  hat = jax.tree.map(lambda x: x.astype(jnp.bfloat16), saved.hat_params)
  ckpt.save(4, saved.replace(hat_params=hat), tiny_config())
  ckpt.close()
  pattern = (
      r'checkpoints/4 does not hold the state its config describes \('
      r'\d+ entries differ: hat_params/block1/conv1/bias: checkpoint '
      r'bfloat16\[8\], config float32\[8\]'
  )
  with pytest.raises(ValueError, match=pattern):
    run_lib.load_run(str(cast))
  with pytest.raises(ValueError, match=pattern):
    run_lib.export(str(cast), str(tmp_path / 'model.hatebm'))
  assert not (tmp_path / 'model.hatebm').exists()
  # Another shape, in a checkpoint saved before fingerprints existed
  # (Orbax's own metadata is read instead).
  wide = tmp_path / 'wide'
  model = synthesis.SynthesisMode.from_config(tiny_config(ebm_ngf=16))
  ckpt = checkpoint.Checkpointer(str(wide))
  ckpt.save(2, model.init(jax.random.PRNGKey(0)), tiny_config(ebm_ngf=16))
  ckpt.close()
  # As written before fingerprints existed: no item, none in Orbax's list.
  shutil.rmtree(wide / 'checkpoints' / '2' / 'fingerprints')
  listing = wide / 'checkpoints' / '2' / '_CHECKPOINT_METADATA'
  metadata = json.loads(listing.read_text())
  del metadata['item_handlers']['fingerprints']
  listing.write_text(json.dumps(metadata))
  config_file = wide / 'checkpoints' / '2' / 'config' / 'metadata'
  config_json = json.loads(config_file.read_text())
  config_json['ebm_ngf'] = 8
  config_file.write_text(json.dumps(config_json))
  with pytest.raises(
      ValueError,
      match=r'hat_params/block1/conv1/kernel: checkpoint float32\[3, 3, 1, '
      r'16\], config float32\[3, 3, 1, 8\]',
  ):
    run_lib.load_run(str(wide))


@pytest.mark.slow
def test_entry_point_refuses_a_damaged_checkpoint_in_one_line(
    finished, tmp_path
):
  source, _ = finished
  workdir = tmp_path / 'run'
  shutil.copytree(source, workdir)
  _flip(max(_data_files(workdir, 4), key=lambda p: p.stat().st_size), 0.5)
  result = subprocess.run(
      main_command(workdir, '--config.num_training_steps=6'),
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert result.returncode == 1
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('Error: DamagedCheckpointError: Checkpoint ')
  assert 'bank/images: CRC-32' in last and 'step 2 (checked)' in last
  assert 'Traceback' not in result.stderr
  assert 'Event loop is closed' not in result.stderr
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['2', '4']
