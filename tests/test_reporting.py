"""Metrics reporting: JSONL round trip and resume, NaN errors, the window logger's arithmetic."""

import json
import math

import jax.numpy as jnp
import numpy as np
import pytest

from make_jax.train import reporting


def _steps(path):
  return [json.loads(line)['step'] for line in path.read_text().splitlines()]


def test_jsonl_round_trip_and_resume_drops_lines_past_the_restored_step(tmp_path):
  writer = reporting.MetricsWriter(tmp_path, tensorboard=False)
  for step in (10, 20, 30):
    writer.write(step, {'loss': np.float32(step / 10), 'learning_rate': 1e-4, 'hist': np.ones(3)})
  writer.close()
  lines = [json.loads(line) for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert lines[1] == {'step': 20, 'loss': 2.0, 'learning_rate': 1e-4}  # Non-scalars left out.

  # The run died after step 30 but its last checkpoint is step 20: step 30 is dropped, and a
  # torn line of the killed process with it.
  with (tmp_path / 'metrics.jsonl').open('a') as f:
    f.write('{"step": 40, "lo')
  writer = reporting.MetricsWriter(tmp_path, start_step=20, tensorboard=False)
  assert _steps(tmp_path / 'metrics.jsonl') == [10, 20]
  with pytest.raises(ValueError, match='Step 20 is not after'):
    writer.write(20, {'loss': 0.0})
  writer.write(30, {'loss': 3.5})
  writer.close()
  assert _steps(tmp_path / 'metrics.jsonl') == [10, 20, 30]
  assert json.loads((tmp_path / 'metrics.jsonl').read_text().splitlines()[-1])['loss'] == 3.5

  # A fresh start in the same workdir keeps nothing, not even the step-0 line of a run that
  # died before its first checkpoint; a non-primary process writes nothing.
  writer = reporting.MetricsWriter(tmp_path, start_step=0, tensorboard=False)
  writer.write(0, {'recall@10': 0.1})
  writer.close()
  writer = reporting.MetricsWriter(tmp_path, start_step=0, tensorboard=False)
  assert (tmp_path / 'metrics.jsonl').read_text() == ''
  writer.write(0, {'recall@10': 0.2})
  writer.close()
  assert _steps(tmp_path / 'metrics.jsonl') == [0]
  other = reporting.MetricsWriter(tmp_path / 'p1', is_primary=False)
  other.write(1, {'loss': 1.0})
  assert not (tmp_path / 'p1').exists()


def test_tensorboard_events_hold_the_scalars(tmp_path):
  from tensorboard.backend.event_processing import event_accumulator
  from tensorboard.util import tensor_util

  writer = reporting.MetricsWriter(tmp_path)
  writer.write(5, {'loss': 1.5, 'recall@10': 0.25})
  writer.write(6, {'loss': 1.25})
  writer.close()
  events = event_accumulator.EventAccumulator(str(tmp_path / 'tensorboard'))
  events.Reload()
  # tf.summary (TF2) stores scalars as tensor events.
  points = lambda tag: [
    (e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in events.Tensors(tag)
  ]
  assert points('loss') == [(5, 1.5), (6, 1.25)]
  assert points('recall@10') == [(5, 0.25)]


def test_non_finite_metric_raises_with_step_and_term():
  ok = {'loss': 1.0, 'qpm': jnp.bfloat16(0.5), 'name': 'x', 'none': None, 'acc': jnp.ones(3)}
  reporting.check_finite(ok, step=7)
  bad = {'loss': 1.0, 'qpm': jnp.array(jnp.nan, jnp.bfloat16), 'mlm': np.inf}
  with pytest.raises(FloatingPointError, match=r'step 120: qpm=nan, mlm=inf') as e:
    reporting.check_finite(bad, step=120)
  assert 'loss=' not in str(e.value)


class _FakeClock:
  def __init__(self):
    self.t = 0.0

  def __call__(self):
    return self.t


def test_window_logger_arithmetic_on_a_fake_clock():
  clock, lines, probes = _FakeClock(), [], iter([1e11, 2e11, 1.5e11, 1e11])

  def probe():  # A probe round takes 10 s, which the windows must not count.
    clock.t += 10.0
    return next(probes)

  logger = reporting.WindowLogger(
    log_every=4,
    total_steps=10,
    examples_per_step=16,
    flops_per_step=1e9,
    model_flops_per_step=0.75e9,
    peak=probe,
    clock=clock,
    log_fn=lines.append,
    progress=False,
  )
  summaries = {}
  for step in range(1, 11):
    clock.t += 0.5 if step <= 4 else 1.0  # Step 1 (compiling) is not timed.
    out = logger.update(step, {'loss': np.float32(step), 'qpm': 2.0 * step})
    if out is not None:
      summaries[step] = out
  assert sorted(summaries) == [4, 8, 10]
  first, second, last = summaries[4], summaries[8], summaries[10]
  assert first['loss'] == pytest.approx(2.5) and first['qpm'] == pytest.approx(5.0)
  # Steps 2-4 took 1.5 s: 0.5 s/step, 32 ex/s; the peak is the mean of the probes before
  # (1e11) and after (2e11) the window; 6 steps left.
  assert first['step_s'] == pytest.approx(0.5)
  assert first['examples_per_s'] == pytest.approx(32.0)
  assert first['mfu'] == pytest.approx(1e9 / 0.5 / 1.5e11)
  assert first['mfu_model'] == pytest.approx(0.75e9 / 0.5 / 1.5e11)
  assert first['eta_s'] == pytest.approx(3.0)
  assert second['loss'] == pytest.approx(6.5)
  # Probes 2e11 before and 1.5e11 after: their mean, 1.75e11.
  assert second['step_s'] == pytest.approx(1.0) and second['mfu'] == pytest.approx(1e9 / 1.75e11)
  assert last['loss'] == pytest.approx(9.5) and last['eta_s'] == 0.0
  assert last['mfu'] == pytest.approx(1e9 / 1.25e11)  # mean(1.5e11 before, 1e11 after)
  assert lines[0] == (
    'step 4/10 loss=2.5000 qpm=5.0000 | 32.0 ex/s 0.500 s/step | '
    'MFU 1.0% model FLOPs, 1.3% XLA FLOPs (vs matmul probe 150.0 GFLOP/s) | ETA 0:00:03'
  )
  # The run's windows so far: model-FLOPs MFU 1.0%, 0.43%, 0.6% -> median and range.
  windows = [0.75e9 / 0.5 / 1.5e11, 0.75e9 / 1.75e11, 0.75e9 / 1.25e11]
  assert last['mfu_windows'] == 3
  assert last['mfu_model_run'] == pytest.approx(windows[2])
  assert last['mfu_model_run_min'] == pytest.approx(windows[1])
  assert last['mfu_model_run_max'] == pytest.approx(windows[0])
  assert last['mfu_run'] == pytest.approx(1e9 / 1.25e11)
  assert ' | run median' not in lines[0]  # One window is not a range.
  assert lines[1].endswith('| run median 0.7% [0.4-1.0] over 2 windows | ETA 0:00:02')
  assert lines[2].endswith('| run median 0.6% [0.4-1.0] over 3 windows | ETA 0:00:00')


def test_window_logger_with_a_nominal_peak_and_no_flops():
  clock, lines = _FakeClock(), []
  kw = {'total_steps': 4, 'examples_per_step': 8, 'clock': clock, 'progress': False}
  logger = reporting.WindowLogger(
    log_every=2, flops_per_step=2e12, peak=1e14, log_fn=lines.append, **kw
  )
  for step in (1, 2):
    clock.t += 0.1
    summary = logger.update(step, {'loss': 1.0})
  assert summary['mfu'] == pytest.approx(2e12 / 0.1 / 1e14)
  assert 'vs nominal peak' in lines[0]
  no_flops = reporting.WindowLogger(log_every=2, log_fn=lines.append, **kw)
  no_flops.update(1, {'loss': 1.0})
  assert math.isnan(no_flops.update(2, {'loss': 1.0})['mfu']) and 'MFU n/a' in lines[-1]


def test_progress_bar_only_when_asked(capsys):
  for progress in (True, False):
    logger = reporting.WindowLogger(
      log_every=5, total_steps=10, examples_per_step=1, progress=progress, log_fn=lambda _: None
    )
    for step in (1, 2):
      logger.update(step, {'loss': 1.0})
    bar = capsys.readouterr().err
    # The first step draws at once (later ones at most every 0.5 s).
    assert ('[###' in bar and '1/10' in bar) if progress else bar == ''
