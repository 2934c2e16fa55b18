"""Every user-facing failure of the commands is one clear line.

Each case runs the real entry point in a subprocess and checks its exit
status, that stderr ends in one line naming what is wrong (no Python
traceback), and that nothing was left behind in the workdir.
"""

import os
import resource
import shutil
import signal
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from hatebm_jax.infra import checkpoint
from hatebm_jax.modes import synthesis
from conftest import CONFIG_DIR, ROOT, TINY_FLAGS, main_command, tiny_config

QUICK_START = os.path.join(CONFIG_DIR, 'fashion_mnist_synth.py')


def _fails_in_one_line(args, env=None, preexec_fn=None):
  """Runs `python -m <args>`, checks that it exits with status 1 and ends
  in one clear error line with no traceback; returns (that line, stderr)."""
  result = subprocess.run(
      [sys.executable, '-m', *args],
      cwd=ROOT,
      env=dict(os.environ, **(env or {})),
      capture_output=True,
      text=True,
      timeout=300,
      preexec_fn=preexec_fn,
  )
  lines = result.stderr.strip().splitlines()
  last = lines[-1] if lines else ''
  assert result.returncode == 1, result.stderr[-3000:]
  _assert_one_line(result.stderr, last)
  return last, result.stderr


def _assert_one_line(stderr, last):
  assert 'Traceback' not in stderr, stderr[-3000:]
  assert 'Pass --helpshort' not in stderr
  assert last.startswith(('Error: ', 'FATAL Flags parsing error: ')), last


def _tree(path):
  """Every file and folder under `path` (relative), or None if absent."""
  if not os.path.exists(path):
    return None
  return sorted(
      os.path.relpath(os.path.join(d, n), path)
      for d, dirs, files in os.walk(path)
      for n in dirs + files
  )


@pytest.mark.parametrize(
    'name, content, message',
    [
        (
            'notes.txt',
            'hello world\n',
            "--config='{path}' is not a Python config file: give a .py file "
            'with a get_config() function, e.g. '
            'configs/fashion_mnist_synth.py.',
        ),
        (
            'broken.py',
            'def get_config():\n  return undefined_name\n',
            'the --config file failed to load: NameError: name '
            "'undefined_name' is not defined",
        ),
        (
            'plain.py',
            'VALUE = 1\n',
            'the --config file has no get_config() function: give an '
            'experiment config, e.g. --config=configs/fashion_mnist_synth.py.',
        ),
    ],
)
def test_config_files_that_are_not_configs(tmp_path, name, content, message):
  path = tmp_path / name
  path.write_text(content)
  last, stderr = _fails_in_one_line(
      ['hatebm_jax.main', f'--config={path}', f'--workdir={tmp_path / "w"}']
  )
  assert last == 'FATAL Flags parsing error: ' + message.format(path=path)
  assert not (tmp_path / 'w').exists()


@pytest.mark.parametrize(
    'flags, message',
    [
        (
            ['--config.num_plot=abc'],
            'FATAL Flags parsing error: flag --config.num_plot=abc: invalid '
            "literal for int() with base 10: 'abc'",
        ),
        (
            ['--config.nosuchkey=1'],
            'FATAL Flags parsing error: --config.nosuchkey: the config has no '
            'such key.',
        ),
        (
            ['extra_argument'],
            "Error: ValueError: Unexpected arguments ['extra_argument']: every "
            'option is a flag, --name=value (--helpshort lists them).',
        ),
    ],
)
def test_bad_flags_name_what_is_wrong(tmp_path, flags, message):
  last, stderr = _fails_in_one_line(
      [
          'hatebm_jax.main',
          f'--config={QUICK_START}',
          f'--workdir={tmp_path / "w"}',
          *flags,
      ]
  )
  assert last == message
  assert not (tmp_path / 'w').exists()


def test_config_argument_error_is_one_line(tmp_path):
  """`--config=file.py:arg` for a config without arguments: the config's
  own error, without the traceback ml_collections puts in its message."""
  last, stderr = _fails_in_one_line(
      [
          'hatebm_jax.main',
          f'--config={QUICK_START}:foo',
          f'--workdir={tmp_path / "w"}',
      ]
  )
  assert last.startswith(
      f'FATAL Flags parsing error: flag --config={QUICK_START}:foo'
  )
  assert last.endswith(
      'TypeError: get_config() takes 0 positional arguments but 1 was given'
  )


def test_a_missing_config_is_one_line(tmp_path):
  last, _ = _fails_in_one_line(['hatebm_jax.main', f'--workdir={tmp_path}'])
  assert last == (
      'FATAL Flags parsing error: --config is required: an experiment config '
      'file, e.g. --config=configs/fashion_mnist_synth.py (all of them are in '
      'configs/).'
  )


