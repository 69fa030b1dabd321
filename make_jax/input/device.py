"""Host batches onto devices: the pmap split and global arrays on a mesh (SPEC section 6)."""

import jax
import numpy as np

Batch = dict[str, np.ndarray]


def shard_for_pmap(batch: Batch, num_devices: int | None = None) -> Batch:
  """Reshapes a host batch [B, ...] to [D, B/D, ...] for `jax.pmap` over D local devices.

  Raises:
    ValueError: B is not divisible by D.
  """
  d = jax.local_device_count() if num_devices is None else num_devices

  def split(x: np.ndarray) -> np.ndarray:
    if x.shape[0] % d:
      raise ValueError(f'Host batch of {x.shape[0]} does not split over {d} devices')
    return x.reshape((d, x.shape[0] // d, *x.shape[1:]))

  return jax.tree.map(split, batch)


def make_global_batch(
  batch: Batch, mesh: jax.sharding.Mesh, data_axis: str | tuple[str, ...] = 'data'
) -> dict[str, jax.Array]:
  """Turns each host's batch into global jax.Arrays sharded over `data_axis` of `mesh`.

  Every host passes its own [B_host, ...] batch; the result has leading dimension
  B_host * process_count, split over the mesh's data axis (the pjit path of SPEC 6).
  """
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(data_axis))
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)
