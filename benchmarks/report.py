r"""Prints docs/performance.md: every performance figure of the project, measured in one run.

  python -m benchmarks.report > docs/performance.md          # ~25 min on 2 CPU cores
  python -m benchmarks.report --sections=machine,negatives  # some sections only

It measures and prints; it asserts nothing. Each section runs one benchmark of this folder
in a process of its own (each sets its own XLA device count, and none inherits another's
compiled programs or threads), in sequence, so no two compete for the cores. A section
shows the exact command (rerun it for that figure alone), its wall time and its output
verbatim; a benchmark that fails shows the end of its error and the report goes on.

Sections:
  machine    CPU, cores, memory, load, library versions, the commit;
  train      training throughput and MFU per config and layout (bench_train: the trainer's
             step on 8 XLA CPU devices, 'single' vs 'pmap' vs 'pjit'; tiny and results);
  base       the base config's train step on one device, batch 8 (bench_model);
  negatives  the cost of CDNS and MBNS relative to in-batch only, inside the real step
             (bench_negatives);
  input      the input pipeline's examples/s at the results config's image size
             (bench_input), against what the train section's step consumes;
  index      ScaNN against exact search, hnswlib and faiss on 100k vectors, and the export's
             products/s and the query table's queries/s (bench_index);
  server     the search server under concurrent clients (load_test).
"""

import datetime
import os
import platform
import re
import shlex
import subprocess
import sys
import time

from absl import app, flags

_SECTIONS = flags.DEFINE_list(
  'sections',
  ['machine', 'train', 'base', 'negatives', 'input', 'index', 'server'],
  'Sections to run.',
)
_DATA_DIR = flags.DEFINE_string('data_dir', '/tmp/make_jax_tfds', 'TFDS data_dir (input).')
_MANUAL_DIR = flags.DEFINE_string('manual_dir', '../shared/data', 'Folder with the fashion zip.')
_TIMEOUT = flags.DEFINE_integer('timeout_s', 1800, 'Limit per section, seconds.')

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _commands() -> dict[str, list[str]]:
  py = [sys.executable, '-m']
  return {
    'train': py
    + [
      'benchmarks.bench_train',
      '--devices=8',
      '--configs=tiny,results',
      '--batch_sizes=16,64',
      '--rounds=5',
    ],
    'base': py
    + ['benchmarks.bench_model', '--config=base', '--batch_size=8', '--rows=train', '--rounds=3'],
    'negatives': py + ['benchmarks.bench_negatives', '--config=results', '--batch_size=64'],
    'input': py
    + [
      'benchmarks.bench_input',
      f'--data_dir={_DATA_DIR.value}',
      f'--manual_dir={_MANUAL_DIR.value}',
      '--image_size=32',
      '--batch_size=64',
    ],
    'index': py + ['benchmarks.bench_index', '--n=100000', '--queries=2000', '--rounds=3'],
    'server': py
    + ['benchmarks.load_test', '--config=configs/tiny.py', '--duration_s=20', '--clients=1,8'],
  }


_TITLES = {
  'train': 'Training throughput and MFU per config and layout',
  'base': 'The base (paper-shaped) config on one device',
  'negatives': 'CDNS and MBNS inside the real step',
  'input': 'Input pipeline against what training consumes',
  'index': 'Index, export and query table',
  'server': 'Search server under load',
}


def _first_line(path: str, prefix: str) -> str:
  try:
    with open(path) as f:
      for line in f:
        if line.startswith(prefix):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return 'unknown'


