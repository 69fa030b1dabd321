"""FLOPs of a compiled step and the peak they are divided by, for MFU on a noisy machine.

MFU = (FLOPs of one step / seconds per step) / peak FLOP/s. Two numerators are in use and
must be labelled: *model FLOPs* (matmuls and convolutions of the training forward and
backward, `tools/model_stats`) and *XLA FLOPs* (`compiled.cost_analysis()` of the whole
step, elementwise work included).

The denominator: on an accelerator, the device's nominal dense peak for the compute dtype;
on CPU there is no nominal figure and the achievable one swings about 2x from minute to
minute, so the peak is a float32 matmul probe (`matmul_probe`) run *interleaved* with the
timed work — alternate a probe round and a round of the step, take the ratio per round, and
report the median and the range (`InterleavedMfu`).
"""

import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

# Nominal dense peaks (FLOP/s) by device kind substring and dtype.
_NOMINAL_PEAKS = {
  'H200': {'bfloat16': 989e12, 'float32': 67e12},
  'H100': {'bfloat16': 989e12, 'float32': 67e12},
  'A100': {'bfloat16': 312e12, 'float32': 19.5e12},
  'V100': {'bfloat16': 125e12, 'float32': 15.7e12},
  'TPU v4': {'bfloat16': 275e12, 'float32': 275e12},
  'TPU v5': {'bfloat16': 459e12, 'float32': 459e12},
}


def nominal_peak(device: Any = None, dtype: str = 'bfloat16') -> float | None:
  """The nominal dense peak FLOP/s of an accelerator, or None (CPU, unknown kind)."""
  device = device or jax.devices()[0]
  if device.platform == 'cpu':
    return None
  for name, peaks in _NOMINAL_PEAKS.items():
    if name.lower() in device.device_kind.lower():
      return peaks.get(dtype)
  return None


def compiled_flops(compiled: Any) -> float:
  """FLOPs of one call of a compiled computation, from XLA's cost analysis (0 if unknown)."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, list | tuple):  # Older JAX: one dict per computation.
    analysis = analysis[0] if analysis else {}
  return float((analysis or {}).get('flops', 0.0))


class MatmulProbe:
  """Times an n x n x n float32 matmul: the achievable peak of this machine, right now."""

  def __init__(self, n: int = 2048, repeats: int = 3):
    self.n = n
    self.repeats = repeats
    key = jax.random.PRNGKey(0)
    self._a = jax.random.normal(key, (n, n), jnp.float32)
    self._b = jax.random.normal(jax.random.fold_in(key, 1), (n, n), jnp.float32)
    self._fn = jax.jit(jnp.matmul)
    self._fn(self._a, self._b).block_until_ready()

  def __call__(self) -> float:
    """One round: FLOP/s of the fastest of `repeats` matmuls."""
    best = float('inf')
    for _ in range(self.repeats):
      t = time.perf_counter()
      self._fn(self._a, self._b).block_until_ready()
      best = min(best, time.perf_counter() - t)
    return 2.0 * self.n**3 / best


def interleaved_mfu(
  run_step: Callable[[], Any],
  flops_per_step: float,
  *,
  rounds: int = 7,
  steps_per_round: int = 3,
  probe: MatmulProbe | None = None,
) -> dict[str, float]:
  """Alternates probe rounds and rounds of `run_step`; returns per-round MFU statistics.

  `run_step()` must block until its work is done. Returns seconds per step (median),
  the probe's FLOP/s (median, min, max) and MFU = achieved / probe per round (median, min,
  max), so that both sides of each ratio saw the same machine state.
  """
  probe = probe or MatmulProbe()
  ratios, step_times, peaks = [], [], []
  for _ in range(rounds):
    peak = probe()
    t = time.perf_counter()
    for _ in range(steps_per_round):
      run_step()
    dt = (time.perf_counter() - t) / steps_per_round
    peak = max(peak, probe())  # Probe on both sides of the timed round; keep the better.
    ratios.append(flops_per_step / dt / peak)
    step_times.append(dt)
    peaks.append(peak)
  return {
    'step_s': statistics.median(step_times),
    'peak_flops': statistics.median(peaks),
    'peak_flops_min': min(peaks),
    'peak_flops_max': max(peaks),
    'mfu': statistics.median(ratios),
    'mfu_min': min(ratios),
    'mfu_max': max(ratios),
  }
