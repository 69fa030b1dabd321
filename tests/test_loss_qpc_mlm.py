"""QPC (AM-Softmax) and MLM against the loop-written references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_loss_reference import finite_diff, naive_mlm, naive_qpc

from make_jax.losses import mlm, qpc

IDS = np.array([5, 6, 5, 7, 8])  # Rows 0 and 2 are the same product (an accidental hit).


def test_qpc_matches_naive_value_and_gradients_with_duplicates():
  with jax.enable_x64(True):
    rng = np.random.default_rng(0)
    q = rng.normal(size=(5, 3))
    p = rng.normal(size=(5, 3))
    scale, margin = 4.0, 0.3

    def ours(q_, p_):
      return qpc.qpc_loss(q_, p_, jnp.asarray(IDS), scale, margin)[0]

    val, (g_q, g_p) = jax.jit(jax.value_and_grad(ours, argnums=(0, 1)))(
      jnp.asarray(q), jnp.asarray(p)
    )
    np.testing.assert_allclose(float(val), naive_qpc(q, p, IDS, scale, margin), rtol=1e-10)
    np.testing.assert_allclose(
      np.asarray(g_q),
      finite_diff(lambda x: naive_qpc(x, p, IDS, scale, margin), q),
      rtol=1e-5,
      atol=1e-8,
    )
    np.testing.assert_allclose(
      np.asarray(g_p),
      finite_diff(lambda x: naive_qpc(q, x, IDS, scale, margin), p),
      rtol=1e-5,
      atol=1e-8,
    )
    # Without hit removal the value differs: the duplicate row is handled, not ignored.
    no_dup = naive_qpc(q, p, np.arange(5), scale, margin)
    assert abs(float(val) - no_dup) > 1e-4


def test_mlm_matches_naive_value_and_gradients():
  with jax.enable_x64(True):
    rng = np.random.default_rng(1)
    ql, tl = rng.normal(size=(2, 3, 7)), rng.normal(size=(2, 4, 7))
    qy, ty = rng.integers(0, 7, size=(2, 3)), rng.integers(0, 7, size=(2, 4))
    qw = np.array([[1, 0, 1], [0, 0, 1]], np.float64)
    tw = np.array([[0, 1, 1, 0], [1, 0, 0, 0]], np.float64)
    # Labels at unweighted positions are out of range: they must be ignored, not crash.
    qy = np.where(qw > 0, qy, -100)

    def ours(a, b):
      return mlm.mlm_loss(a, jnp.asarray(qy), jnp.asarray(qw), b, jnp.asarray(ty), jnp.asarray(tw))

    (val, m), (g_q, g_t) = jax.jit(jax.value_and_grad(ours, argnums=(0, 1), has_aux=True))(
      jnp.asarray(ql), jnp.asarray(tl)
    )
    ref = naive_mlm([ql, tl], [qy, ty], [qw, tw])
    np.testing.assert_allclose(float(val), ref, rtol=1e-10)
    np.testing.assert_allclose(float(m['mlm_query']), naive_mlm([ql], [qy], [qw]), rtol=1e-10)
    np.testing.assert_allclose(float(m['mlm_title']), naive_mlm([tl], [ty], [tw]), rtol=1e-10)
    np.testing.assert_allclose(
      np.asarray(g_q),
      finite_diff(lambda x: naive_mlm([x, tl], [qy, ty], [qw, tw]), ql),
      rtol=1e-5,
      atol=1e-8,
    )
    np.testing.assert_allclose(
      np.asarray(g_t),
      finite_diff(lambda x: naive_mlm([ql, x], [qy, ty], [qw, tw]), tl),
      rtol=1e-5,
      atol=1e-8,
    )


def test_mlm_and_qpc_bad_shapes_raise():
  with pytest.raises(ValueError, match='MLM query'):
    mlm.mlm_loss(
        jnp.zeros((2, 3, 5)), jnp.zeros((2, 4), jnp.int32), jnp.zeros((2, 4)),
        jnp.zeros((2, 3, 5)), jnp.zeros((2, 3), jnp.int32), jnp.zeros((2, 3)),
    )  # fmt: skip
  with pytest.raises(ValueError, match='product_id'):
    qpc.qpc_loss(jnp.zeros((2, 3)), jnp.zeros((2, 3)), jnp.zeros((3,), jnp.int32), 1.0, 0.1)
