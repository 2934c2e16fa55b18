"""What a compiled program does, read from its optimised HLO text.

`jax.stages.Compiled.as_text()` is the program XLA will run, after SPMD
partitioning, fusion and scheduling. From it we read:

- the while loops, with their trip counts: XLA's cost analysis counts a
  loop body once, whatever its trip count, so a Langevin chain of K steps
  must be corrected (`hatebm_jax.aot`);
- the collectives (all-reduce, all-gather, reduce-scatter, all-to-all,
  collective-permute), with the bytes each moves and how often it runs per
  call of the program, and whether it sits inside a loop.

The text format is XLA's HloModule::ToString: computations start at column
0 (`%name (params) -> type {` or `ENTRY %name ...`), instructions are
indented (`%x = f32[4,8]{1,0} op(%a, %b), attr=..., body=%c`) and the
computation ends with `}`.
"""

import dataclasses
import math
import re
from typing import Optional

COLLECTIVES = (
    'all-reduce',
    'all-gather',
    'reduce-scatter',
    'all-to-all',
    'collective-permute',
)
_BYTES = {
    'pred': 1,
    's4': 0.5,
    'u4': 0.5,
    's8': 1,
    'u8': 1,
    'f8e4m3fn': 1,
    'f8e5m2': 1,
    'bf16': 2,
    'f16': 2,
    's16': 2,
    'u16': 2,
    'f32': 4,
    's32': 4,
    'u32': 4,
    'f64': 8,
    's64': 8,
    'u64': 8,
    'c64': 8,
    'c128': 16,
}
# Async starts whose shape is (operands, results, ...); an all-reduce-start
# has the shape of its results.
_OPERAND_AND_RESULT = (
    'all-gather-start',
    'collective-permute-start',
    'all-to-all-start',
)
_ARRAY = re.compile(r'\b([a-z]+\d*[a-z0-9]*)\[([\d,]*)\]')
_INSTRUCTION = re.compile(
    r'^\s*(?:ROOT )?%?([\w.\-]+) = (.*?) ([a-z\-]+)\((.*)$'
)
_CALLED = re.compile(
    r'\b(?:body|condition|calls|to_apply|branch_computations|'
    r'called_computations)=\{?(%[\w.\-]+(?:, %[\w.\-]+)*)\}?'
)


def shape_bytes(shape: str) -> int:
  """Bytes of an HLO shape: 'f32[4,8]{1,0}' -> 128; a tuple
  '(f32[2], bf16[4])' sums its elements; layouts and tiling are ignored."""
  total = 0.0
  for dtype, dims in _ARRAY.findall(shape):
    if dtype in _BYTES:
      total += _BYTES[dtype] * math.prod(int(d) for d in dims.split(',') if d)
  return int(total)


@dataclasses.dataclass(frozen=True)
class Instruction:
  name: str
  shape: str
  opcode: str
  text: str


@dataclasses.dataclass
class Module:
  """An HLO module's computations (name -> instructions) and entry."""

  computations: dict[str, list[Instruction]]
  entry: str

  @classmethod
  def parse(cls, text: str) -> 'Module':
    """Parses `Compiled.as_text()`.

    Raises:
      ValueError: when the text has no ENTRY computation.
    """
    computations, entry, current = {}, None, None
    for line in text.splitlines():
      if line and not line[0].isspace() and line.rstrip().endswith('{'):
        head = line.split(' (', 1)[0].split(' ')
        name = head[-1].lstrip('%')
        if head[0] == 'ENTRY':
          entry = name
        current = computations.setdefault(name, [])
      elif line.startswith('}'):
        current = None
      elif current is not None:
        match = _INSTRUCTION.match(line)
        if match:
          current.append(
              Instruction(match.group(1), match.group(2), match.group(3), line)
          )
    if entry is None:
      raise ValueError('Not an HLO module: no ENTRY computation.')
    return cls(computations, entry)

  def called(self, instruction: Instruction) -> list[str]:
    """Names of the computations an instruction calls."""
    names = []
    for group in _CALLED.findall(instruction.text):
      names += [n.strip().lstrip('%') for n in group.split(',')]
    return [n for n in names if n in self.computations]

  def reachable(self, root: str) -> set[str]:
    """`root` and every computation it calls, directly or not."""
    seen, todo = set(), [root]
    while todo:
      name = todo.pop()
      if name in seen:
        continue
      seen.add(name)
      for instruction in self.computations[name]:
        todo += self.called(instruction)
    return seen


@dataclasses.dataclass(frozen=True)
class Loop:
  """A while loop: where it is, its body and its trip count (None when XLA
  does not know it)."""

  computation: str
  body: str
  trip_count: Optional[int]


