"""The package's shape: imports point down the layers, no import cycles, and
every mode keeps the written contract (`hatebm_jax.modes.base`)."""

import ast
import glob
import os
import re

import pytest

from conftest import ROOT
from hatebm_jax import modes
from hatebm_jax.modes import base

PACKAGE = os.path.join(ROOT, 'hatebm_jax')
# Layers from the top; a module may import its own layer or lower ones.
LAYERS = [
    (
        'hatebm_jax.main',
        'hatebm_jax.sample',
        'hatebm_jax.evaluate',
        'hatebm_jax.export',
        'hatebm_jax.convert',
        'hatebm_jax.aot',
        'hatebm_jax.cli',
    ),
    ('hatebm_jax.compiled',),
    ('hatebm_jax.train',),
    ('hatebm_jax.evaluators',),
    ('hatebm_jax.evaluation',),
    ('hatebm_jax.serving',),
    ('hatebm_jax.validation',),
    ('hatebm_jax.modes',),
    ('hatebm_jax.hat_ebm', 'hatebm_jax.models'),
    (
        'hatebm_jax.config_base',
        'hatebm_jax.data',
        'hatebm_jax.optim',
        'hatebm_jax.visualize',
    ),
    ('hatebm_jax.infra',),
]


def _module_name(path):
  rel = os.path.relpath(path, ROOT)[: -len('.py')].replace(os.sep, '.')
  return rel.removesuffix('.__init__')


def _imports():
  """{module: set of hatebm_jax modules it imports} (any scope)."""
  graph = {}
  for folder, _, files in os.walk(PACKAGE):
    for name in files:
      if not name.endswith('.py'):
        continue
      path = os.path.join(folder, name)
      module = _module_name(path)
      found = set()
      for node in ast.walk(ast.parse(open(path).read())):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and (node.module.startswith('hatebm_jax'))
        ):
          for alias in node.names:
            full = f'{node.module}.{alias.name}'
            sub = os.path.join(ROOT, *full.split('.'))
            is_module = os.path.exists(sub + '.py') or os.path.isdir(sub)
            found.add(full if is_module else node.module)
        elif isinstance(node, ast.Import):
          found |= {
              a.name for a in node.names if a.name.startswith('hatebm_jax.')
          }
      graph[module] = found - {module, 'hatebm_jax'}
  return graph


def _layer(module):
  if module == 'hatebm_jax':  # the package: `load_pretrained` on top
    return 0
  for i, layer in enumerate(LAYERS):
    if any(module == m or module.startswith(m + '.') for m in layer):
      return i
  raise AssertionError(f'{module} is in no layer of LAYERS')


def test_every_module_has_a_layer_and_imports_point_down():
  graph = _imports()
  assert len(graph) > 40  # the whole package was read
  upward = [
      f'{a} (layer {_layer(a)}) imports {b} (layer {_layer(b)})'
      for a, targets in graph.items()
      for b in targets
      if _layer(b) < _layer(a)
  ]
  assert not upward, upward


def test_no_import_cycles():
  graph = _imports()
  cycles, state = [], {}

  def visit(module, path):
    state[module] = 'open'
    for target in sorted(graph.get(module, ())):
      if state.get(target) == 'open':
        cycles.append(path[path.index(target) :] + [target])
      elif target not in state:
        visit(target, path + [target])
    state[module] = 'done'

  for module in sorted(graph):
    if module not in state:
      visit(module, [module])
  assert not cycles, cycles


def test_nothing_probes_a_mode_for_methods():
  """Capabilities are read from `mode.capabilities`, never probed."""
  probe = re.compile(r'\b(hasattr|getattr)\((model|mode|run\.mode|net)\b')
  hits = []
  for folder, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith('.py'):
        path = os.path.join(folder, name)
        for n, line in enumerate(open(path), 1):
          if probe.search(line):
            hits.append(f'{path}:{n}: {line.strip()}')
  assert not hits, hits


def fashion_mnist_configs():
  """{mode: name of its Fashion-MNIST config in configs/} (the first)."""
  from conftest import CONFIG_DIR, load_config  # pylint: disable=g-import-not-at-top

  found = {}
  for path in sorted(glob.glob(os.path.join(CONFIG_DIR, 'fashion_mnist_*.py'))):
    name = os.path.basename(path)[:-3]
    found.setdefault(load_config(name).mode, name)
  return found


def test_every_mode_has_a_cpu_config():
  assert set(fashion_mnist_configs()) == set(modes.MODES)


@pytest.mark.parametrize('name', sorted(modes.MODES))
def test_modes_keep_the_contract(name):
  cls = modes.MODES[name]
  assert issubclass(cls, base.Mode)
  assert not getattr(cls, '__abstractmethods__', None)
  caps = cls.capabilities
  assert isinstance(caps, base.Capabilities) and caps.sources
  assert set(caps.sources) <= {'ebm', 'generator', 'initial', 'ddls'}
  # An optional method exists exactly where the capability says so.
  for flag, method in [
      (caps.energy, 'energy'),
      (caps.chain, 'chain_segment'),
      (caps.test_loss, 'test_loss'),
      (caps.generator_source, 'generator_networks'),
  ]:
    overridden = getattr(cls, method) is not getattr(base.Mode, method)
    assert overridden == flag, (name, method)
  assert caps.chain == ('ebm' in caps.sources)


@pytest.mark.parametrize('name', sorted(modes.MODES))
def test_every_state_field_has_a_role(name):
  from conftest import load_config  # pylint: disable=g-import-not-at-top

  config = load_config(fashion_mnist_configs()[name])
  mode = modes.build(config)
  abstract = mode.abstract_state(config.seed)
  import dataclasses  # pylint: disable=g-import-not-at-top

  roles = {f.name: f.metadata.get('role') for f in dataclasses.fields(abstract)}
  assert set(roles.values()) <= set(base.ROLES), roles
  assert roles['step'] == base.COUNTER and roles['rng'] == base.KEY
  assert base.sharded_fields(abstract) == (
      ('bank',) if name == 'synthesis' else ()
  )
  networks = base.networks_only(abstract)
  assert all(
      (getattr(networks, f) is None) == (role != base.NETWORK)
      for f, role in roles.items()
  )
