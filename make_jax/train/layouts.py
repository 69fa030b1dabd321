"""The three layouts of one training loop (`config.parallelism`, SPEC section 6).

  single  `jax.jit` on one device; the batch is the whole global batch.
  pmap    `jax.pmap(axis_name='data')` over this host's devices; the state carries a leading
          device axis (replicated), the host batch is split [D, B/D, ...].
  pjit    `jax.jit` over a `Mesh(('data', 'model'))` from `config.mesh`; batches are global
          `jax.Array`s sharded over `data`; params and optimiser state placed by the logical
          rules (`config.param_sharding`, see state.py); the step runs inside `jax.shard_map`
          over `data`, so the losses gather across devices with `lax.all_gather`.

Every layout donates its state to the step and offers the same small interface (`Layout`),
so the loop never branches on the layout. Checkpoints hold the *canonical* state: one
unreplicated copy (host NumPy for single/pmap, global sharded arrays for pjit) with the RNG
as raw key data, which any layout restores (a pmap checkpoint into a pjit run, 8 devices
into 2).
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, SingleDeviceSharding
from jax.sharding import PartitionSpec as P

from make_jax.input import device as device_lib
from make_jax.parallel import mesh as mesh_lib
from make_jax.train import state as state_lib
from make_jax.train import step as train_step
from make_jax.train.step import TrainState

LAYOUTS = ('single', 'pmap', 'pjit')
Batch = dict[str, Any]


def _key_data(state: TrainState) -> TrainState:
  return state.replace(rng=jax.random.key_data(state.rng))


def _wrap_key(state: TrainState) -> TrainState:
  return state.replace(rng=jax.random.wrap_key_data(state.rng))


def to_host(tree: Any) -> Any:
  """NumPy copy of a tree of (possibly multi-host, sharded or replicated) arrays."""

  def leaf(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      if x.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)

  return jax.tree.map(leaf, tree)


@dataclasses.dataclass
class Layout:
  """How states and batches are placed and stepped; see the module docstring.

  Attributes:
    name: 'single', 'pmap' or 'pjit'.
    local_devices: devices this host feeds.
    init: rng -> placed initial state.
    step: (placed state, placed batch) -> (placed state, metrics); donates the state.
    put_batch: host batch [B_host, ...] -> placed batch.
    canonical: placed state -> the checkpointed form (see the module docstring).
    restore_target: abstract canonical state (ShapeDtypeStructs with shardings) to restore.
    from_canonical: restored canonical state -> placed state.
    params: placed state -> params as host NumPy (for evaluation and export).
    batch_mean: fn(params, batch) -> array; gives (placed state, placed batch) -> the
      mean of fn over this host's batch as host NumPy (each device's share averaged).
    program_copies: devices that each run the compiled step (its FLOPs count per copy).
    packs_text: whether `data.pack_text` can run (it packs a batch on one device).
    mesh: the mesh of 'pjit' (None otherwise).
  """

  name: str
  local_devices: list
  init: Callable[[jax.Array], Any]
  step: Callable[[Any, Batch], tuple[Any, dict[str, Any]]]
  put_batch: Callable[[Batch], Batch]
  canonical: Callable[[Any], Any]
  restore_target: Any
  from_canonical: Callable[[Any], Any]
  params: Callable[[Any], Any]
  batch_mean: Callable[[Callable[[Any, Batch], Any]], Callable[[Any, Batch], np.ndarray]]
  program_copies: int
  packs_text: bool = False
  mesh: jax.sharding.Mesh | None = None


def _jit_mean(fn: Callable[[Any, Batch], Any]) -> Callable[[Any, Batch], np.ndarray]:
  jitted = jax.jit(fn)
  return lambda state, batch: to_host(jitted(state.params, batch))


def _pmap_mean(fn: Callable[[Any, Batch], Any]) -> Callable[[Any, Batch], np.ndarray]:
  mapped = jax.pmap(fn)
  return lambda state, batch: np.asarray(jax.device_get(mapped(state.params, batch))).mean(0)


def _abstract(shapes: Any, shardings: Any) -> Any:
  return jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), shapes, shardings
  )


def make_layout(
  config: ml_collections.ConfigDict,
  model: Any,
  tx: optax.GradientTransformation,
  tokens: train_step.SpecialIds,
) -> Layout:
  """The layout `config.parallelism` over this job's devices.

  Raises:
    ValueError: an unknown layout, 'single' in a multi-process job, or a batch that does not
      split over the devices.
  """
  name = config.parallelism
  if name not in LAYOUTS:
    raise ValueError(f'config.parallelism={name!r}: use one of {LAYOUTS}')
  if name == 'single' and jax.process_count() > 1:
    raise ValueError("config.parallelism='single' runs on one process; use 'pjit' or 'pmap'")
  init = state_lib.init_fn(model, tx, config)
  shapes = jax.eval_shape(lambda r: _key_data(init(r)), jax.random.key(0))
  if name == 'single':
    device = jax.local_devices()[0]
    one = SingleDeviceSharding(device)
    step = jax.jit(train_step.make_train_step(model, tx, config, tokens), donate_argnums=0)
    return Layout(
      name=name,
      local_devices=[device],
      init=lambda rng: state_lib.create_sharded_state(model, tx, config, one, rng),
      step=step,
      put_batch=lambda b: jax.device_put(b, one),
      canonical=lambda s: to_host(_key_data(s)),
      restore_target=_abstract(shapes, jax.tree.map(lambda _: one, shapes)),
      from_canonical=lambda c: jax.device_put(_wrap_key(c), one),
      params=lambda s: to_host(s.params),
      batch_mean=_jit_mean,
      program_copies=1,
      packs_text=True,
    )
  if name == 'pmap':
    devices = jax.local_devices()
    n = len(devices)
    if config.data.global_batch_size // jax.process_count() % n:
      raise ValueError(
        f'global_batch_size {config.data.global_batch_size} does not split over '
        f'{jax.process_count()} hosts x {n} devices'
      )
    local = jax.sharding.Mesh(np.asarray(devices), ('data',))
    split = NamedSharding(local, P('data'))
    one = SingleDeviceSharding(devices[0])

    def replicate(canonical):
      stacked = jax.tree.map(lambda x: jnp.broadcast_to(x, (n, *np.shape(x))), canonical)
      return _wrap_key(jax.device_put(stacked, split))

    step = jax.pmap(
      train_step.make_train_step(model, tx, config, tokens, axis_name='data'),
      axis_name='data',
      donate_argnums=0,
    )
    # Replica 0 of every leaf (the shard's shape is [1, ...] or [...] by how it was placed).
    first = lambda tree: jax.tree.map(
      lambda x: np.asarray(x.addressable_shards[0].data).reshape(x.shape[1:]), tree
    )
    return Layout(
      name=name,
      local_devices=devices,
      init=lambda rng: replicate(
        _key_data(state_lib.create_sharded_state(model, tx, config, one, rng))
      ),
      step=step,
      put_batch=lambda b: jax.device_put(device_lib.shard_for_pmap(b, n), split),
      canonical=lambda s: first(_key_data(s)),
      restore_target=_abstract(shapes, jax.tree.map(lambda _: one, shapes)),
      from_canonical=replicate,
      params=lambda s: first(s.params),
      batch_mean=_pmap_mean,
      program_copies=jax.device_count(),
    )
  mesh = mesh_lib.make_mesh(config.mesh)
  shardings = state_lib.state_shardings(model, tx, config, mesh)
  replicated = NamedSharding(mesh, P())
  batch_sharding = NamedSharding(mesh, P(mesh_lib.DATA_AXIS))
  manual = frozenset({mesh_lib.DATA_AXIS}) if mesh.shape[mesh_lib.MODEL_AXIS] > 1 else frozenset()
  per_device = jax.shard_map(
    train_step.make_train_step(model, tx, config, tokens, axis_name=mesh_lib.DATA_AXIS),
    mesh=mesh,
    in_specs=(P(), P(mesh_lib.DATA_AXIS)),
    # The new state and the metrics are replicated values over `data` (reduced gradients,
    # the gathered queue), so they leave with P(); jit then re-applies the state shardings.
    out_specs=(P(), P()),
    axis_names=manual,
  )
  step = jax.jit(
    per_device,
    in_shardings=(shardings, batch_sharding),
    out_shardings=(shardings, replicated),
    donate_argnums=0,
  )
  return Layout(
    name=name,
    local_devices=list(mesh.local_devices),
    init=lambda rng: state_lib.create_sharded_state(model, tx, config, shardings, rng),
    step=step,
    put_batch=lambda b: device_lib.make_global_batch(b, mesh, mesh_lib.DATA_AXIS),
    canonical=_key_data,
    restore_target=_abstract(shapes, shardings),
    from_canonical=lambda c: _wrap_key(jax.device_put(c, shardings)),
    params=lambda s: to_host(s.params),
    batch_mean=_jit_mean,
    program_copies=jax.device_count(),
    mesh=mesh,
  )
