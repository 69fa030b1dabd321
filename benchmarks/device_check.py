r"""One device check: what the train step does on this machine's accelerator, in one short run.

Made for a bare accelerator machine whose packages are JAX, flax, optax, orbax, numpy,
pillow and tokenizers, with ml-collections carried as a wheel (`benchmarks/device_wheels.sh`
says how): no TensorFlow, TFDS or ScaNN is imported. From the repository root:

  python -m benchmarks.device_check --out=$OUT                 # accelerator defaults
  python -m benchmarks.device_check --out=/tmp/dc --runs=tiny:16 --steps=3 --train_steps=4
                                                               # CPU, what the test runs

In order, each part printed as it finishes and all of it saved to $OUT/device_check.json:

1. environment: versions, devices, every XLA/JAX/CUDA environment variable;
2. the matmul peak of this process (bf16 n^3 on an accelerator, float32 on CPU), the
   denominator of every MFU below;
3. per `--runs` entry `config:batch` (bf16 on an accelerator): parameters from
   `jax.eval_shape` plus host random numbers (no compile of the model's init), the real
   step of make_jax/train/step.py with the state donated as the trainer does, compile
   seconds, compiled kernels per step (`benchmarks/hlo_kernels.py`), peak
   memory, ms/step blocking on every step (median, min) and pipelined, examples/s, model
   GFLOP/step (matmuls and convolutions of the jaxpr) and MFU; then `--profile_steps`
   steps under `jax.profiler`, summarised without TensorBoard as device-busy time against
   wall time and the top kernels by time;
4. a short real `train_and_evaluate` (configs/tiny.py on `data.source='memory'`: the
   synthetic dataset generated in memory) with its checkpoint, resume-ready workdir and
   Recall@K evaluation.

A run whose compile would start after `--budget_s` is skipped and said so; an error in one
part is recorded and the next part runs. Compiles go to JAX's persistent cache
(`--cache_dir`), so a rerun on the same machine skips them.
"""

import argparse
import dataclasses
import importlib
import json
import os
import sys
import tempfile
import time
import traceback
from typing import Any

T_START = time.time()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument('--out', default=os.environ.get('OUT', '/tmp/device_check'))
  ap.add_argument(
    '--runs',
    default='',
    help='config:batch,... ("" = base:256,paper:64,base:1024 on an accelerator, tiny:16 on CPU)',
  )
  ap.add_argument('--dtype', default='', help='compute dtype ("" = bfloat16 on an accelerator)')
  ap.add_argument('--steps', type=int, default=20, help='timed steps per run')
  ap.add_argument('--profile_steps', type=int, default=3)
  ap.add_argument('--train_steps', type=int, default=40, help='0: no train_and_evaluate part')
  ap.add_argument('--budget_s', type=float, default=420.0, help='start no compile after this')
  ap.add_argument('--cache_dir', default=os.path.join(tempfile.gettempdir(), 'make_jax_xla_cache'))
  ap.add_argument(
    '--trainer_flags', type=int, default=1, help="1: add the trainer's GPU XLA flags (backend.py)"
  )
  return ap.parse_args(argv)


# --- Parts ------------------------------------------------------------------------------------


def environment() -> dict[str, Any]:
  import jax

  env = {
    k: v
    for k, v in sorted(os.environ.items())
    if k.startswith(('XLA', 'JAX', 'TF_', 'CUDA', 'NCCL', 'NVIDIA_TF32', 'LIBTPU'))
  }
  versions = {}
  for name in ('jax', 'jaxlib', 'flax', 'optax', 'orbax.checkpoint', 'numpy', 'ml_collections'):
    try:
      versions[name] = getattr(importlib.import_module(name), '__version__', '?')
    except ImportError:
      versions[name] = None
  devices = jax.devices()
  return {
    'python': sys.version.split()[0],
    'versions': versions,
    'platform': devices[0].platform,
    'device_kind': devices[0].device_kind,
    'device_count': len(devices),
    'env': env,
  }


def matmul_peak(platform: str) -> dict[str, Any]:
  """FLOP/s of the best of 5 n^3 matmuls (bf16 8192 on an accelerator, float32 1024 on CPU)."""
  import jax.numpy as jnp

  from make_jax.train import flops as flops_lib

  n, dtype = (8192, jnp.bfloat16) if platform != 'cpu' else (1024, jnp.float32)
  flops = flops_lib.MatmulProbe(n, repeats=5, dtype=dtype)()
  return {'n': n, 'dtype': jnp.dtype(dtype).name, 'tflops': flops / 1e12}


@dataclasses.dataclass
class StepRun:
  config: Any
  state: Any
  batch: Any
  step: Any