def _git(*args: str) -> str:
  try:
    return subprocess.run(
      ['git', *args], cwd=_ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return 'unknown'


def _machine() -> str:
  import importlib.metadata as md

  mem_kib = _first_line('/proc/meminfo', 'MemTotal').split()[0]
  flags_line = _first_line('/proc/cpuinfo', 'flags').split()
  simd = [f for f in ('avx2', 'fma', 'avx512f', 'amx_tile') if f in flags_line]
  versions = []
  for pkg in ('jax', 'jaxlib', 'flax', 'optax', 'tensorflow-cpu', 'scann', 'numpy'):
    try:
      versions.append(f'{pkg} {md.version(pkg)}')
    except md.PackageNotFoundError:
      pass
  load = ' '.join(f'{x:.2f}' for x in os.getloadavg())
  # The report's own output file is rewritten by this run: not a change to the code.
  changed = _git('status', '--porcelain', '--', '.', ':!docs/performance.md')
  dirty = ' (with uncommitted changes)' if changed else ''
  return '\n'.join(
    [
      f'- CPU: {_first_line("/proc/cpuinfo", "model name")}, '
      f'{os.cpu_count()} logical cores visible to this process '
      f'({len(os.sched_getaffinity(0))} usable), SIMD: {", ".join(simd) or "none listed"}',
      f'- Memory: {int(mem_kib) / 2**20:.1f} GiB' if mem_kib.isdigit() else '- Memory: unknown',
      '- No accelerator: every figure is XLA on the CPU; "devices" are the host split by '
      '`--xla_force_host_platform_device_count`, so they share the same cores.',
      f'- Load average at the start: {load}',
      f'- {platform.platform()}, Python {platform.python_version()}',
      f'- {", ".join(versions)}',
      f'- Commit {_git("rev-parse", "--short", "HEAD")}{dirty}, '
      f'{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC',
    ]
  )


def _consumption(outputs: dict[str, str]) -> str:
  """The input section's side-by-side line: pipeline examples/s over the step's."""
  train = re.search(r'^results\s+B=64\s+pmap\s.*?([\d.]+) ex/s', outputs.get('train', ''), re.M)
  fed = re.search(
    r'^fashion_products/default: median ([\d,]+) examples/s', outputs.get('input', ''), re.M
  )
  if not (train and fed):
    return 'Side by side: not available (the train or input section did not run or failed).'
  step, pipe = float(train.group(1)), float(fed.group(1).replace(',', ''))
  return (
    f'Side by side: the pipeline delivers {pipe:,.0f} examples/s of fashion_products at 32 px '
    f"(bench_input's defaults: featurising in the reading thread); the results config's step (pmap, 8 devices, batch 64, the "
    f'train section) consumes {step:,.1f} examples/s: {pipe / step:,.0f}x what training '
    "needs. Both share the same 2 cores in a real run, where the pipeline's threads take "
    'cores from the step.'
  )


def _run(cmd: list[str]) -> tuple[str, str]:
  shown = ' '.join(shlex.quote(a) for a in ['python', *cmd[1:]])
  start = time.perf_counter()
  try:
    proc = subprocess.run(
      cmd, cwd=_ROOT, capture_output=True, text=True, timeout=_TIMEOUT.value, check=False
    )
    out, err, rc = proc.stdout, proc.stderr, proc.returncode
  except subprocess.TimeoutExpired as e:
    out = e.stdout.decode() if isinstance(e.stdout, bytes) else e.stdout or ''
    err, rc = f'timed out after {_TIMEOUT.value} s', -1
  seconds = time.perf_counter() - start
  body = [f'`{shown}` ({seconds / 60:.1f} min)', '', '```', out.rstrip(), '```']
  if rc != 0:
    # absl/TF log lines (I..., W...) are noise; keep the traceback's end.
    tail = [ln for ln in err.splitlines() if not re.match(r'^[IW]\d{4} ', ln)][-15:]
    body += ['', f'**Exit status {rc}.** Last lines of its error output:', '', '```']
    body += tail + ['```']
  return '\n'.join(body), out


def _header() -> str:
  return (
    '# Performance\n\n'
    'Printed by `python -m benchmarks.report > docs/performance.md`, every section measured '
    'in the same run on the machine described first. MFU is FLOPs per second over a float32 '
    "matmul probe timed between the rounds of the work; the FLOPs are XLA's count of the "
    'whole step in the train section and model FLOPs (matmuls and convolutions) in the base '
    'and negatives sections. What that means, and how the train step '
    'got to its present speed: [performance_notes.md](performance_notes.md). The figures '
    'below are medians with [min-max] over rounds; the shared machine swings about 2x '
    'from minute to minute, which the ranges show.\n'
  )


def main(argv):
  del argv
  commands = _commands()
  unknown = set(_SECTIONS.value) - set(commands) - {'machine'}
  if unknown:
    raise app.UsageError(f'unknown sections {sorted(unknown)}; known: machine, {list(commands)}')
  print(_header(), flush=True)
  total = time.perf_counter()
  if 'machine' in _SECTIONS.value:
    print('## Machine\n', flush=True)
    print(_machine() + '\n', flush=True)
  outputs = {}
  for name, cmd in commands.items():
    if name not in _SECTIONS.value:
      continue
    body, outputs[name] = _run(cmd)
    if name == 'input':
      body += '\n\n' + _consumption(outputs)
    print(f'## {_TITLES[name]}\n\n{body}\n', flush=True)
  print(
    f'Whole report: {(time.perf_counter() - total) / 60:.1f} min; load average at the end: '
    + ' '.join(f'{x:.2f}' for x in os.getloadavg()),
    flush=True,
  )


if __name__ == '__main__':
  app.run(main)
