"""Test setup: 8 fake CPU devices for sharding tests, set before JAX is imported."""

import os
import sys

# Must run before any `import jax`: tests that shard over 8 devices rely on it.
_flags = os.environ.get('XLA_FLAGS', '')
if '--xla_force_host_platform_device_count' not in _flags:
  os.environ['XLA_FLAGS'] = (_flags + ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('HF_HUB_OFFLINE', '1')

# The repository root (configs/, tools/, make_jax/) is importable from the tests.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

SHARED_DATA = os.path.join(os.path.dirname(_ROOT), 'shared', 'data')