def _trip_count(module: Module, instruction: Instruction) -> Optional[int]:
  """From XLA's known_trip_count annotation (GPU), else from a condition
  `counter < constant` (TPU; the counter starts at 0, as in lax loops)."""
  known = re.search(r'"known_trip_count":\{"n":"(\d+)"', instruction.text)
  if known:
    return int(known.group(1))
  condition = re.search(r'condition=%?([\w.\-]+)', instruction.text)
  if not condition or condition.group(1) not in module.computations:
    return None
  body = module.computations[condition.group(1)]
  constants = {
      i.name: int(m.group(1))
      for i in body
      if i.opcode == 'constant'
      and (m := re.search(r'constant\((-?\d+)\)', i.text))
  }
  for instruction_ in body:
    if instruction_.opcode == 'compare' and 'direction=LT' in instruction_.text:
      operands = re.findall(r'%([\w.\-]+)', instruction_.text.split('(', 1)[1])
      for operand in operands:
        if operand in constants:
          return constants[operand]
  return None


def loops(module: Module) -> list[Loop]:
  """Every while loop of the module."""
  found = []
  for name, instructions in module.computations.items():
    for instruction in instructions:
      if instruction.opcode == 'while':
        body = re.search(r'body=%?([\w.\-]+)', instruction.text).group(1)
        found.append(Loop(name, body, _trip_count(module, instruction)))
  return found


@dataclasses.dataclass(frozen=True)
class Collective:
  """One collective instruction.

  Attributes:
    kind: one of COLLECTIVES (async -start/-done pairs count once).
    computation: where it is.
    bytes: size of its result per device.
    runs: how often it runs per call of the program (the product of the
      trip counts of the loops around it; a loop of unknown trip count
      counts once).
    in_loop: whether it sits inside a while loop body.
    op_name: the JAX operation it came from (metadata), if recorded.
  """

  kind: str
  computation: str
  bytes: int
  runs: int
  in_loop: bool
  op_name: str


def collectives(module: Module) -> list[Collective]:
  """Every collective of the module, with how often it runs."""
  runs = {module.entry: 1}
  in_loop = {module.entry: False}
  todo = [module.entry]
  while todo:  # computations in call order, with their run counts
    name = todo.pop()
    for instruction in module.computations[name]:
      trips = 1
      if instruction.opcode == 'while':
        trips = _trip_count(module, instruction) or 1
      for callee in module.called(instruction):
        if callee not in runs:
          runs[callee] = runs[name] * trips
          in_loop[callee] = in_loop[name] or instruction.opcode == 'while'
          todo.append(callee)
  found = []
  for name, instructions in module.computations.items():
    for instruction in instructions:
      kind = instruction.opcode.removesuffix('-start')
      if kind not in COLLECTIVES or instruction.opcode.endswith('-done'):
        continue
      op_name = re.search(r'op_name="([^"]*)"', instruction.text)
      shape = instruction.shape
      if instruction.opcode in _OPERAND_AND_RESULT:
        shape = _async_result(shape)
      found.append(
          Collective(
              kind,
              name,
              shape_bytes(shape),
              runs.get(name, 1),
              in_loop.get(name, False),
              op_name.group(1) if op_name else '',
          )
      )
  return found


def _async_result(shape: str) -> str:
  """The result part of an async collective's (operands, result[, ...])
  tuple shape: its second element."""
  depth, parts, start = 0, [], 1
  for i, char in enumerate(shape):
    if char in '([{':
      depth += 1
    elif char in ')]}':
      depth -= 1
    if char == ',' and depth == 1:
      parts.append(shape[start:i])
      start = i + 1
  parts.append(shape[start:-1])
  return parts[1] if len(parts) > 1 else parts[0]


def summary(found: list[Collective]) -> list[dict]:
  """Per kind: {'kind', 'count' (instructions), 'runs' (per call),
  'bytes' (per device per call), 'in_loop' (runs inside loops)}, sorted by
  kind."""
  rows = {}
  for c in found:
    row = rows.setdefault(
        c.kind,
        {'kind': c.kind, 'count': 0, 'runs': 0, 'bytes': 0, 'in_loop': 0},
    )
    row['count'] += 1
    row['runs'] += c.runs
    row['bytes'] += c.bytes * c.runs
    row['in_loop'] += c.runs if c.in_loop else 0
  return [rows[k] for k in sorted(rows)]


# ---------------------------------------------------------------------------
# The TPU compiler's per-instruction cycle estimates.

