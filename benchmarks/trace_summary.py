"""The kernels of a few profiled steps, from jax.profiler's trace, without TensorBoard."""

import collections
import glob
import gzip
import json
import os
from typing import Any


def summarise(trace_dir: str, n_steps: int, top: int = 15) -> dict[str, Any]:
  """Device-busy time, wall span and the top kernels per step, from jax.profiler's perfetto
  JSON. On a GPU the kernels are the events of the device's 'Stream' rows; on CPU (no
  device rows) the XLA op events of the host threads stand in for them."""
  files = glob.glob(os.path.join(trace_dir, '**', '*.trace.json.gz'), recursive=True)
  files += glob.glob(os.path.join(trace_dir, '**', '*perfetto_trace.json.gz'), recursive=True)
  if not files:
    return {'error': f'no trace JSON under {trace_dir}'}
  with gzip.open(files[0], 'rt') as f:
    data = json.load(f)
  events = data['traceEvents'] if isinstance(data, dict) else data
  meta = lambda kind: {
    (e['pid'], e.get('tid')) if kind == 'thread_name' else e['pid']: e.get('args', {}).get(
      'name', ''
    )
    for e in events
    if e.get('ph') == 'M' and e.get('name') == kind
  }
  process, thread = meta('process_name'), meta('thread_name')
  timed = [e for e in events if e.get('ph') == 'X' and 'dur' in e]
  device_pids = {p for p, name in process.items() if '/device:' in name and 'CPU' not in name}
  on_device = [e for e in timed if e['pid'] in device_pids]
  streams = [e for e in on_device if thread.get((e['pid'], e.get('tid')), '').startswith('Stream')]
  kernels = streams or on_device
  source = 'device streams' if streams else 'device'
  if not kernels:  # CPU: XLA's per-op events on the host threads.
    kernels = [e for e in timed if 'hlo_op' in (e.get('args') or {})]
    source = 'host XLA ops'
  if not kernels:
    return {'error': 'no kernel events', 'processes': sorted(set(process.values()))[:20]}
  spans = sorted((e['ts'], e['ts'] + e['dur']) for e in kernels)
  busy, lo, hi = 0.0, None, None
  for s, t in spans:
    if hi is None or s > hi:
      busy += 0.0 if hi is None else hi - lo
      lo, hi = s, t
    else:
      hi = max(hi, t)
  busy += hi - lo
  by_name: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])
  for e in kernels:
    args = e.get('args') or {}
    name = args.get('hlo_op') or args.get('long_name') or e.get('name', '')
    by_name[name[:100]][0] += 1
    by_name[name[:100]][1] += e['dur']
  return {
    'source': source,
    'kernels_per_step': len(kernels) / n_steps,
    'busy_ms_per_step': busy / 1e3 / n_steps,
    'span_ms_per_step': (spans[-1][1] - spans[0][0]) / 1e3 / n_steps,
    'top': [
      {'kernel': n, 'calls_per_step': c / n_steps, 'ms_per_step': d / 1e3 / n_steps}
      for n, (c, d) in sorted(by_name.items(), key=lambda x: -x[1][1])[:top]
    ],
  }