def build_step(config_name: str, batch_size: int, dtype: str) -> StepRun:
  """The real train step of `configs/<config_name>` with host-random parameters."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  from benchmarks import step_setup
  from make_jax.models.make_model import build_model
  from make_jax.train import optimizer
  from make_jax.train import state as state_lib
  from make_jax.train import step as train_step

  config = importlib.import_module(f'configs.{config_name}').get_config()
  config.data.global_batch_size = batch_size
  if dtype:
    config.model.dtype = dtype
  model = build_model(config)
  tx = optimizer.make_optimizer(config.optim, config.train.num_steps)
  shapes = jax.eval_shape(state_lib.init_fn(model, tx, config), jax.random.key(0)).params
  rs = np.random.RandomState(0)

  def host_init(path, s):
    name = jax.tree_util.keystr(path)
    if s.ndim == 1 and 'scale' in name:
      return jnp.ones(s.shape, s.dtype)
    if s.ndim <= 1:
      return jnp.zeros(s.shape, s.dtype)
    return jnp.asarray((0.02 * rs.standard_normal(s.shape)).astype(s.dtype))

  params = jax.tree_util.tree_map_with_path(host_init, shapes)
  state = train_step.create_train_state(model, params, tx, config, jax.random.key(1))
  batch = step_setup.random_batch(config, batch_size)
  tokens = step_setup.special_tokens(config.model.vocab_size)
  return StepRun(config, state, batch, train_step.make_train_step(model, tx, config, tokens))


def time_steps(compiled, state, batch, n: int) -> tuple[Any, dict[str, float]]:
  import jax
  import numpy as np

  for _ in range(2):
    state, metrics = compiled(state, batch)
  jax.block_until_ready((state, metrics))
  per = []
  for _ in range(n):
    t = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    per.append(time.perf_counter() - t)
  t = time.perf_counter()
  for _ in range(n):
    state, metrics = compiled(state, batch)
  jax.block_until_ready((state, metrics))
  pipelined = (time.perf_counter() - t) / n
  return state, {
    'ms_median': 1e3 * float(np.median(per)),
    'ms_min': 1e3 * float(np.min(per)),
    'ms_max': 1e3 * float(np.max(per)),
    'ms_pipelined': 1e3 * pipelined,
  }


def step_run(spec: str, args, peak_flops: float, out_dir: str) -> dict[str, Any]:
  import jax

  from benchmarks import hlo_kernels, trace_summary
  from make_jax.train import flops as flops_lib

  config_name, batch_size = spec.split(':')
  batch_size = int(batch_size)
  t0 = time.time()
  run = build_step(config_name, batch_size, args.dtype)
  info: dict[str, Any] = {
    'config': config_name,
    'batch': batch_size,
    'dtype': run.config.model.dtype,
  }
  info['build_s'] = round(time.time() - t0, 1)
  jitted = jax.jit(run.step, donate_argnums=0)
  t0 = time.time()
  traced = jitted.trace(run.state, run.batch)
  flops = flops_lib.jaxpr_flops(traced.jaxpr)
  lowered = traced.lower()
  info['lower_s'] = round(time.time() - t0, 1)
  t0 = time.time()
  compiled = lowered.compile()
  info['compile_s'] = round(time.time() - t0, 1)
  counts = hlo_kernels.kernels(compiled.as_text())
  info['kernels'] = counts['total']
  info['kernels_by_kind'] = counts['by_kind']
  info['model_gflop_per_step'] = flops / 1e9
  try:
    m = compiled.memory_analysis()
    info['compiled_temp_gb'] = m.temp_size_in_bytes / 1e9
    info['compiled_args_gb'] = m.argument_size_in_bytes / 1e9
  except Exception as e:  # noqa: BLE001  (not every backend reports it)
    info['compiled_memory'] = repr(e)[:200]
  print(f'[{spec}] compiled: {json.dumps(info)}', flush=True)
  state, timing = time_steps(compiled, run.state, run.batch, args.steps)
  info.update(timing)
  info['examples_per_s'] = batch_size / (timing['ms_median'] / 1e3)
  info['mfu'] = flops / (timing['ms_median'] / 1e3) / peak_flops
  info['mfu_pipelined'] = flops / (timing['ms_pipelined'] / 1e3) / peak_flops
  stats = jax.devices()[0].memory_stats() or {}
  if 'peak_bytes_in_use' in stats:
    info['peak_memory_gb'] = stats['peak_bytes_in_use'] / 1e9
  print(
    f'[{spec}] {timing["ms_median"]:.1f} ms/step median ({timing["ms_min"]:.1f} min, '
    f'{timing["ms_pipelined"]:.1f} pipelined), {info["examples_per_s"]:.0f} examples/s, '
    f'MFU {100 * info["mfu"]:.1f}% of the measured matmul peak',
    flush=True,
  )
  if args.profile_steps > 0:
    trace_dir = os.path.join(out_dir, f'trace_{config_name}_b{batch_size}')
    try:
      with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        for _ in range(args.profile_steps):
          state, metrics = compiled(state, run.batch)
        jax.block_until_ready((state, metrics))
      info['profile'] = trace_summary.summarise(trace_dir, args.profile_steps)
    except Exception as e:  # noqa: BLE001  (a profiler failure must not lose the timings)
      info['profile'] = {'error': repr(e)[:300]}
    p = info['profile']
    if 'top' in p:
      print(
        f'[{spec}] profile ({p["source"]}): {p["kernels_per_step"]:.0f} kernels/step, busy '
        f'{p["busy_ms_per_step"]:.1f} ms of {p["span_ms_per_step"]:.1f} ms span per step',
        flush=True,
      )
      for k in p['top']:
        print(f'    {k["ms_per_step"]:8.3f} ms {k["calls_per_step"]:6.1f}x  {k["kernel"]}')
  return info


def train_part(steps: int, out_dir: str) -> dict[str, Any]:
  """A short real train_and_evaluate on the in-memory synthetic dataset."""
  from configs import tiny
  from make_jax.train import loop

  config = tiny.get_config()
  config.data.source = 'memory'
  config.train.num_steps = steps
  config.train.log_every = max(1, steps // 4)
  config.train.checkpoint_every = steps
  config.train.eval_every = steps
  workdir = os.path.join(out_dir, 'train_tiny')
  t0 = time.time()
  result = loop.train_and_evaluate(config, workdir)
  return {
    'seconds': round(time.time() - t0, 1),
    'step': result['step'],
    'loss': result['metrics'].get('loss'),
    'evals': result['evals'],
    'checkpoints': sorted(os.listdir(os.path.join(workdir, 'checkpoints')))
    if os.path.isdir(os.path.join(workdir, 'checkpoints'))
    else [],
  }


# --- Main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
  args = parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  sys.path.insert(0, os.getcwd())
  from make_jax.parallel import backend

  # As the trainer runs (tools/train.py): its GPU flags, unless --trainer_flags=0.
  added = backend.add_gpu_flags() if args.trainer_flags else []
  import jax

  if args.cache_dir:
    backend.enable_compilation_cache(args.cache_dir)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)
  report: dict[str, Any] = {'args': vars(args), 'xla_flags_added': added}
  path = os.path.join(args.out, 'device_check.json')

  def save():
    report['elapsed_s'] = round(time.time() - T_START, 1)
    with open(path + '.tmp', 'w') as f:
      json.dump(report, f, indent=1, default=str)
    os.replace(path + '.tmp', path)

  report['environment'] = env = environment()
  print('== environment', json.dumps(env), flush=True)
  accelerator = env['platform'] != 'cpu'
  if not args.dtype:
    args.dtype = 'bfloat16' if accelerator else 'float32'
  runs = args.runs or ('base:256,paper:64,base:1024' if accelerator else 'tiny:16')
  report['matmul_peak'] = peak = matmul_peak(env['platform'])
  print('== matmul peak', json.dumps(peak), flush=True)
  save()
  compile_estimate = 0.0
  for spec in (r.strip() for r in runs.split(',') if r.strip()):
    elapsed = time.time() - T_START
    if elapsed + compile_estimate > args.budget_s:
      report[spec] = f'skipped: {elapsed:.0f} s elapsed, budget {args.budget_s:.0f} s'
      print('==', spec, report[spec], flush=True)
      continue
    print('== step', spec, flush=True)
    try:
      report[spec] = step_run(spec, args, peak['tflops'] * 1e12, args.out)
      compile_estimate = max(compile_estimate, report[spec]['compile_s'])
    except Exception:  # noqa: BLE001  (recorded; the next part runs)
      report[spec] = {'error': traceback.format_exc()[-2000:]}
      print(report[spec]['error'], flush=True)
    save()
  if args.train_steps > 0:
    print('== train_and_evaluate (tiny, in-memory synthetic data)', flush=True)
    try:
      report['train'] = train_part(args.train_steps, args.out)
    except Exception:  # noqa: BLE001
      report['train'] = {'error': traceback.format_exc()[-2000:]}
    print('== train', json.dumps(report['train'], default=str)[:2000], flush=True)
  save()
  print(f'== done in {report["elapsed_s"]:.0f} s; report {path}', flush=True)
  return report


if __name__ == '__main__':
  main()
