"""The train state, created already placed: eval_shape -> shardings -> jit(init, out_shardings).

Why: a paper-scale state does not fit one device before it is sharded, so it must never be
built whole and then split (STYLE.md 6, flax lm1b). `jax.eval_shape` of the model's `init`
exposes the logical axis names of every parameter (`nn.with_logical_partitioning`); the
optimiser's moments inherit their parameter's names (`optax.tree_map_params`); everything else
(step, RNG, the MBNS queue, counters) is replicated. The names become mesh shardings through
the rules of `make_jax/parallel/partitioning.py`, chosen by `config.param_sharding`:

  replicated   every weight on every device (plain data parallelism)
  fsdp         the `embed` dimension of weights split over `data` (ZeRO-3 / FSDP)
  tensor       vocab / mlp / heads over `model` (Megatron-style tensor parallelism)
  fsdp_tensor  both

A dimension that the mesh axis does not divide is left unsplit (said once in the log).
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import optax
from absl import logging
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from make_jax.models import make_model
from make_jax.parallel import partitioning
from make_jax.train.step import TrainState, create_train_state

PARAM_SHARDINGS = ('replicated', 'fsdp', 'tensor', 'fsdp_tensor')


def init_fn(
  model: nn.Module, tx: optax.GradientTransformation, config: ml_collections.ConfigDict
) -> Callable[[jax.Array], TrainState]:
  """`init(rng) -> TrainState` at step 0 (params from `model.init`, unboxed)."""
  batch = make_model.example_batch(config, 1)

  def init(rng: jax.Array) -> TrainState:
    params = nn.meta.unbox(model.init({'params': rng}, batch, train=False))['params']
    return create_train_state(model, params, tx, config, rng)

  return init


def logical_specs(
  model: nn.Module, tx: optax.GradientTransformation, config: ml_collections.ConfigDict
) -> TrainState:
  """The `TrainState` of logical `PartitionSpec`s (names like 'embed'; P() = replicated)."""
  batch = make_model.example_batch(config, 1)
  key = jax.random.key(0)
  boxed = jax.eval_shape(lambda r: model.init({'params': r}, batch, train=False)['params'], key)
  param_specs = nn.get_partition_spec(boxed)
  abstract = jax.eval_shape(init_fn(model, tx, config), key)
  is_spec = lambda x: isinstance(x, P)
  opt_specs = optax.tree_map_params(
    tx,
    lambda _, spec: spec,
    abstract.opt_state,
    param_specs,
    transform_non_params=lambda _: P(),
    is_leaf=is_spec,
  )
  everything_else = jax.tree.map(lambda _: P(), abstract)
  return everything_else.replace(params=param_specs, opt_state=opt_specs)


def axis_rules(param_sharding: str) -> tuple[tuple[str, str | None], ...]:
  """Logical-to-mesh rules for weights under `config.param_sharding`.

  Raises:
    ValueError: an unknown value.
  """
  if param_sharding not in PARAM_SHARDINGS:
    raise ValueError(f'config.param_sharding={param_sharding!r}: use one of {PARAM_SHARDINGS}')
  rules = []
  for logical, mesh_axis in partitioning.LOGICAL_AXIS_RULES:
    if logical.startswith('act_'):
      rules.append((logical, mesh_axis))
      continue
    if 'tensor' not in param_sharding and mesh_axis == 'model':
      mesh_axis = None
    if 'fsdp' in param_sharding and logical == 'embed':
      mesh_axis = 'data'
    rules.append((logical, mesh_axis))
  return tuple(rules)


def _fit(spec: P, shape: tuple[int, ...], mesh: jax.sharding.Mesh, dropped: list) -> P:
  """`spec` with mesh axes removed from dimensions they do not divide."""
  out = []
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec)), strict=True):
    names = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
    size = 1
    for name in names:
      size *= mesh.shape[name]
    if names and dim % size:
      dropped.append((shape, spec))
      axes = None
    out.append(axes)
  return P(*out)


def state_shardings(
  model: nn.Module,
  tx: optax.GradientTransformation,
  config: ml_collections.ConfigDict,
  mesh: jax.sharding.Mesh,
) -> TrainState:
  """The `TrainState` of `NamedSharding`s on `mesh` for `config.param_sharding`."""
  logical = logical_specs(model, tx, config)
  rules = axis_rules(config.param_sharding)
  is_spec = lambda x: isinstance(x, P)
  mesh_specs = jax.tree.map(
    lambda s: nn.logical_to_mesh_axes(tuple(s), rules) if len(s) else P(), logical, is_leaf=is_spec
  )
  abstract = jax.eval_shape(init_fn(model, tx, config), jax.random.key(0))
  dropped: list = []
  fitted = jax.tree.map(
    lambda spec, a: _fit(spec, a.shape, mesh, dropped), mesh_specs, abstract, is_leaf=is_spec
  )
  if dropped:
    logging.info(
      '%d weights keep a dimension unsplit (not divisible by its mesh axis)', len(dropped)
    )
  return jax.tree.map(lambda s: NamedSharding(mesh, s), fitted, is_leaf=is_spec)


def create_sharded_state(
  model: nn.Module,
  tx: optax.GradientTransformation,
  config: ml_collections.ConfigDict,
  shardings: Any,
  rng: jax.Array,
) -> TrainState:
  """Initialises the state directly into `shardings` (a tree of shardings, or one sharding)."""
  return jax.jit(init_fn(model, tx, config), out_shardings=shardings)(rng)
