"""MPM (regression) and MPM_R (paper eq. 1-2) against the loop-written references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_loss_reference import finite_diff, naive_mpm, naive_mpm_r

from make_jax.losses import mpm

N, R, DR = 4, 3, 2
MASK = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]], np.float64)
MISSING = np.array([False, False, True, False])  # Image 2 is missing: its rows and columns go.


def _data(seed):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(N, R, DR)), rng.normal(size=(N, R, DR))


def test_mpm_r_matches_naive_value_and_gradients():
  with jax.enable_x64(True):
    target, pred = _data(0)
    tau = 0.7

    def ours(t, p, tau_):
      return mpm.mpm_r_loss(p, t, jnp.asarray(MASK), jnp.asarray(MISSING), tau_)[0]

    val, (g_t, g_p, g_tau) = jax.jit(jax.value_and_grad(ours, argnums=(0, 1, 2)))(
      jnp.asarray(target), jnp.asarray(pred), jnp.asarray(tau, jnp.float64)
    )
    np.testing.assert_allclose(
      float(val), naive_mpm_r(target, pred, MASK, MISSING, tau), rtol=1e-10
    )
    ref_t = finite_diff(lambda x: naive_mpm_r(x, pred, MASK, MISSING, tau), target)
    ref_p = finite_diff(lambda x: naive_mpm_r(target, x, MASK, MISSING, tau), pred)
    ref_tau = finite_diff(lambda x: naive_mpm_r(target, pred, MASK, MISSING, float(x)), tau)
    np.testing.assert_allclose(np.asarray(g_t), ref_t, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(np.asarray(g_p), ref_p, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(float(g_tau), ref_tau, rtol=1e-5)
    # Predictions of the missing image get no gradient; unmasked positions of present images do
    # (they are in every denominator).
    assert np.all(np.asarray(g_p)[2] == 0.0)
    assert np.abs(np.asarray(g_p)[3]).max() > 1e-4


def test_mpm_r_missing_image_mask_is_ignored_and_empty_mask_is_zero():
  target, pred = _data(1)
  # A mask wrongly set on the missing image must not add rows.
  bad_mask = MASK.copy()
  bad_mask[2] = 1
  a = mpm.mpm_r_loss(
    jnp.asarray(pred), jnp.asarray(target), jnp.asarray(MASK), jnp.asarray(MISSING), 0.5
  )
  b = mpm.mpm_r_loss(
    jnp.asarray(pred), jnp.asarray(target), jnp.asarray(bad_mask), jnp.asarray(MISSING), 0.5
  )
  assert float(a[0]) == pytest.approx(float(b[0]), rel=1e-6)
  assert float(a[1]['mpm_r_masked_regions']) == MASK[~MISSING].sum()
  zero, m = mpm.mpm_r_loss(
    jnp.asarray(pred), jnp.asarray(target), jnp.zeros((N, R)), jnp.asarray(MISSING), 0.5
  )
  assert float(zero) == 0.0 and float(m['mpm_r']) == 0.0
  g = jax.grad(
    lambda p: mpm.mpm_r_loss(p, jnp.asarray(target), jnp.zeros((N, R)), jnp.asarray(MISSING), 0.5)[
      0
    ]
  )(jnp.asarray(pred))
  assert np.all(np.isfinite(np.asarray(g)))


def test_mpm_regression_matches_naive_value_and_gradients():
  with jax.enable_x64(True):
    target, pred = _data(2)
    val, g_p = jax.value_and_grad(
      lambda p: mpm.mpm_loss(p, jnp.asarray(target), jnp.asarray(MASK))[0]
    )(jnp.asarray(pred))
    np.testing.assert_allclose(float(val), naive_mpm(target, pred, MASK), rtol=1e-10)
    ref = finite_diff(lambda x: naive_mpm(target, x, MASK), pred)
    np.testing.assert_allclose(np.asarray(g_p), ref, rtol=1e-5, atol=1e-8)


def test_mpm_bad_shapes_raise():
  x = jnp.zeros((2, 3, 4))
  with pytest.raises(ValueError, match='mpm_mask'):
    mpm.mpm_loss(x, x, jnp.zeros((2, 4)))
  with pytest.raises(ValueError, match='image_missing'):
    mpm.mpm_r_loss(x, x, jnp.zeros((2, 3)), jnp.zeros((3,), bool), 0.1)
  with pytest.raises(ValueError, match='target'):
    mpm.mpm_r_loss(x, jnp.zeros((2, 3, 5)), jnp.zeros((2, 3)), jnp.zeros((2,), bool), 0.1)
