r"""Model throughput and MFU against a matmul peak measured interleaved with the timed work.

  python -m benchmarks.bench_model                                    # base, batch 32
  python -m benchmarks.bench_model --config=tiny --batch_size=16 --rounds=7
  python -m benchmarks.bench_model --rows=train --baseline_rev=b1596a8   # before vs now

Rows (make_jax/train/flops.py defines the numerators):
- `fwd`: the *training* forward (dropout on, masked pass plus retrieval pass);
- `fwd+bwd`: its losses and their gradient;
- `train`: the real step (masking, both passes, losses, gradient, AdamW, queue push);
- `train@REV` (with `--baseline_rev`): the train step of commit REV, exported with
  `git archive` and run in a worker process (benchmarks/baseline_worker.py), its rounds
  interleaved with this tree's.

Why interleaved: on a shared CPU the float32 matmul probe swings about 2x from minute to
minute, so a peak taken once is meaningless. Every round times each row once, each timing
bracketed by probe rounds; MFU per round = (FLOPs / seconds) / mean of the two probes
around it. Printed: medians with [min-max] over rounds, MFU with *model FLOPs* (matmuls and
convolutions, `flops.model_flops`) and with XLA's cost-analysis FLOPs of the whole function.
"""

import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import jax
from absl import app, flags

from benchmarks import step_setup
from make_jax.train import flops

_CONFIG = flags.DEFINE_string('config', 'base', 'Config module in configs/.')
_BATCH = flags.DEFINE_integer('batch_size', 32, 'Global batch size (one device).')
_ROUNDS = flags.DEFINE_integer('rounds', 5, 'Interleaved rounds (each times every row once).')
_ROWS = flags.DEFINE_list('rows', ['fwd', 'fwd+bwd', 'train'], 'Rows to time.')
_BASELINE = flags.DEFINE_string(
  'baseline_rev', '', 'A git revision whose train step is timed side by side (worker process).'
)
_MATMUL_N = flags.DEFINE_integer('matmul_n', 2048, 'Size of the peak-measuring matmul.')
_CACHE = flags.DEFINE_string(
  'compilation_cache', '/tmp/make_jax_xla_cache', 'Persistent XLA cache directory; "" for none.'
)

_ROOT = pathlib.Path(__file__).resolve().parent.parent


class BaselineWorker:
  """The train step of a git revision, in its own process (benchmarks/baseline_worker.py)."""

  def __init__(self, rev: str, config: str, batch_size: int, cache: str):
    self._tmp = tempfile.TemporaryDirectory(prefix='make_jax_baseline_')
    archive = subprocess.run(
      ['git', '-C', str(_ROOT), 'archive', rev], check=True, capture_output=True
    ).stdout
    subprocess.run(['tar', '-x', '-C', self._tmp.name], input=archive, check=True)
    self.rev = rev
    self._proc = subprocess.Popen(
      [
        sys.executable,
        str(_ROOT / 'benchmarks' / 'baseline_worker.py'),
        f'--src={self._tmp.name}',
        f'--config={config}',
        f'--batch_size={batch_size}',
        f'--compilation_cache={cache}',
      ],
      cwd=self._tmp.name,
      stdin=subprocess.PIPE,
      stdout=subprocess.PIPE,
      text=True,
    )
    self.info: dict[str, float] = {}

  def wait_ready(self) -> dict[str, float]:
    """Blocks until the worker has compiled and warmed up; returns its FLOPs."""
    self.info = self._read()
    return self.info

  def _read(self) -> dict[str, float]:
    line = self._proc.stdout.readline()
    if not line:
      raise RuntimeError(f'the baseline worker for {self.rev} exited ({self._proc.wait()})')
    return json.loads(line)

  def run(self) -> None:
    """One step in the worker (blocks until it is done)."""
    self._proc.stdin.write('run 1\n')
    self._proc.stdin.flush()
    self._read()

  def close(self) -> None:
    """Stops the worker and removes the exported tree."""
    if self._proc.poll() is None:
      self._proc.stdin.write('quit\n')
      self._proc.stdin.flush()
      self._proc.wait(timeout=60)
    self._tmp.cleanup()


