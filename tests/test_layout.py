"""The package's rooms import only downwards, without cycles, and stay small (STYLE.md).

Layers, lowest first; a module may import its own room and any room below it:

  parallel, atomic_file, rundir < text < datasets < input < models < losses < retrieval < train
  < export < serving < evaluation < quickstart

and serving never imports train (what is served must not depend on how it was trained).
There is no exception list: the metrics and the exact top-k that training, export, serving
and evaluation share live in `retrieval/`, below all of them.
Every import is counted, also those inside functions and under TYPE_CHECKING.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / 'make_jax'

LAYERS = [
  ('parallel', 'atomic_file', 'rundir'),
  ('text',),
  ('datasets',),
  ('input',),
  ('models',),
  ('losses',),
  ('retrieval',),
  ('train',),
  ('export',),
  ('serving',),
  ('evaluation',),
  ('quickstart',),
]
RANK = {room: i for i, rooms in enumerate(LAYERS) for room in rooms}
FORBIDDEN = {('serving', 'train')}
MAX_LINES = 400


def _modules() -> dict[str, pathlib.Path]:
  out = {}
  for path in PACKAGE.rglob('*.py'):
    rel = path.relative_to(ROOT).with_suffix('')
    parts = list(rel.parts)
    if parts[-1] == '__init__':
      parts = parts[:-1]
    out['.'.join(parts)] = path
  return out


def _room(module: str) -> str | None:
  parts = module.split('.')
  return parts[1] if len(parts) > 1 else None


def _imports(path: pathlib.Path, modules: dict[str, pathlib.Path]) -> set[str]:
  """Package modules that `path` imports (a `from pkg import name` may name a module)."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names = [node.module] + [f'{node.module}.{a.name}' for a in node.names]
    else:
      continue
    for name in names:
      if name in modules and name != 'make_jax':
        found.add(name)
  return found


def _graph_of(module: str) -> set[str]:
  modules = _modules()
  return _imports(modules[module], modules)


def _graph() -> dict[str, set[str]]:
  modules = _modules()
  return {m: _imports(p, modules) for m, p in modules.items()}


def test_every_room_has_a_layer():
  rooms = {_room(m) for m in _modules()} - {None}
  assert rooms <= set(RANK), f'rooms without a layer in this test: {rooms - set(RANK)}'


def test_imports_only_go_down():
  bad = []
  for module, deps in _graph().items():
    room = _room(module)
    if room is None:
      continue
    for dep in deps:
      dep_room = _room(dep)
      if dep_room is None or dep_room == room:
        continue
      if RANK[dep_room] > RANK[room] or (room, dep_room) in FORBIDDEN:
        bad.append(f'{module} -> {dep}')
  assert not bad, 'imports that go up a layer:\n' + '\n'.join(sorted(bad))


def test_no_import_cycles():
  graph = _graph()
  # Package __init__ files re-export their room; an edge into one's own parent package is
  # not a cycle of concern, so drop edges from a module to a package that contains it.
  edges = {
    m: {d for d in deps if d != m and not m.startswith(d + '.')} for m, deps in graph.items()
  }
  state: dict[str, int] = {}
  stack: list[str] = []

  def visit(m: str) -> None:
    state[m] = 1
    stack.append(m)
    for d in sorted(edges.get(m, ())):
      if state.get(d) == 1:
        cycle = stack[stack.index(d) :] + [d]
        pytest.fail('import cycle: ' + ' -> '.join(cycle))
      if d not in state:
        visit(d)
    stack.pop()
    state[m] = 2

  for m in sorted(edges):
    if m not in state:
      visit(m)


@pytest.mark.parametrize(
  'path',
  sorted(
    p.relative_to(ROOT).as_posix()
    for d in ('make_jax', 'tools', 'configs', 'benchmarks')
    for p in (ROOT / d).rglob('*.py')
  ),
)
def test_files_are_small(path):
  n = len((ROOT / path).read_text().splitlines())
  assert n <= MAX_LINES, f'{path} has {n} lines (> {MAX_LINES}): split it by concern'


def test_workspace_names_every_module():
  text = (ROOT / 'WORKSPACE.md').read_text()
  missing = [
    p.relative_to(PACKAGE).as_posix()
    for p in PACKAGE.rglob('*.py')
    if p.name != '__init__.py' and p.name not in text
  ]
  assert not missing, f'WORKSPACE.md does not mention: {missing}'
