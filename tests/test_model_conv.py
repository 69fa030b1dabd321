"""The ResNet's convolution (make_jax/models/conv.py): XLA's forward, the kernel gradient as
per-tap matmuls. Both gradients equal lax.conv_general_dilated's, and the kernel gradient
equals its definition computed in float64; what it does not handle is refused."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from make_jax.models import conv

DN = ('NHWC', 'HWIO', 'NHWC')

# (batch, height, width, c_in, c_out, kernel, stride, padding)
CASES = [
  (2, 9, 9, 3, 5, 3, 1, ((1, 1), (1, 1))),
  (3, 10, 8, 4, 6, 3, 2, ((1, 1), (1, 1))),
  (2, 8, 8, 4, 6, 1, 2, ((0, 0), (0, 0))),
  (1, 11, 13, 2, 3, 7, 2, ((3, 3), (3, 3))),
  (2, 7, 7, 3, 4, 3, 1, ((0, 2), (1, 0))),  # Asymmetric padding.
  (2, 12, 12, 3, 4, 3, 2, 'SAME'),
  (2, 12, 12, 3, 4, 2, 1, 'VALID'),
]


def _data(b, h, w, ci, co, k, seed=0):
  rs = np.random.RandomState(seed)
  return rs.randn(b, h, w, ci).astype(np.float32), rs.randn(k, k, ci, co).astype(np.float32)


@pytest.mark.parametrize('b,h,w,ci,co,k,s,pad', CASES)
def test_output_and_gradients_equal_lax(b, h, w, ci, co, k, s, pad):
  x, kernel = _data(b, h, w, ci, co, k)
  ref = lambda x, v: lax.conv_general_dilated(x, v, (s, s), pad, dimension_numbers=DN)
  new = lambda x, v: conv.conv_general_dilated(x, v, (s, s), pad, dimension_numbers=DN)
  y_ref = ref(x, kernel)
  g = np.random.RandomState(1).randn(*y_ref.shape).astype(np.float32)
  loss = lambda f: lambda x, v: jnp.vdot(f(x, v), g)
  np.testing.assert_array_equal(jax.jit(new)(x, kernel), y_ref)  # The same forward op.
  want = jax.grad(loss(ref), (0, 1))(x, kernel)
  got = jax.jit(jax.grad(loss(new), (0, 1)))(x, kernel)
  np.testing.assert_array_equal(got[0], want[0])  # The same transposed convolution.
  np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-5 * np.abs(want[1]).max())


def test_kernel_gradient_equals_its_definition_in_float64():
  b, h, w, ci, co, k, s = 2, 9, 7, 3, 4, 3, 2
  x, _ = _data(b, h, w, ci, co, k)
  ho, wo = (h + 2 - k) // s + 1, (w + 2 - k) // s + 1
  g = np.random.RandomState(2).randn(b, ho, wo, co).astype(np.float32)
  xp = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
  want = np.zeros((k, k, ci, co))
  for i in range(k):
    for j in range(k):
      for r in range(ho):
        for c in range(wo):
          want[i, j] += xp[:, r * s + i, c * s + j, :].T @ g[:, r, c, :].astype(np.float64)
  got = conv.kernel_gradient(jnp.asarray(x), jnp.asarray(g), (k, k), (s, s), ((1, 1), (1, 1)))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_bfloat16_keeps_its_dtype_and_accumulates_in_float32():
  x, kernel = _data(2, 8, 8, 16, 8, 3)
  pad = ((1, 1), (1, 1))
  f = lambda x, v: conv.conv_general_dilated(x, v, (1, 1), pad).astype(jnp.float32).sum()
  dx, dw = jax.jit(jax.grad(f, (0, 1)))(x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16))
  assert dx.dtype == dw.dtype == jnp.bfloat16
  ref = jax.grad(lambda v: lax.conv_general_dilated(x, v, (1, 1), pad, dimension_numbers=DN).sum())(
    kernel
  )
  np.testing.assert_allclose(dw.astype(np.float32), ref, rtol=2e-2, atol=2e-2 * np.abs(ref).max())


def test_gradients_under_shard_map_equal_lax():
  """A replicated kernel, a batch sharded over 8 devices: the kernel gradient is summed."""
  mesh = Mesh(np.array(jax.devices()[:8]), ('data',))
  x, kernel = _data(8, 6, 6, 3, 4, 3)
  pad = ((1, 1), (1, 1))

  def loss(f):
    def per_device(x, v):
      return jax.lax.psum((f(x, v, (1, 1), pad, dimension_numbers=DN) ** 2).sum(), 'data')

    sharded = jax.shard_map(per_device, mesh=mesh, in_specs=(P('data'), P()), out_specs=P())
    return jax.jit(jax.grad(sharded, (0, 1)))

  want = loss(lax.conv_general_dilated)(x, kernel)
  got = loss(conv.conv_general_dilated)(x, kernel)
  np.testing.assert_allclose(got[0], want[0], rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-5 * np.abs(want[1]).max())


@pytest.mark.parametrize(
  'kwargs,message',
  [
    (dict(rhs_dilation=(2, 2)), 'without dilation'),
    (dict(lhs_dilation=(2, 2)), 'without dilation'),
    (dict(feature_group_count=2), 'feature groups'),
    (dict(dimension_numbers=('NCHW', 'OIHW', 'NCHW')), 'NHWC/HWIO only'),
    (dict(preferred_element_type=jnp.float32), 'no precision'),
  ],
)
def test_what_it_does_not_handle_is_refused(kwargs, message):
  x, kernel = _data(1, 6, 6, 4, 4, 3)
  with pytest.raises(ValueError, match=message):
    conv.conv_general_dilated(x, kernel, (1, 1), 'SAME', **kwargs)