def _fmt(stats: dict[str, float], key: str, scale: float = 100.0, unit: str = '%') -> str:
  return (
    f'{scale * stats[key]:.1f}{unit} '
    f'[{scale * stats[key + "_min"]:.1f}-{scale * stats[key + "_max"]:.1f}]'
  )


def main(argv):
  del argv
  if _CACHE.value:
    jax.config.update('jax_compilation_cache_dir', _CACHE.value)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)
  t0 = time.perf_counter()
  worker = None
  if _BASELINE.value:  # Started first: it compiles while this process does.
    worker = BaselineWorker(_BASELINE.value, _CONFIG.value, _BATCH.value, _CACHE.value)
  try:
    _run(worker, t0)
  finally:
    if worker is not None:
      worker.close()


def _run(worker: BaselineWorker | None, t0: float) -> None:
  bs = _BATCH.value
  s = step_setup.build(_CONFIG.value, bs)
  calls = {
    'fwd': (s.fwd, (s.params, s.masked)),
    'fwd+bwd': (s.fwd_bwd, (s.params, s.masked, s.state)),
    'train': (s.train, (s.state, s.batch)),
  }
  fns, model, xla = {}, {}, {}
  for row in _ROWS.value:
    fn, args = calls[row]
    traced = fn.trace(*args)
    model[row] = flops.jaxpr_flops(traced.jaxpr)
    compiled = traced.lower().compile()
    xla[row] = flops.compiled_flops(compiled)
    jax.block_until_ready(compiled(*args))  # Warm up.
    fns[row] = lambda c=compiled, a=args: jax.block_until_ready(c(*a))
  if worker is not None:
    info = worker.wait_ready()
    row = f'train@{worker.rev}'
    model[row], xla[row] = info['model_flops'], info['xla_flops']
    fns[row] = worker.run
  probe = flops.MatmulProbe(_MATMUL_N.value)
  print(
    f'{_CONFIG.value} batch {bs} on {jax.devices()[0].device_kind}; set up in '
    f'{time.perf_counter() - t0:.0f} s; {_ROUNDS.value} interleaved rounds',
    flush=True,
  )
  rounds = flops.interleave(fns, rounds=_ROUNDS.value, probe=probe)
  peaks = [p for row in fns for p in rounds.peaks[row]]
  print(
    f'matmul probe ({probe.n}^3 float32, best of {probe.repeats}): median '
    f'{statistics.median(peaks) / 1e9:.0f} GFLOP/s [{min(peaks) / 1e9:.0f}-'
    f'{max(peaks) / 1e9:.0f}]'
  )
  print(
    'row            ms/step [range]         ex/s  model GFLOP/ex  MFU(model FLOPs)'
    '      XLA GFLOP/ex  MFU(XLA FLOPs)'
  )
  for row in fns:
    st = rounds.stats(row, model[row])
    sx = rounds.stats(row, xla[row])
    print(
      f'{row:14s} {_fmt(st, "s", 1e3, ""):22s} {bs / st["s"]:6.1f}  {model[row] / bs / 1e9:14.3f}  '
      f'{_fmt(st, "mfu"):20s}  {xla[row] / bs / 1e9:12.3f}  {_fmt(sx, "mfu")}',
      flush=True,
    )
  if worker is not None and 'train' in fns:
    ref = rounds.seconds[f'train@{worker.rev}']
    speedups = [b / a for a, b in zip(rounds.seconds['train'], ref, strict=True)]
    print(
      f'train speed-up over {worker.rev} per round: median '
      f'{statistics.median(speedups):.2f}x [{min(speedups):.2f}-{max(speedups):.2f}]'
    )
  print(f'total {time.perf_counter() - t0:.0f} s')


if __name__ == '__main__':
  app.run(main)
