"""Kernels of a compiled XLA module, read from its text (`compiled.as_text()`).

What launches on a GPU is each instruction of the entry computation that is not pure
bookkeeping (parameters, tuples, bitcasts, constants): fusions, library calls (cuBLAS,
cuDNN), copies, sorts, unfused scatters. A while loop's body launches once per trip; it is
counted as its own kernels times the trip count XLA records (`known_trip_count`), or once
when none is recorded (and reported). Used by `benchmarks/gpu_kernels.py` (deviceless
compile) and `benchmarks/device_check.py` (on the machine).
"""

import collections
import re
from typing import Any

_BOOKKEEPING = {
  'parameter',
  'get-tuple-element',
  'tuple',
  'bitcast',
  'constant',
  'after-all',
  'opt-barrier',
  'partition-id',
  'replica-id',
}
_INSTRUCTION = re.compile(r'\s+(?:ROOT )?%([\w.\-]+) = (.*?) ([\w\-]+)\((.*)$')


def computations(hlo_text: str) -> tuple[dict[str, list[str]], str]:
  """{computation name: instruction lines} and the entry computation's name."""
  comps: dict[str, list[str]] = {}
  current, entry = None, ''
  for line in hlo_text.split('\n'):
    m = re.match(r'^(ENTRY )?%([\w.\-]+) ', line)
    if m and line.rstrip().endswith('{'):
      current = m.group(2)
      comps[current] = []
      if m.group(1):
        entry = current
      continue
    if line.startswith('}'):
      current = None
    elif current is not None and line.strip():
      comps[current].append(line)
  return comps, entry


def _kind(opcode: str, line: str) -> str:
  if opcode == 'fusion':
    m = re.search(r'kind=(\w+)', line)
    backend = re.search(r'"kind":"([\w_]+)"', line)
    return 'fusion ' + (m.group(1) if m else '?') + (':' + backend.group(1) if backend else '')
  if opcode == 'custom-call':
    m = re.search(r'custom_call_target="([^"]+)"', line)
    return 'custom-call ' + (m.group(1) if m else '?')
  return opcode


def component(line: str) -> str:
  """A model part from the op_name metadata: 'fwd title_encoder', 'bwd losses', ..."""
  m = re.search(r'op_name="([^"]+)"', line)
  op = m.group(1) if m else ''
  if not op:
    return 'no op_name'
  if 'mask_batch' in op:
    return 'masking'
  direction = 'bwd ' if 'transpose(' in op else 'fwd '
  m = re.search(r'MakeModel\)*/(\w+)', op)
  if m:
    part = m.group(1)
    if part == 'image_encoder':
      part += '/resnet' if '/resnet' in op else '/transformer'
    return direction + part
  if 'jvp(' in op or 'transpose(' in op:
    return direction + 'losses'
  return 'optimizer and glue'


def kernels(hlo_text: str) -> dict[str, Any]:
  """Kernels per step: total, by kind, by model component, and the while loops found."""
  comps, entry = computations(hlo_text)
  by_kind: collections.Counter = collections.Counter()
  by_part: collections.Counter = collections.Counter()
  loops = []

  def walk(name: str, times: int) -> None:
    for line in comps.get(name, []):
      m = _INSTRUCTION.match(line)
      if not m or m.group(3) in _BOOKKEEPING:
        continue
      opcode = m.group(3)
      if opcode == 'while':
        body = re.search(r'body=%([\w.\-]+)', line)
        trips = re.search(r'"known_trip_count":\{"n":"(\d+)"', line)
        n = int(trips.group(1)) if trips else 1
        loops.append({'body': body.group(1) if body else '?', 'trips': n, 'known': bool(trips)})
        if body:
          walk(body.group(1), times * n)
        continue
      if opcode in ('call', 'conditional'):
        by_kind[opcode] += times
        continue
      by_kind[_kind(opcode, line)] += times
      by_part[component(line)] += times

  walk(entry, 1)
  return {
    'total': sum(by_kind.values()),
    'by_kind': dict(by_kind.most_common()),
    'by_component': dict(by_part.most_common()),
    'while_loops': loops,
  }
