"""A 2-D convolution whose kernel gradient is computed as one matmul per kernel tap.

Why: XLA's CPU backend runs the kernel-gradient ("backward-filter") convolution of the
ResNet's early stages at 1-8 GFLOP/s, against 35-120 GFLOP/s for the forward and
input-gradient convolutions of the same layers (batch 32, 64x64 images, 32-64 channels;
`benchmarks/bench_conv.py`). It is the largest single cost of the base train step. The
kernel gradient of a k x k convolution is a sum over its k*k taps of
`shifted_input^T @ output_gradient`, each an [N, C_in]^T x [N, C_out] matmul over the
N = batch * output positions; written so, the same numbers come out 3.5x faster over the
base ResNet-18 (per layer 0.95x to 37x, same benchmark). The input gradient stays XLA's
transposed convolution and the forward pass is the same convolution as before. Only the
order of the kernel gradient's summation changes.

`conv_general_dilated` has `jax.lax.conv_general_dilated`'s signature so that it plugs into
`flax.linen.Conv(conv_general_dilated=...)`; it takes NHWC inputs and HWIO kernels without
dilation or feature groups, which is what the ResNet uses, and refuses anything else.
"""

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from make_jax.parallel import backend

_DIMENSION_NUMBERS = ('NHWC', 'HWIO', 'NHWC')
KERNEL_GRADIENTS = ('auto', 'per_tap', 'xla')


def use_per_tap(setting: str) -> bool:
  """Whether a model with `model.conv_kernel_gradient=setting` uses `conv2d`'s per-tap kernel
  gradient: 'per_tap' always, 'xla' never, 'auto' on the CPU backend only (where it was
  measured faster; on a GPU cuDNN's backward-filter convolution is one kernel)."""
  if setting not in KERNEL_GRADIENTS:
    raise ValueError(f'model.conv_kernel_gradient={setting!r}; expected one of {KERNEL_GRADIENTS}')
  return setting == 'per_tap' or (setting == 'auto' and backend.target_platform() == 'cpu')


def _conv(x: jax.Array, w: jax.Array, strides, padding) -> jax.Array:
  return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_DIMENSION_NUMBERS)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv2d(
  x: jax.Array, w: jax.Array, strides: tuple[int, int], padding: tuple[tuple[int, int], ...]
) -> jax.Array:
  """NHWC x HWIO convolution, explicit padding ((lo, hi), (lo, hi)); see the module docstring."""
  return _conv(x, w, strides, padding)


def _fwd(x, w, strides, padding):
  return _conv(x, w, strides, padding), (x, w)


def kernel_gradient(
  x: jax.Array, g: jax.Array, kernel_hw: tuple[int, int], strides, padding
) -> jax.Array:
  """d<conv(x, w), g>/dw as k*k matmuls: [kh, kw, C_in, C_out], accumulated in float32
  (float64 for float64 inputs) and returned in that accumulation dtype."""
  (kh, kw), (sh, sw) = kernel_hw, strides
  ho, wo = g.shape[1:3]
  xp = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
  g2 = g.reshape(-1, g.shape[-1])
  acc = jnp.promote_types(x.dtype, jnp.float32)
  taps = []
  for i in range(kh):
    for j in range(kw):
      tap = lax.slice(
        xp,
        (0, i, j, 0),
        (xp.shape[0], i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, xp.shape[3]),
        (1, sh, sw, 1),
      )
      taps.append(
        lax.dot_general(
          tap.reshape(-1, x.shape[-1]), g2, (((0,), (0,)), ((), ())), preferred_element_type=acc
        )
      )
  return jnp.stack(taps).reshape(kh, kw, x.shape[-1], g.shape[-1])


def _bwd(strides, padding, res, g):
  x, w = res
  (dx,) = jax.linear_transpose(lambda v: _conv(v, w, strides, padding), x)(g)
  dw = kernel_gradient(x, g, w.shape[:2], strides, padding)
  return dx, dw.astype(w.dtype)


conv2d.defvjp(_fwd, _bwd)


def _varying_axes(a: jax.Array) -> frozenset:
  """The shard_map axes `a` varies over (empty outside shard_map)."""
  aval = jax.typeof(a)
  if hasattr(aval, 'vma'):  # JAX <= 0.9 spelling.
    return frozenset(aval.vma)
  mat = getattr(aval, 'mat', None)
  return frozenset(mat.varying) if mat is not None else frozenset()


def conv_general_dilated(
  lhs: jax.Array,
  rhs: jax.Array,
  window_strides: Sequence[int],
  padding: str | Sequence[tuple[int, int]],
  lhs_dilation: Sequence[int] | None = None,
  rhs_dilation: Sequence[int] | None = None,
  dimension_numbers=None,
  feature_group_count: int = 1,
  batch_group_count: int = 1,
  precision=None,
  preferred_element_type=None,
) -> jax.Array:
  """`lax.conv_general_dilated` for the case `conv2d` handles (see the module docstring)."""
  dilated = any(d != 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))
  if lhs.ndim != 4 or dilated or feature_group_count != 1 or batch_group_count != 1:
    raise ValueError(
      'conv.conv_general_dilated handles 2-D NHWC/HWIO convolutions without dilation or '
      f'feature groups; got lhs {lhs.shape}, lhs_dilation={lhs_dilation}, '
      f'rhs_dilation={rhs_dilation}, feature_group_count={feature_group_count}'
    )
  if dimension_numbers is not None:
    dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    if dn != lax.conv_dimension_numbers(lhs.shape, rhs.shape, _DIMENSION_NUMBERS):
      raise ValueError(f'conv.conv_general_dilated takes NHWC/HWIO only; got {dimension_numbers}')
  if precision is not None or preferred_element_type is not None:
    raise ValueError('conv.conv_general_dilated takes no precision or preferred_element_type')
  strides = tuple(int(s) for s in window_strides)
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding)
  pads = tuple((int(lo), int(hi)) for lo, hi in padding)
  # Inside shard_map a replicated kernel meets a batch-sharded input: make it varying here,
  # outside the custom_vjp, as lax.conv's own autodiff would, so that the transpose of this
  # cast (a psum) sums the per-device kernel gradients and `_bwd` returns its input's type.
  vx, vw = _varying_axes(lhs), _varying_axes(rhs)
  if vx - vw:
    rhs = lax.pcast(rhs, tuple(sorted(vx - vw)), to='varying')
  if vw - vx:
    lhs = lax.pcast(lhs, tuple(sorted(vw - vx)), to='varying')
  return conv2d(lhs, rhs, strides, pads)
