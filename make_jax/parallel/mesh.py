"""The device mesh of a config and multi-host start-up (SPEC section 6).

`initialize_distributed` wraps `jax.distributed.initialize` so that a one-process run passes
nothing and nothing happens (maxtext's pattern); `make_mesh` builds the `('data', 'model')`
mesh from `config.mesh`, checking the device count up front with a clear error.
"""

from typing import Any

import jax
import numpy as np

DATA_AXIS = 'data'
MODEL_AXIS = 'model'


def initialize_distributed(
  coordinator_address: str = '',
  num_processes: int = 1,
  process_id: int = 0,
  *,
  cpu_collectives: str = 'gloo',
  heartbeat_timeout_seconds: int = 100,
) -> None:
  """Joins a multi-process JAX job; a no-op for one process.

  Args:
    coordinator_address: 'host:port' of process 0's coordinator ('' with one process).
    num_processes: processes in the job.
    process_id: this process, in [0, num_processes).
    cpu_collectives: the CPU collectives implementation ('gloo'), so that `lax.all_gather`
      crosses processes on CPU-only hosts too.

  Raises:
    ValueError: several processes but no coordinator, or a process id out of range.
  """
  if num_processes <= 1:
    return
  if not coordinator_address:
    raise ValueError(f'{num_processes} processes need a coordinator address (host:port)')
  if not 0 <= process_id < num_processes:
    raise ValueError(f'process_id {process_id} is not in [0, {num_processes})')
  if cpu_collectives:
    jax.config.update('jax_cpu_collectives_implementation', cpu_collectives)
  jax.distributed.initialize(
    coordinator_address,
    num_processes=num_processes,
    process_id=process_id,
    heartbeat_timeout_seconds=heartbeat_timeout_seconds,
  )


def wait_for_all_processes(name: str, timeout_s: float = 3600.0) -> None:
  """A barrier on the coordination service (no collective); a no-op for one process.

  The first collective of a multi-process CPU job opens its gloo connections with a 30 s
  connect timeout, so processes that finish compiling the step minutes apart (a cold cache,
  a busy host) must meet here first. `name` must be new for each barrier of a job.
  """
  if jax.process_count() <= 1:
    return
  from jax._src import distributed  # The client of jax.distributed.initialize.

  distributed.global_state.client.wait_at_barrier(name, int(timeout_s * 1000))


def mesh_shape(mesh_cfg: Any, num_devices: int) -> tuple[int, int]:
  """(data, model) sizes of `mesh_cfg` (fields data, model; -1 fills the rest) over devices.

  Raises:
    ValueError: the sizes do not multiply to the device count.
  """
  data, model = int(mesh_cfg.data), int(mesh_cfg.model)
  if model <= 0:
    raise ValueError(f'mesh.model must be positive, got {model}')
  if data == -1:
    if num_devices % model:
      raise ValueError(f'{num_devices} devices do not split into mesh.model={model}')
    data = num_devices // model
  if data * model != num_devices:
    raise ValueError(
      f'mesh.data={data} x mesh.model={model} = {data * model} devices, but there are '
      f'{num_devices}: set mesh.data=-1 or sizes that multiply to the device count'
    )
  return data, model


def make_mesh(mesh_cfg: Any, devices: Any = None) -> jax.sharding.Mesh:
  """A `Mesh` with axes ('data', 'model') over `devices` (default: all, every process)."""
  devices = jax.devices() if devices is None else list(devices)
  data, model = mesh_shape(mesh_cfg, len(devices))
  grid = np.asarray(devices, dtype=object).reshape(data, model)
  return jax.sharding.Mesh(grid, (DATA_AXIS, MODEL_AXIS))