def test_aot_parses_flags_like_main():
  last, stderr = _fails_in_one_line(
      ['hatebm_jax.aot', f'--config={QUICK_START}', '--config.mcmc_stepz=3']
  )
  assert last == (
      'FATAL Flags parsing error: --config.mcmc_stepz: the config has no '
      'such key. Did you mean "mcmc_steps" instead of "mcmc_stepz"?'
  )


@pytest.mark.parametrize(
    'config, data',
    [
        ('fashion_mnist_synth', 'missing'),  # no IDX files there
        pytest.param(  # a TFDS data_dir without cifar10
            'cifar10_synth', 'empty', marks=pytest.mark.slow
        ),
    ],
)
def test_missing_data_is_one_line_and_creates_nothing(tmp_path, config, data):
  data_dir = tmp_path / data
  if data == 'empty':
    data_dir.mkdir()
  workdir = tmp_path / 'run'
  last, stderr = _fails_in_one_line(
      [
          'hatebm_jax.main',
          f'--config={os.path.join(CONFIG_DIR, config + ".py")}',
          f'--workdir={workdir}',
          f'--config.data_dir={data_dir}',
      ]
  )
  assert last.startswith('Error: FileNotFoundError: ')
  assert str(data_dir) in last
  assert not workdir.exists()


def test_read_only_workdir_is_one_line(tiny_run, tmp_path):
  """Continuing a run whose workdir became read-only. As root, the
  command runs without CAP_DAC_OVERRIDE (setpriv), so that folder
  permissions bind it as they bind other users."""
  workdir = tmp_path / 'run'
  subprocess.run(['cp', '-a', str(tiny_run), str(workdir)], check=True)
  before = _tree(workdir)
  subprocess.run(['chmod', '-R', 'a-w', str(workdir)], check=True)
  prefix = []
  if os.geteuid() == 0:
    prefix = ['setpriv', '--bounding-set=-dac_override,-dac_read_search']
  try:
    result = subprocess.run(
        prefix + main_command(workdir, '--config.num_training_steps=6'),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
  finally:
    subprocess.run(['chmod', '-R', 'u+w', str(workdir)], check=True)
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 1
  _assert_one_line(result.stderr, lines[-1])
  assert lines[-1].startswith(
      f'Error: PermissionError: --workdir={workdir} cannot be written '
      '(PermissionError: Permission denied)'
  )
  assert _tree(workdir) == before


@pytest.mark.slow
def test_full_disk_during_the_final_save_is_one_line(tmp_path):
  """Files are capped at 3 MB (RLIMIT_FSIZE, SIGXFSZ ignored: writes past
  it fail with EFBIG, as a full disk fails them with ENOSPC): the replay
  bank of 2,048 pairs (8 MB) cannot be written; every other file of the
  run, XLA's cache entries included (1 MB at most), fits. The unfinished
  checkpoint is deleted and named, in one line."""

  def cap_file_size():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (3_000_000, 3_000_000))

  workdir = tmp_path / 'run'
  last, stderr = _fails_in_one_line(
      [
          'hatebm_jax.main',
          f'--config={QUICK_START}',
          f'--workdir={workdir}',
          *TINY_FLAGS,
          '--config.persistent_size=2048',
          '--config.num_training_steps=3',
          '--config.eval_freq=0',
      ],
      preexec_fn=cap_file_size,
  )
  assert last.startswith(
      f'Error: OSError: Saving checkpoint 3 in {workdir}/checkpoints failed ('
  )
  assert 'File too large' in last
  assert last.endswith(
      'its unfinished folder was deleted. There is no complete checkpoint '
      'yet: make room (or make the folder writable) and rerun the same '
      'command to continue from it.'
  )
  assert os.listdir(workdir / 'checkpoints') == []


@pytest.fixture
def closed_port():
  """A local port nobody listens on: one just closed."""
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_unreachable_gcs_is_one_line_naming_the_host(tiny_run, closed_port):
  hint = (
      'Check that this host has network access to it (Cloud TPU and GCE '
      'VMs have; elsewhere it needs the internet) and credentials'
  )
  # An emulator that is not there, for gcsfs and TensorStore alike.
  emulator = f'http://127.0.0.1:{closed_port}'
  env = {
      'EPATH_USE_TF': 'false',
      'STORAGE_EMULATOR_HOST': emulator,
      'TENSORSTORE_GCS_HTTP_URL': emulator,
  }
  last, stderr = _fails_in_one_line(
      ['hatebm_jax.sample', '--workdir=gs://some-bucket/run'], env=env
  )
  assert last.startswith(
      'Error: ConnectionError: Cannot reach Google Cloud Storage for '
      f'gs://some-bucket/run: 127.0.0.1:{closed_port} (ConnectionRefusedError'
  )
  assert 'used by gcsfs, from $STORAGE_EMULATOR_HOST' in last and hint in last
  # Through TensorFlow's client, which talks to Google whatever
  # $STORAGE_EMULATOR_HOST says (no internet here).
  last, stderr = _fails_in_one_line(
      [
          'hatebm_jax.export',
          f'--workdir={tiny_run}',
          '--output=gs://some-bucket/model.hatebm',
      ],
      env={'STORAGE_EMULATOR_HOST': emulator},
  )
  assert last.startswith(
      'Error: ConnectionError: Cannot reach Google Cloud Storage for '
      'gs://some-bucket/model.hatebm: www.googleapis.com:443 ('
  )
  assert "used by TensorFlow's GCS client, which ignores" in last
  assert hint in last


