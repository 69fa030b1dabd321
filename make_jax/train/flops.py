"""FLOPs of a step and the peak they are divided by, for an MFU that survives a noisy machine.

MFU = (FLOPs of one step / seconds per step) / peak FLOP/s. Two numerators, always labelled:

- *model FLOPs* (`model_flops`): the matmuls (`dot_general`) and convolutions
  (`conv_general_dilated`) of the function as JAX traces it, counted by walking its jaxpr
  after dead-code elimination. For a train step that is the forward and backward of both
  passes (masked and retrieval), the losses' similarity matrices and nothing elementwise.
  A dot costs 2 * |output| * |contracted dims|; a convolution 2 * |output| * |kernel window|
  * kernel input features, divided by the lhs dilation (the backward-data convolution of a
  strided one multiplies no inserted zeros: it costs what the forward does). Scans multiply
  their body by the length; a `cond` counts its costliest branch; a `while` body counts once.
- *XLA FLOPs* (`compiled_flops`): `compiled.cost_analysis()` of the whole compiled step,
  elementwise work, normalisation and the optimiser included.

The denominator: on an accelerator, the device's nominal dense peak for the compute dtype
(`nominal_peak`); on CPU there is no nominal figure and the achievable one swings about 2x
from minute to minute, so the peak is a float32 matmul probe (`MatmulProbe`) run
*interleaved* with the timed work (`interleave`, `interleaved_mfu`): every timed call is
bracketed by probe rounds, its ratio is taken against the mean of the two probes around it,
and the median and range over rounds are reported.
"""

import dataclasses
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

