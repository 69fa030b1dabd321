"""Axis-name collectives that degrade to identities on one device.

Every loss is written once against an optional axis name (SPEC section 6: the `jax.pmap`
path with axis name 'data' and the `shard_map`-in-`jax.jit` path). `axis_name=None` means
one device holding the whole global batch; then every function here is the identity, so the
single-device computation is literally the same code.

Normalisation convention (the scaling trap of SPEC section 5): a loss returns this device's
*share*, `sum over local examples / global count`. The global loss is the sum of the shares
over devices. The gather that feeds cross-device negatives carries gradient, and its
transpose (a reduce-scatter) sends every device's cotangent back to the device that owns the
embedding, so the gradient of the share with respect to a device's own inputs is already the
gradient of the *global* loss with respect to them. Parameter gradients are summed over
devices with `reduce_gradients`, which the trainer must apply (once) to the gradient of the
share; never `pmean` (that divides by the device count) and never differentiate a loss that
was `psum`-ed over devices under `pmap` (that multiplies by it).
"""

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

AxisName = str | None


def axis_size(axis_name: AxisName) -> int:
  """Number of devices along `axis_name` (1 when None)."""
  if axis_name is None:
    return 1
  return lax.axis_size(axis_name)


def axis_index(axis_name: AxisName) -> jax.Array:
  """This device's position along `axis_name` (0 when None)."""
  if axis_name is None:
    return jnp.zeros((), jnp.int32)
  return lax.axis_index(axis_name)


def all_gather(x: jax.Array, axis_name: AxisName) -> jax.Array:
  """Concatenates `x` over devices along axis 0, differentiably.

  Device k's rows land at `[k * len(x), (k + 1) * len(x))`. The gradient flows back through
  the gather to the device that owns each row (CDNS: SPEC section 5).
  """
  if axis_name is None:
    return x
  # The default `to='varying'` is the one whose transpose reduce-scatters the cotangent under
  # pmap as well as under shard_map; 'invarying' drops other devices' terms under pmap.
  return lax.all_gather(x, axis_name, axis=0, tiled=True)


def all_gather_constant(x: jax.Array, axis_name: AxisName) -> jax.Array:
  """Concatenates `x` over devices along axis 0 without gradient, typed as replicated.

  For values every device must hold identically (the memory bank's copy of the global batch):
  under `shard_map` the result is invariant over the axis and may leave with `P()`.
  """
  x = lax.stop_gradient(x)
  if axis_name is None:
    return x
  return lax.all_gather(x, axis_name, axis=0, tiled=True, to='invarying')


def global_sum(x: Any, axis_name: AxisName) -> Any:
  """Sums a (pytree of) per-device value(s) over devices (identity when None)."""
  if axis_name is None:
    return x
  return lax.psum(x, axis_name)


def _tracks_replication(axis_name: str) -> bool:
  """True under a `shard_map` that types values as varying/invariant over `axis_name`.

  There, gradients of replicated (invariant) parameters come back already summed over the
  axis (the implicit broadcast of an invariant value into per-device code transposes to a
  psum). Under `pmap` nothing is typed and the sum is the trainer's job.
  """
  aval = jax.typeof(lax.axis_index(axis_name))
  varying = getattr(getattr(aval, 'manual_axis_type', None), 'varying', None)
  if varying is None:
    varying = getattr(aval, 'vma', frozenset())
  return axis_name in varying


def reduce_gradients(grads: Any, axis_name: AxisName) -> Any:
  """Sums per-device parameter gradients of a loss share into the global-batch gradient.

  Use on the gradient of the share returned by `compute_losses` (or any loss here), with
  respect to parameters replicated over `axis_name`. Under `pmap` (and `shard_map` with
  `check_vma=False`) this is a `psum`. Under `shard_map` with replication checking, leaves
  typed invariant were already summed by JAX's transpose and are returned as they are.
  """
  if axis_name is None:
    return grads
  if not _tracks_replication(axis_name):
    return lax.psum(grads, axis_name)

  def leaf(g):
    varying = getattr(getattr(jax.typeof(g), 'manual_axis_type', None), 'varying', frozenset())
    return lax.psum(g, axis_name) if axis_name in varying else g

  return jax.tree.map(leaf, grads)
