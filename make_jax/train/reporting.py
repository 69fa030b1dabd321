"""Metrics a person can read: a JSONL file, TensorBoard scalars, window log lines, NaN checks.

Why here and not in the loop: the trainer calls three small pieces each step or window,
and each has a rule that is easy to get wrong inside a loop (a resumed run must not
leave two lines for one step; a NaN must stop the run before its state is saved; MFU on
a noisy CPU needs a probe taken next to the window it divides).

Interface:

  writer = MetricsWriter(workdir, start_step=restored_step, is_primary=process_index == 0)
  writer.write(step, {'loss': ..., 'learning_rate': ..., 'recall@10': ...})  # one call/step
  writer.close()

    `<workdir>/metrics.jsonl`: one JSON object per logged step, {"step": n, name: float},
    appended and flushed at each write. On construction, lines past `start_step` (left by
    a run that died after its last checkpoint) and a torn last line are dropped (atomic
    rewrite); a fresh run (`start_step=0`) starts an empty file, even if an earlier run
    that died before its first checkpoint left lines (step 0 included). So the file never
    holds two lines for a step; `write` refuses a step not after the last one written.
    Non-finite values are written as JSON's NaN / Infinity (Python's `json` reads them).
    TensorBoard event files go to `<workdir>/tensorboard` (tf.summary); points past
    `start_step` from the dead run stay in the older event file, so the JSONL is the
    record of truth. Only scalar values are written; on a non-primary process every
    method is a no-op.

  check_finite(metrics, step)
    Raises FloatingPointError naming the step and every metric that is NaN or infinite;
    call it before saving a checkpoint of the state that produced `metrics`.

  logger = WindowLogger(log_every=..., total_steps=..., examples_per_step=...,
                        flops_per_step=compiled_flops(compiled_step))
  summary = logger.update(step, metrics)   # every step; a dict at the end of each window

    `metrics` may stay on the device: they are fetched once per window. The window's
    summary holds the mean of every scalar metric plus `step_s`, `examples_per_s`,
    `mfu` (XLA FLOPs), `mfu_model` (model FLOPs), `peak_flops` and `eta_s`, and one line
    is logged: mean losses, examples/s, MFU and ETA. The first step after construction is
    not timed (it compiles). MFU is FLOPs per step / seconds per step / peak, twice: with
    the model FLOPs of the step (matmuls and convolutions, as `tools/model_stats` counts
    them) and with XLA's cost analysis of the compiled step. The peak is, on an
    accelerator, the nominal dense peak (`flops.nominal_peak`); on CPU the mean of two
    matmul-probe rounds (`flops.MatmulProbe`) run just before and just after the window,
    outside its timing (the line says "vs matmul probe"): the window and its peak see the
    same machine state, as in `flops.interleave`. From the second window on, the line
    also gives the median and range of the windows' MFUs so far (`mfu_model_run`,
    `_min`, `_max`; `mfu_run` for XLA FLOPs): one window is one noisy round, and it is
    the run's median and range that compare with `benchmarks/bench_model`'s. A progress
    bar is drawn on stderr when it is a terminal.
"""

import datetime
import json
import math
import os
import pathlib
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from absl import logging

from make_jax import atomic_file
from make_jax.train import flops as flops_lib