# Nominal dense peaks (FLOP/s) by device kind substring and dtype.
_NOMINAL_PEAKS = {
  'H200': {'bfloat16': 989e12, 'float32': 67e12},
  'H100': {'bfloat16': 989e12, 'float32': 67e12},
  'A100': {'bfloat16': 312e12, 'float32': 19.5e12},
  'V100': {'bfloat16': 125e12, 'float32': 15.7e12},
  'TPU v4': {'bfloat16': 275e12, 'float32': 275e12},
  'TPU v5': {'bfloat16': 459e12, 'float32': 459e12},
}
# Call-like primitives whose sub-jaxpr's inputs and outputs map one to one onto the
# equation's (so liveness passes through them).
_CALLS = {
  'jit': 'jaxpr',
  'pjit': 'jaxpr',
  'closed_call': 'call_jaxpr',
  'core_call': 'call_jaxpr',
  'remat': 'jaxpr',
  'remat2': 'jaxpr',
  'checkpoint': 'jaxpr',
  'custom_jvp_call': 'call_jaxpr',
  'custom_vjp_call': 'call_jaxpr',
  'custom_vjp_call_jaxpr': 'fun_jaxpr',
  'shard_map': 'jaxpr',
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


# --- Model FLOPs: matmuls and convolutions of a jaxpr --------------------------------------


def _dot_flops(eqn) -> float:
  (lhs_contract, _), _ = eqn.params['dimension_numbers']
  lhs_shape = eqn.invars[0].aval.shape
  contracted = int(np.prod([lhs_shape[d] for d in lhs_contract], dtype=np.int64))
  return 2.0 * float(np.prod(eqn.outvars[0].aval.shape, dtype=np.int64)) * contracted


def _conv_flops(eqn) -> float:
  rhs_spec = eqn.params['dimension_numbers'].rhs_spec  # (out feat, in feat, *spatial)
  rhs_shape = eqn.invars[1].aval.shape
  window = int(np.prod([rhs_shape[d] for d in rhs_spec[2:]], dtype=np.int64))
  in_features = rhs_shape[rhs_spec[1]]
  dilation = float(np.prod(eqn.params.get('lhs_dilation') or (1,)))
  out = float(np.prod(eqn.outvars[0].aval.shape, dtype=np.int64))
  return 2.0 * out * window * in_features / dilation


def _open(jaxpr) -> Any:
  return jaxpr.jaxpr if isinstance(jaxpr, jcore.ClosedJaxpr) else jaxpr


def _count(jaxpr, live_out: Sequence[bool]) -> tuple[float, list[bool]]:
  """(FLOPs of the live part of `jaxpr`, which of its invars are live)."""
  live = {v for v, keep in zip(jaxpr.outvars, live_out, strict=True) if keep and _is_var(v)}
  total = 0.0
  for eqn in reversed(jaxpr.eqns):
    outs = [not isinstance(v, jcore.DropVar) and v in live for v in eqn.outvars]
    if not any(outs) and not eqn.effects:
      continue
    name = eqn.primitive.name
    ins_live = [True] * len(eqn.invars)
    if name == 'dot_general':
      total += _dot_flops(eqn)
    elif name == 'conv_general_dilated':
      total += _conv_flops(eqn)
    elif name in _CALLS and _CALLS[name] in eqn.params:
      inner = _open(eqn.params[_CALLS[name]])
      flops, inner_live = _count(inner, outs)
      total += flops
      if len(inner_live) == len(eqn.invars):
        ins_live = inner_live
    elif name == 'scan':
      flops, _ = _count(_open(eqn.params['jaxpr']), [True] * len(eqn.outvars))
      total += flops * eqn.params['length']
    elif name == 'cond':
      total += max(_count(_open(b), [True] * len(eqn.outvars))[0] for b in eqn.params['branches'])
    else:  # while and anything else with sub-jaxprs: each body once, all of it live.
      for sub in jcore.jaxprs_in_params(eqn.params):
        total += _count(sub, [True] * len(sub.outvars))[0]
    live.update(v for v, keep in zip(eqn.invars, ins_live, strict=True) if keep and _is_var(v))
  return total, [v in live for v in jaxpr.invars]


def _is_var(v) -> bool:
  return not isinstance(v, jcore.Literal)


def jaxpr_flops(closed: Any) -> float:
  """Matmul + convolution FLOPs of a (closed) jaxpr, e.g. `jax.jit(f).trace(*args).jaxpr`."""
  jaxpr = _open(closed)
  return _count(jaxpr, [True] * len(jaxpr.outvars))[0]


def model_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> float:
  """Matmul + convolution FLOPs of one call `fn(*args, **kwargs)` (no compilation, no run).

  `args` may be arrays or `jax.ShapeDtypeStruct`s. Work whose result is never used
  (dead code that XLA would drop) is not counted.
  """
  return jaxpr_flops(jax.make_jaxpr(fn)(*args, **kwargs))


# --- The achievable peak, measured interleaved --------------------------------------------


class MatmulProbe:
  """Times an n x n x n matmul (float32 unless `dtype`): the achievable peak of this
  machine, right now."""

  def __init__(self, n: int = 2048, repeats: int = 3, dtype: jnp.dtype = jnp.float32):
    self.n = n
    self.repeats = repeats
    key = jax.random.PRNGKey(0)
    self._a = jax.random.normal(key, (n, n), dtype)
    self._b = jax.random.normal(jax.random.fold_in(key, 1), (n, n), dtype)
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


@dataclasses.dataclass
class Rounds:
  """Per-round timings of several functions and the probe peak bracketing each timing."""

  seconds: dict[str, list[float]]  # name -> seconds per call, one entry per round.
  peaks: dict[str, list[float]]  # name -> mean of the two probes around that timing.

  def stats(self, name: str, flops: float | None = None) -> dict[str, float]:
    """Median/min/max of seconds per call and probe peak; with `flops`, of FLOP/s and MFU."""
    secs, peaks = self.seconds[name], self.peaks[name]
    out = median_range('s', secs) | median_range('peak', peaks)
    if flops is not None:
      out |= median_range('flops_per_s', [flops / s for s in secs])
      out |= median_range('mfu', [flops / s / p for s, p in zip(secs, peaks, strict=True)])
    return out


def median_range(key: str, values: Sequence[float]) -> dict[str, float]:
  """{key: median, key_min: min, key_max: max} of `values` (the printed 'median [range]')."""
  return {key: statistics.median(values), f'{key}_min': min(values), f'{key}_max': max(values)}


def interleave(
  fns: Mapping[str, Callable[[], Any]],
  *,
  rounds: int = 7,
  calls_per_round: int = 1,
  probe: MatmulProbe | None = None,
) -> Rounds:
  """Times each of `fns` once per round, every timing bracketed by probe rounds.

  The sequence is probe, fn_1, probe, fn_2, probe, ..., round after round. Each `fn()`
  must block until its work is done (and be compiled and warm already). Its seconds per
  call in a round are divided against the mean of the probes just before and just after
  it, so both sides of each ratio saw the same machine state.
  """
  probe = probe or MatmulProbe()
  seconds = {name: [] for name in fns}
  peaks = {name: [] for name in fns}
  before = probe()
  for _ in range(rounds):
    for name, fn in fns.items():
      t = time.perf_counter()
      for _ in range(calls_per_round):
        fn()
      seconds[name].append((time.perf_counter() - t) / calls_per_round)
      after = probe()
      peaks[name].append(0.5 * (before + after))
      before = after
  return Rounds(seconds, peaks)


def interleaved_mfu(
  run_step: Callable[[], Any],
  flops_per_step: float,
  *,
  rounds: int = 7,
  steps_per_round: int = 3,
  probe: MatmulProbe | None = None,
  xla_flops_per_step: float | None = None,
) -> dict[str, float]:
  """Alternates probe rounds and rounds of `run_step`; returns per-round MFU statistics.

  `run_step()` must block until its work is done; `flops_per_step` is the numerator (model
  FLOPs, `model_flops`). Returns seconds per step and the probe's FLOP/s (median, min, max)
  and MFU = achieved / probe per round (`mfu`, `mfu_min`, `mfu_max`); with
  `xla_flops_per_step`, also the MFU of XLA's FLOPs (`xla_mfu`, `xla_mfu_min`, `xla_mfu_max`).
  """
  result = interleave(
    {'step': run_step}, rounds=rounds, calls_per_round=steps_per_round, probe=probe
  )
  stats = result.stats('step', flops_per_step)
  out = {
    'step_s': stats['s'],
    'peak_flops': stats['peak'],
    'peak_flops_min': stats['peak_min'],
    'peak_flops_max': stats['peak_max'],
    'mfu': stats['mfu'],
    'mfu_min': stats['mfu_min'],
    'mfu_max': stats['mfu_max'],
  }
  if xla_flops_per_step is not None:
    xla = result.stats('step', xla_flops_per_step)
    out |= {'xla_mfu': xla['mfu'], 'xla_mfu_min': xla['mfu_min'], 'xla_mfu_max': xla['mfu_max']}
  return out
