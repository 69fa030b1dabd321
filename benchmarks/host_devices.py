"""Splits the host CPU into `--devices=N` XLA devices; import before JAX, call at once.

XLA reads `--xla_force_host_platform_device_count` once, when JAX starts, so a benchmark that
takes the device count as a flag must set it before absl has parsed any flag: from argv.
"""

import os
import sys


def split_host_from_argv(default: int) -> int:
  """Sets XLA_FLAGS from `--devices=N` in argv (else `default`); returns the count.

  Does nothing to XLA_FLAGS when JAX is already imported (the count can no longer change).
  """
  count = default
  for arg in sys.argv[1:]:
    if arg.startswith('--devices='):
      count = int(arg.split('=', 1)[1])
  if 'jax' not in sys.modules:
    os.environ['XLA_FLAGS'] = (
      os.environ.get('XLA_FLAGS', '') + f' --xla_force_host_platform_device_count={count}'
    ).strip()
  return count
