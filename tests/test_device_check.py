"""benchmarks/device_check.py runs end to end on CPU (tiny), importing no TensorFlow.

The accelerator machine it is written for has JAX, flax, optax and orbax but no
TensorFlow, TFDS or ScaNN: here they are made unimportable for the run.
"""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_RUN = """
import sys
for name in ('tensorflow', 'tensorflow_datasets', 'scann'):
  sys.modules[name] = None  # `import name` now raises ImportError.
sys.argv = ['device_check'] + sys.argv[1:]
import runpy
runpy.run_module('benchmarks.device_check', run_name='__main__')
"""


def test_device_check_runs_on_cpu_without_tensorflow(tmp_path):
  out = tmp_path / 'out'
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env['XLA_FLAGS'] = env.get('XLA_FLAGS', '').replace(
    '--xla_force_host_platform_device_count=8', ''
  )
  proc = subprocess.run(
    [
      sys.executable,
      '-c',
      _RUN,
      f'--out={out}',
      '--runs=tiny:8',
      '--steps=2',
      '--profile_steps=1',
      '--train_steps=2',
      '--cache_dir=',
    ],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads((out / 'device_check.json').read_text())
  assert report['environment']['platform'] == 'cpu'
  assert report['matmul_peak']['tflops'] > 0
  run = report['tiny:8']
  assert 'error' not in run, run
  assert run['batch'] == 8 and run['dtype'] == 'float32'
  assert run['model_gflop_per_step'] > 0 and run['compile_s'] >= 0
  assert run['kernels'] == sum(run['kernels_by_kind'].values()) > 0
  assert run['ms_median'] > 0 and 0 < run['mfu'] < 1.5
  assert run['examples_per_s'] == 8 / (run['ms_median'] / 1e3)
  assert run['profile']['top'], run['profile']  # Top kernels by time, parsed from the trace.
  train = report['train']
  assert 'error' not in train, train
  assert train['step'] == 2 and train['checkpoints'] == ['2']
  assert [e['step'] for e in train['evals']] == [0, 2]
  assert 0 <= train['evals'][-1]['recall@10'] <= 1
  assert 'tiny:8' in proc.stdout and 'ms/step median' in proc.stdout


def test_gpu_flags_are_added_for_a_gpu_only_and_never_override():
  from make_jax.parallel import backend

  cpu = {'JAX_PLATFORMS': 'cpu', 'XLA_FLAGS': '--xla_force_host_platform_device_count=8'}
  assert backend.add_gpu_flags(cpu) == []
  assert cpu['XLA_FLAGS'] == '--xla_force_host_platform_device_count=8'
  gpu = {'JAX_PLATFORMS': 'cuda', 'XLA_FLAGS': '--xla_gpu_enable_latency_hiding_scheduler=false'}
  added = backend.add_gpu_flags(gpu)
  assert added == ['--xla_gpu_enable_highest_priority_async_stream=true']
  assert gpu['XLA_FLAGS'].split() == ['--xla_gpu_enable_latency_hiding_scheduler=false', *added]
  assert backend.add_gpu_flags(gpu) == []  # Idempotent.


def test_take_along_last_is_the_gather_on_every_platform(monkeypatch):
  # The accelerator form (an iota comparison) gives the gather's values and gradients.
  import jax
  import jax.numpy as jnp
  import numpy as np

  from make_jax.parallel import backend

  values = jax.random.normal(jax.random.key(0), (3, 5, 40))
  index = jax.random.randint(jax.random.key(1), (3, 5), 0, 40)
  gather = lambda v: jnp.take_along_axis(v, index[..., None], axis=-1)[..., 0]
  picked = lambda v: backend.take_along_last(v, index)  # Reads the platform when traced.
  for platform in ('cpu', 'gpu'):
    monkeypatch.setenv(backend.TARGET_ENV, platform)
    np.testing.assert_array_equal(picked(values), gather(values))
    grad = jax.grad(lambda v: jnp.sum(jnp.sin(picked(v))))(values)
    np.testing.assert_array_equal(grad, jax.grad(lambda v: jnp.sum(jnp.sin(gather(v))))(values))