LOSS_KEYS = ('loss', 'qpm', 'qpc', 'mlm', 'mpm', 'mpm_r')


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
  """The scalar numeric entries of `metrics` as Python floats (others are left out)."""
  out = {}
  for k, v in metrics.items():
    try:
      a = np.asarray(v)
    except Exception:  # noqa: BLE001  Anything that is not array-like is not a scalar metric.
      continue
    if a.size == 1 and (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
      out[k] = float(a.reshape(()))
  return out


def check_finite(metrics: Mapping[str, Any], step: int) -> None:
  """Raises FloatingPointError if a numeric metric (any element) is NaN or infinite.

  The message names the step and each bad metric with its value, e.g.
  'Non-finite metrics at step 120: qpm=nan, loss=nan'.
  """
  bad = []
  for k, v in metrics.items():
    if v is None or isinstance(v, str | bytes):
      continue
    try:
      a = np.asarray(v, np.float64)
    except (TypeError, ValueError):
      continue
    if not np.isfinite(a).all():
      bad.append(f'{k}={a.reshape(-1)[0] if a.size == 1 else a}')
  if bad:
    raise FloatingPointError(
      f'Non-finite metrics at step {step}: {", ".join(bad)}. The state of this step must '
      'not be checkpointed; resume from the last checkpoint with a lower learning rate '
      'or check the input.'
    )


def _read_lines(path: pathlib.Path, start_step: int) -> tuple[list[str], bool]:
  """Lines of `path` with step <= start_step (none if 0), and whether any was dropped."""
  kept, dropped = [], False
  for line in path.read_text().splitlines():
    try:
      step = json.loads(line)['step']
    except (ValueError, KeyError, TypeError):
      dropped = True  # A torn line of a process killed mid-write.
      continue
    if 0 < start_step and step <= start_step:  # A fresh run (start_step 0) keeps nothing.
      kept.append(line)
    else:
      dropped = True
  return kept, dropped


class MetricsWriter:
  """`<workdir>/metrics.jsonl` and TensorBoard scalars, written on the primary process."""

  def __init__(
    self,
    workdir: str | os.PathLike,
    *,
    start_step: int = 0,
    is_primary: bool = True,
    tensorboard: bool = True,
  ):
    """Opens the writers.

    Args:
      workdir: the run's directory.
      start_step: the step the run starts from (0, or the restored checkpoint's step);
        lines of later steps (with 0: all lines) are dropped from an existing file.
      is_primary: True on the process that writes (jax.process_index() == 0).
      tensorboard: also write TensorBoard event files.
    """
    self.is_primary = is_primary
    self.path = pathlib.Path(workdir) / 'metrics.jsonl'
    self.last_step: int | None = None  # The last step in the file.
    self._file = None
    self._tb = None
    if not is_primary:
      return
    if self.path.exists():
      kept, dropped = _read_lines(self.path, start_step)
      if dropped:
        atomic_file.write_text(self.path, ''.join(f'{line}\n' for line in kept))
      if kept:
        self.last_step = json.loads(kept[-1])['step']
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self._file = self.path.open('a')
    if tensorboard:
      try:
        import tensorflow as tf  # Heavy: only on the process that writes.
      except ImportError:  # A machine without TensorFlow: metrics.jsonl only.
        logging.warning('TensorFlow is not installed: no TensorBoard summaries, %s only', self.path)
        return
      tf.config.set_visible_devices([], 'GPU')  # Summaries only; leave accelerators to JAX.
      self._tf = tf
      self._tb = tf.summary.create_file_writer(str(self.path.parent / 'tensorboard'))

  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    """Appends one line for `step` with every scalar of `metrics` (and TensorBoard points).

    Raises:
      ValueError: `step` is not larger than the last step written (merge a step's
        metrics into one call).
    """
    if not self.is_primary:
      return
    step = int(step)
    if self.last_step is not None and step <= self.last_step:
      raise ValueError(
        f'Step {step} is not after the last step written ({self.last_step}) in {self.path}: '
        'write each step once, with all its metrics'
      )
    values = _scalars(metrics)
    values.pop('step', None)
    self._file.write(json.dumps({'step': step, **values}) + '\n')
    self._file.flush()
    self.last_step = step
    if self._tb is not None:
      with self._tb.as_default(step=step):
        for k, v in values.items():
          self._tf.summary.scalar(k, v)

  def flush(self) -> None:
    """Flushes both writers (JSONL lines are already flushed at each write)."""
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    """Flushes and closes; later writes are refused."""
    if self._file is not None:
      self._file.close()
    if self._tb is not None:
      self._tb.close()
    self._file, self._tb, self.is_primary = None, None, False


def _eta(seconds: float) -> str:
  if not math.isfinite(seconds):
    return '?'
  return str(datetime.timedelta(seconds=round(seconds)))


class WindowLogger:
  """Per-window mean metrics, throughput, MFU and ETA; one log line per window."""

  def __init__(
    self,
    *,
    log_every: int,
    total_steps: int,
    examples_per_step: int,
    flops_per_step: float = 0.0,
    model_flops_per_step: float = 0.0,
    peak: float | Callable[[], float] | None = None,
    dtype: str = 'float32',
    clock: Callable[[], float] = time.perf_counter,
    log_fn: Callable[[str], None] = logging.info,
    progress: bool | None = None,
  ):
    """Sets up the windows.

    Args:
      log_every: steps per window.
      total_steps: the run's last step (for the ETA and the last window).
      examples_per_step: global batch size.
      flops_per_step: XLA FLOPs of one compiled step (`flops.compiled_flops`); 0: no MFU.
      model_flops_per_step: model FLOPs of one step (matmuls and convolutions of the
        forward and backward, `flops.model_flops`); 0: no model-FLOPs MFU.
      peak: FLOP/s to divide by: a number (a nominal peak), a callable (a probe round,
        run before and after each window), or None: the device's nominal peak for
        `dtype`, else (CPU) a `MatmulProbe`.
      dtype: the compute dtype, for the nominal peak.
      clock: seconds (injectable for tests).
      log_fn: where the line goes.
      progress: draw a progress bar on stderr (default: when stderr is a terminal).
    """
    if log_every < 1:
      raise ValueError(f'log_every must be >= 1, got {log_every}')
    self.log_every, self.total_steps = log_every, total_steps
    self.examples_per_step, self.flops_per_step = examples_per_step, flops_per_step
    self.model_flops_per_step = model_flops_per_step
    self.clock, self.log_fn = clock, log_fn
    self.progress = sys.stderr.isatty() if progress is None else progress
    self._probe: Callable[[], float] | None = None
    self._peak_label = 'nominal peak'
    if callable(peak):
      self._probe, self._peak_label = peak, 'matmul probe'
    elif peak is None and (flops_per_step or model_flops_per_step):
      peak = flops_lib.nominal_peak(jax.devices()[0], dtype)
      if peak is None:
        # benchmarks/bench_model's probe (2048^3, best of 3: ~0.4 s a window on 2 cores), so
        # the two MFUs divide by the same peak; a 1024^3 probe reads ~30% lower on CPU.
        self._probe, self._peak_label = flops_lib.MatmulProbe(), 'matmul probe'
    self._nominal = None if callable(peak) else peak
    self._window: list[Any] = []
    self._timed = 0  # Steps of the window since the clock started.
    self._t0: float | None = None  # None until the first (compiling) step is done.
    self._probe_before = float('nan')
    self._last_bar = -math.inf
    self._mfus: dict[str, list[float]] = {'mfu': [], 'mfu_model': []}  # Per window, this run.

  def _peak_probe(self) -> float:
    return float(self._probe()) if self._probe is not None else float('nan')

  def update(self, step: int, metrics: Mapping[str, Any]) -> dict[str, float] | None:
    """Records the metrics of `step` (1-based: the number of steps done).

    Returns:
      At the end of a window (step % log_every == 0 or the last step): the summary dict
      (means and timing); otherwise None.
    """
    self._window.append(metrics)
    if self._t0 is None:
      jax.block_until_ready(metrics)  # The first step compiles: start the clock after it.
      self._probe_before = self._peak_probe()
      self._t0 = self.clock()
    else:
      self._timed += 1
    if step % self.log_every and step != self.total_steps:
      self._draw_bar(step)
      return None
    window = jax.device_get(self._window)
    elapsed = self.clock() - self._t0
    step_s = elapsed / self._timed if self._timed and elapsed > 0 else float('nan')
    probe_after = self._peak_probe()
    # Both probes bracket the window, as in `flops.interleave`: their mean is the peak.
    peak = self._nominal or 0.5 * (self._probe_before + probe_after)
    self._probe_before = probe_after
    mfu, mfu_model = (
      f / step_s / peak if f and peak else float('nan')
      for f in (self.flops_per_step, self.model_flops_per_step)
    )
    # Over the run's windows so far: a window's ratio is one noisy round (two probes); the
    # median and range are what compares with `benchmarks/bench_model`'s printed range.
    for key, value in (('mfu', mfu), ('mfu_model', mfu_model)):
      if math.isfinite(value):
        self._mfus[key].append(value)
    run = {}
    for key, values in self._mfus.items():
      if values:
        run |= flops_lib.median_range(f'{key}_run', values)
    scalars = [_scalars(m) for m in window]
    summary = {k: float(np.mean([s[k] for s in scalars if k in s])) for k in scalars[-1]}
    summary |= {
      'step_s': step_s,
      'examples_per_s': self.examples_per_step / step_s,
      'mfu': mfu,
      'mfu_model': mfu_model,
      'peak_flops': float(peak or 'nan'),
      'eta_s': (self.total_steps - step) * step_s,
      'mfu_windows': float(len(self._mfus['mfu_model'] or self._mfus['mfu'])),
      **run,
    }
    self._window, self._timed = [], 0
    self._t0 = self.clock()  # After the probe: the next window's timing excludes it.
    self._clear_bar()
    self.log_fn(self.format_line(step, summary))
    return summary

  def format_line(self, step: int, summary: Mapping[str, float]) -> str:
    """The window's log line."""
    losses = ' '.join(f'{k}={summary[k]:.4f}' for k in LOSS_KEYS if k in summary)
    parts = [
      f'{100 * summary[key]:.1f}% {label}'
      for key, label in (('mfu_model', 'model FLOPs'), ('mfu', 'XLA FLOPs'))
      if math.isfinite(summary.get(key, float('nan')))
    ]
    mfu = (
      f'MFU {", ".join(parts)} (vs {self._peak_label} {summary["peak_flops"] / 1e9:.1f} GFLOP/s)'
      if parts
      else 'MFU n/a'
    )
    key = 'mfu_model_run' if 'mfu_model_run' in summary else 'mfu_run'
    if summary.get('mfu_windows', 0) >= 2 and key in summary:
      mfu += (
        f' | run median {100 * summary[key]:.1f}% [{100 * summary[key + "_min"]:.1f}-'
        f'{100 * summary[key + "_max"]:.1f}] over {int(summary["mfu_windows"])} windows'
      )
    return (
      f'step {step}/{self.total_steps} {losses} | {summary["examples_per_s"]:.1f} ex/s '
      f'{summary["step_s"]:.3f} s/step | {mfu} | ETA {_eta(summary["eta_s"])}'
    )

  def _draw_bar(self, step: int) -> None:
    now = time.monotonic()
    if not self.progress or now - self._last_bar < 0.5:
      return
    self._last_bar = now
    done = step / max(self.total_steps, 1)
    bar = '#' * int(30 * done)
    sys.stderr.write(f'\r[{bar:<30}] {step}/{self.total_steps}')
    sys.stderr.flush()

  def _clear_bar(self) -> None:
    if self.progress:
      sys.stderr.write('\r' + ' ' * 60 + '\r')
      sys.stderr.flush()
