"""What the trainer sets before JAX starts, by backend: XLA's GPU flags and the compile cache.

XLA reads `XLA_FLAGS` once, when the first backend starts, so `add_gpu_flags` runs first
(tools/train.py, benchmarks/device_check.py). The flags are the ones the JAX GPU
performance guide and MaxText set for training; each is a long-standing XLA flag, present
in the pinned jaxlib and in the newest one the device image carries (0.11.2), because an
unknown flag aborts the process. They are added only where a GPU will be used, and a flag
already named in `XLA_FLAGS` keeps the user's value.

The persistent compilation cache keeps compiled steps across runs (a resume, a rerun of the
device check): `enable_compilation_cache` points JAX at a directory unless
`JAX_COMPILATION_CACHE_DIR` already does.
"""

import importlib.util
import os
from collections.abc import MutableMapping

import jax
import jax.numpy as jnp
from jax import lax

GPU_XLA_FLAGS = (
  # Schedules collectives and compute to overlap (multi-GPU); harmless on one.
  '--xla_gpu_enable_latency_hiding_scheduler=true',
  # Collectives on a high-priority stream, so compute does not starve them.
  '--xla_gpu_enable_highest_priority_async_stream=true',
)
# Names the platform the program is compiled for when it is not the default backend's: a
# deviceless compile for a GPU on a CPU-only machine (benchmarks/gpu_kernels.py).
TARGET_ENV = 'MAKE_JAX_TARGET_PLATFORM'
_GPU_PLUGINS = ('jax_plugins.xla_cuda13', 'jax_plugins.xla_cuda12', 'jax_plugins.xla_rocm7')


def target_platform() -> str:
  """The platform the traced program is for: $MAKE_JAX_TARGET_PLATFORM, else JAX's default
  backend ('cpu', 'gpu', 'tpu'). Backend-aware choices of the model and the step read it."""
  return os.environ.get(TARGET_ENV) or jax.default_backend()


def gpu_expected(environ: MutableMapping[str, str] = os.environ) -> bool:
  """Whether JAX will start on a GPU: `JAX_PLATFORMS` names one, or (unset) a GPU plugin
  is installed. Decided without starting a backend."""
  platforms = environ.get('JAX_PLATFORMS', '')
  if platforms:
    return any(p.strip() in ('cuda', 'gpu', 'rocm') for p in platforms.split(','))
  for name in _GPU_PLUGINS:
    try:
      if importlib.util.find_spec(name) is not None:
        return True
    except ModuleNotFoundError:
      continue
  return False


def add_gpu_flags(environ: MutableMapping[str, str] = os.environ) -> list[str]:
  """Appends GPU_XLA_FLAGS to `XLA_FLAGS` where a GPU is expected; returns those added."""
  if not gpu_expected(environ):
    return []
  current = environ.get('XLA_FLAGS', '')
  added = [f for f in GPU_XLA_FLAGS if f.split('=')[0] not in current]
  if added:
    environ['XLA_FLAGS'] = ' '.join([current, *added]).strip()
  return added


def enable_compilation_cache(path: str) -> str:
  """Uses `path` as JAX's persistent compilation cache unless `JAX_COMPILATION_CACHE_DIR`
  is set ('' leaves the cache as it is); returns the directory in use ('' for none)."""
  if os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    return os.environ['JAX_COMPILATION_CACHE_DIR']
  if not path:
    return ''
  path = os.path.expanduser(path)
  jax.config.update('jax_compilation_cache_dir', path)
  return path


def take_along_last(values: jax.Array, index: jax.Array) -> jax.Array:
  """values[..., index[...]]: each row's entry at its index along the last axis.

  The same value either way: off CPU by an iota comparison (its gradient a select, not a
  scatter kernel the size of `values`: 531 MB for the base step's MLM logits); on CPU by a
  gather, where the comparison made the base step 0.94x [0.90-0.98] as fast
  (`benchmarks.bench_model --baseline_rev`; gather: 0.98x [0.90-1.03]).
  """
  if target_platform() == 'cpu':
    return jnp.take_along_axis(values, index[..., None], axis=-1)[..., 0]
  hit = lax.broadcasted_iota(index.dtype, values.shape, values.ndim - 1) == index[..., None]
  return jnp.sum(jnp.where(hit, values, 0), axis=-1)
