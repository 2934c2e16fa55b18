"""Packaging: pyproject.toml's metadata agrees with the pinned requirement
files, and `pip install .` alone, in a fresh virtual environment, runs the
quick start."""

import os
import re
import shutil
import subprocess
import sys
import tomllib

import pytest

from conftest import CONFIG_DIR, ROOT


def _project() -> dict:
  with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
    return tomllib.load(f)['project']


def _names(requirements) -> set[str]:
  """Distribution names of requirement strings, normalised (PEP 503)."""
  names = set()
  for line in requirements:
    line = line.split('#')[0].strip()
    if line and not line.startswith('-'):
      name = re.match(r'[A-Za-z0-9._-]+', line).group(0)
      names.add(re.sub(r'[-_.]+', '-', name).lower())
  return names


def _file_names(name: str) -> set[str]:
  with open(os.path.join(ROOT, name)) as f:
    return _names(f)


def test_dependencies_cover_the_pinned_environment():
  """Everything requirements.txt pins is declared (TensorFlow's CPU build
  where it exists, the full one elsewhere), with the pinned version as the
  lower bound; the test extra is requirements-test.txt."""
  project = _project()
  declared = _names(project['dependencies'])
  assert _file_names('requirements.txt') <= declared
  assert {'tensorflow', 'grain', 'array-record', 'pooch'} <= declared
  with open(os.path.join(ROOT, 'requirements.txt')) as f:
    pins = dict(
        line.strip().split('==') for line in f if '==' in line.split('#')[0]
    )
  for name, version in pins.items():
    bounds = [d for d in project['dependencies'] if d.startswith(name + '>=')]
    assert bounds and bounds[0].split(';')[0] == f'{name}>={version}', name
  extras = project['optional-dependencies']
  assert _names(extras['test']) == _file_names('requirements-test.txt')
  assert extras['tpu'] == [f'jax[tpu]=={pins["jax"]}']
  assert extras['cuda12'] == [f'jax[cuda12]=={pins["jax"]}']
  # The compilers of hatebm_jax.aot, at the pinned JAX: libtpu through
  # jax[tpu], the CUDA plugin without NVIDIA's runtime libraries (only their
  # PTX assembler, nvcc's), so that it installs on a CPU-only machine.
  assert sorted(extras['aot']) == sorted(
      [
          f'jax[tpu]=={pins["jax"]}',
          f'jax-cuda12-plugin=={pins["jax"]}',
          f'jax-cuda12-pjrt=={pins["jax"]}',
          'nvidia-cuda-nvcc-cu12==12.9.86',
      ]
  )
  assert set(extras) == {'tpu', 'cuda12', 'aot', 'fid', 'gcs', 'test'}


@pytest.mark.slow
@pytest.mark.multiprocess
def test_pip_install_alone_runs_the_quick_start(tmp_path):
  """A fresh virtualenv (no system packages), `pip install <checkout>`, then
  the README's quick-start command for 3 steps. Needs the package registry
  (or pip's cache, which the README's install command fills)."""
  # What a source distribution holds, copied: building in the checkout
  # would write build/ there.
  source = tmp_path / 'source'
  source.mkdir()
  for name in ('pyproject.toml', 'README.md', 'LICENSE'):
    shutil.copy(os.path.join(ROOT, name), source / name)
  shutil.copytree(
      os.path.join(ROOT, 'hatebm_jax'),
      source / 'hatebm_jax',
      ignore=shutil.ignore_patterns('__pycache__'),
  )
  venv = tmp_path / 'venv'
  subprocess.run([sys.executable, '-m', 'venv', str(venv)], check=True)
  python = str(venv / 'bin' / 'python')
  env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH',)}
  install = subprocess.run(
      [python, '-m', 'pip', 'install', '-q', str(source)],
      env=env,
      capture_output=True,
      text=True,
  )
  assert install.returncode == 0, install.stderr[-3000:]
  check = subprocess.run(
      [python, '-m', 'pip', 'check'], env=env, capture_output=True, text=True
  )
  assert check.returncode == 0, check.stdout
  # Run outside the checkout, so that only the installed package is found.
  run = subprocess.run(
      [
          python,
          '-m',
          'hatebm_jax.main',
          f'--config={os.path.join(CONFIG_DIR, "fashion_mnist_synth.py")}',
          f'--workdir={tmp_path / "run"}',
          '--config.num_training_steps=3',
      ],
      cwd=tmp_path,
      env=env,
      capture_output=True,
      text=True,
  )
  assert run.returncode == 0, run.stderr[-3000:]
  assert 'Trained steps 0-3' in run.stderr
  located = subprocess.run(
      [python, '-c', 'import hatebm_jax; print(hatebm_jax.__file__)'],
      cwd=tmp_path,
      env=env,
      capture_output=True,
      text=True,
  )
  assert str(venv) in located.stdout
  assert os.path.isdir(tmp_path / 'run' / 'checkpoints' / '3')