_CYCLES = re.compile(r'"estimated_cycles":"(\d+)"')
_CONTROL = re.compile(
    r'\b(?:body|condition|branch_computations)=\{?%?([\w.\-]+)'
)
_FREE = {
    'parameter',
    'constant',
    'tuple',
    'get-tuple-element',
    'bitcast',
    'while',
    'conditional',
    'partition-id',
    'replica-id',
    'after-all',
}


def convolutions(module: Module, instruction: Instruction) -> list[str]:
  """The convolutions and dots an instruction runs, as short text:
  'f32[4,64,64,128] <- f32[4,64,64,128] x f32[3,3,128,128], window 3x3'
  (result <- operands), with '(highest)' where the operands' precision is
  set above the default."""
  found = []
  bodies = [instruction.text]
  shapes = {}
  if instruction.opcode == 'fusion':
    for called in module.called(instruction):
      for i in module.computations[called]:
        shapes[i.name] = i.shape
        if i.opcode in ('convolution', 'dot'):
          bodies.append(i.text)
    bodies = bodies[1:]
  elif instruction.opcode not in ('convolution', 'dot'):
    return []
  for text in bodies:
    match = _INSTRUCTION.match(text)
    operands = re.findall(r'%([\w.\-]+)', match.group(4).split(')', 1)[0])
    window = re.search(r'window=\{size=([\dx]+)', text)
    precision = re.search(r'operand_precision=\{(\w+)', text)
    found.append(
        f'{_ARRAY.search(match.group(2)).group(0)} <- '
        + ' x '.join(
            _ARRAY.search(shapes.get(o, '?[]')).group(0) for o in operands[:2]
        )
        + (f', window {window.group(1)}' if window else '')
        + (
            f' ({precision.group(1)})'
            if precision and precision.group(1) != 'default'
            else ''
        )
    )
  return found


@dataclasses.dataclass(frozen=True)
class Timed:
  """One executed instruction and the TPU compiler's estimate of it.

  Attributes:
    name, opcode: the instruction.
    kind: what it computes (`op_kind`).
    cycles: its `estimated_cycles` (backend_config), None when the compiler
      gave none.
    runs: how often it runs per call of the program (loop trip counts).
    bytes: the size of its result.
  """

  name: str
  opcode: str
  kind: str
  cycles: Optional[int]
  runs: int
  bytes: int


def op_kind(module: Module, instruction: Instruction) -> str:
  """What an executed instruction computes: 'convolution', 'matmul',
  'pooling' (reduce-window), 'reduction', 'collective', 'copy/layout' or
  'elementwise', from the operations it (or the fusion it calls) holds."""
  opcodes = {instruction.opcode}
  if instruction.opcode == 'fusion':
    for called in module.called(instruction):
      opcodes |= {i.opcode for i in module.computations[called]}
  base = {o.removesuffix('-start').removesuffix('-done') for o in opcodes}
  for kind, found in (
      ('convolution', {'convolution'}),
      ('matmul', {'dot'}),
      ('collective', set(COLLECTIVES)),
      ('pooling', {'reduce-window', 'select-and-scatter'}),
      ('reduction', {'reduce'}),
  ):
    if base & found:
      return kind
  layout = {
      'copy',
      'transpose',
      'bitcast',
      'slice',
      'dynamic-slice',
      'dynamic-update-slice',
      'concatenate',
      'pad',
      'reshape',
      'broadcast',
      'parameter',
      'constant',
      'fusion',
      'custom-call',
  }
  if base <= layout:
    return 'copy/layout'
  return 'elementwise'


def timed(module: Module) -> list[Timed]:
  """Every instruction the program executes (the entry computation and the
  bodies of its loops, not the insides of fusions), with the TPU
  compiler's cycle estimate and its runs per call."""
  runs = {module.entry: 1}
  todo = [module.entry]
  while todo:
    name = todo.pop()
    for instruction in module.computations[name]:
      if instruction.opcode not in ('while', 'conditional'):
        continue
      trips = (
          _trip_count(module, instruction) or 1
          if instruction.opcode == 'while'
          else 1
      )
      for callee in _CONTROL.findall(instruction.text):
        if callee in module.computations and callee not in runs:
          runs[callee] = runs[name] * trips
          todo.append(callee)
  found = []
  for name, count in runs.items():
    for instruction in module.computations[name]:
      if instruction.opcode in _FREE or instruction.opcode.endswith('-done'):
        continue
      cycles = _CYCLES.search(instruction.text)
      found.append(
          Timed(
              instruction.name,
              instruction.opcode,
              op_kind(module, instruction),
              int(cycles.group(1)) if cycles else None,
              count,
              shape_bytes(instruction.shape),
          )
      )
  return found
