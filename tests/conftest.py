"""Test setup: 8 fake CPU devices for sharding tests, set before JAX is imported.

XLA's CPU backend is told not to optimise the generated code (LLVM level 0): the suite is
dominated by compiling small programs, not running them, and this halves its time (the
tiny model's init compiled in 41 s at the default level, 8.6 s at level 0). Results are
compared within one process or against tolerances, never against the optimised build's
bits. Set XLA_FLAGS with another `--xla_backend_optimization_level` to override.

Compiled programs also go to JAX's persistent compilation cache (a directory in the system
temp dir, shared by the pytest workers and the trainer subprocesses they start): the trainer
tests start several processes that compile the same step, and later ones load it instead.
Set JAX_COMPILATION_CACHE_DIR to use another directory.
"""

import os
import sys
import tempfile

# Must run before any `import jax`: tests that shard over 8 devices rely on it.
_flags = os.environ.get('XLA_FLAGS', '')
if '--xla_force_host_platform_device_count' not in _flags:
  _flags += ' --xla_force_host_platform_device_count=8'
if '--xla_backend_optimization_level' not in _flags:
  _flags += ' --xla_backend_optimization_level=0'
os.environ['XLA_FLAGS'] = _flags.strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault(
  'JAX_COMPILATION_CACHE_DIR',
  os.path.join(tempfile.gettempdir(), f'make_jax_tests_xla_{os.getuid()}'),
)
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('HF_HUB_OFFLINE', '1')

# The repository root (configs/, tools/, make_jax/) is importable from the tests.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

SHARED_DATA = os.path.join(os.path.dirname(_ROOT), 'shared', 'data')


# --- The synthetic catalogue that the input and evaluator tests share ---------------------

import pytest  # noqa: E402  (after the environment above is set)


@pytest.fixture(scope='session')
def builder(tmp_path_factory):
  """synthetic_products/en_small, built once per session (test_datasets_synthetic uses the
  same data_dir)."""
  from make_jax.datasets import loading

  return loading.prepare('synthetic_products', 'en_small', tmp_path_factory.getbasetemp() / 'tfds')


@pytest.fixture(scope='session')
def text(builder):
  """A vocabulary of 1000 learned from the first 500 catalogue titles."""
  import tensorflow_datasets as tfds

  from make_jax.text.preprocess import TextPreprocessor

  source = builder.as_data_source('catalogue', decoders={'image': tfds.decode.SkipDecoding()})
  return TextPreprocessor.from_corpus([r['title'] for r in source.__getitems__(range(500))], 1000)