@pytest.mark.slow
def test_sampling_refuses_a_checkpoint_cast_to_bfloat16(tiny_run, tmp_path):
  """A checkpoint whose hat network was cast to bfloat16 (and saved so):
  `sample` names the entry and writes nothing (Orbax would cast it back to
  float32 without a word)."""
  workdir = tmp_path / 'run'
  shutil.copytree(tiny_run, workdir)
  model = synthesis.SynthesisMode.from_config(tiny_config())
  ckpt = checkpoint.Checkpointer(str(workdir))
  state = ckpt.restore(jax.eval_shape(model.init, jax.random.PRNGKey(0)), 4)
  ckpt.close()
  shutil.rmtree(workdir / 'checkpoints' / '4')
  cast = jax.tree.map(lambda x: x.astype(jnp.bfloat16), state.hat_params)
  ckpt = checkpoint.Checkpointer(str(workdir))
  ckpt.save(4, state.replace(hat_params=cast), tiny_config())
  ckpt.close()
  before = _tree(workdir)
  last, stderr = _fails_in_one_line(
      ['hatebm_jax.sample', f'--workdir={workdir}', '--num_samples=4']
  )
  assert last.startswith(
      f'Error: ValueError: Checkpoint {workdir}/checkpoints/4 does not hold '
      'the state its config describes ('
  )
  assert 'hat_params/block1/conv1/bias: checkpoint bfloat16[8], config ' in last
  assert _tree(workdir) == before


@pytest.mark.slow
def test_truncated_checkpoint_is_one_line_for_export(tiny_run, tmp_path):
  """A truncated array file: one error line naming TensorStore's own
  reason, not Orbax's wrapper nor the hundreds of tracebacks its unfinished
  reads print when collected."""
  workdir = tmp_path / 'run'
  shutil.copytree(tiny_run, workdir)
  files = (workdir / 'checkpoints' / '4' / 'state').rglob('*')
  largest = max((p for p in files if p.parent.name == 'd'), key=os.path.getsize)
  os.truncate(largest, 1000)
  last, stderr = _fails_in_one_line(
      [
          'hatebm_jax.export',
          f'--workdir={workdir}',
          f'--output={tmp_path / "model.hatebm"}',
      ]
  )
  lines = [
      line for line in stderr.splitlines() if not line.startswith(('I1', 'W1'))
  ]
  assert lines == [last]
  assert last.startswith(
      f'Error: OSError: Checkpoint {workdir}/checkpoints/4 cannot be read '
      '(ValueError: OUT_OF_RANGE: Error reading '
  )
  assert 'is not valid for value of size 1000)' in last
  assert 'The newest intact checkpoint is step 2 (checked)' in last
  assert not (tmp_path / 'model.hatebm').exists()


_WRITES_TO_FD_2 = r"""
import os
from hatebm_jax.infra import runtime
with runtime._start_up_noise_dropped():
  for line in (
      'WARNING: All log messages before absl::InitializeLog() is called are '
      'written to STDERR',
      'I0000 00:00:1.0 123 cudart_stub.cc:31] Could not find cuda drivers on '
      'your machine, GPU will not be used.',
      'W0000 00:00:1.0 123 port.cc:153] oneDNN custom operations are on.',
      'E1207 plugin error kept',
  ):
    os.write(2, (line + '\n').encode())
os.write(2, b'after\n')
"""


@pytest.mark.parametrize('traceback, kept', [('0', 2), ('1', 5)])
def test_only_the_cuda_stubs_start_up_notices_are_dropped(traceback, kept):
  """What TensorFlow and JAX's CUDA plugin write to file descriptor 2 as
  they load without an NVIDIA driver is dropped; any other line written
  then, and everything after, is kept in order; HATEBM_TRACEBACK=1 keeps all."""
  result = subprocess.run(
      [sys.executable, '-c', _WRITES_TO_FD_2],
      cwd=ROOT,
      env=dict(os.environ, HATEBM_TRACEBACK=traceback),
      capture_output=True,
      text=True,
      timeout=120,
      check=True,
  )
  lines = result.stderr.splitlines()
  assert len(lines) == kept, lines
  assert lines[-2:] == ['E1207 plugin error kept', 'after']
