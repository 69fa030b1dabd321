"""Masked patch modelling: the regression baseline (MPM) and the contrastive MPM_R.

Region r of image i has target feature v_i^r (the region vector fed to the image transformer
before masking) and a prediction v^_i^r at its position. `mpm_mask[i, r] = 1` marks the masked
regions (0 for every region of an image-missing product, contract 3).

MPM (regression, SPEC section 4): the mean squared error per feature over masked regions,

  L_MPM = SUM_{masked (i,r)} ||v^_i^r - v_i^r||^2 / (Dr * N_MASK).

MPM_R (paper eq. 1-2, ../shared/papers/001_d41c3a0a8916d27e.txt): for a masked region with target
v and its own prediction v^,

  p(v, v^) = log exp(v . v^ / tau) / SUM_{i=1..N} SUM_{j=1..L} exp(v . v^_i^j / tau)
  L_MPM_R  = -(1 / N_MASK) SUM over masked regions of p(v, v^)

The denominator runs over every position j (masked or not) of every image i of the batch,
the region's own prediction included; positions of image-missing products are excluded (they
hold no image). With `cross_device`, predictions are gathered with gradient from every device,
so "the batch" is the global batch; otherwise it is the device's own batch. N_MASK counts the
masked regions of the global batch (psum), so both losses equal the single-device value on the
global batch. `tau` is the trainable temperature (kept positive by the model).

Each function returns this device's share: its sum / global N_MASK (0 when nothing is masked).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from make_jax.parallel import backend, collectives


def _check(pred, target, mpm_mask, name):
  if pred.ndim != 3 or pred.shape != target.shape:
    raise ValueError(
      f'{name}: prediction {pred.shape} and target {target.shape} must both be [batch, regions, dim]'
    )
  if mpm_mask.shape != pred.shape[:2]:
    raise ValueError(
      f'{name}: mpm_mask {mpm_mask.shape} must be [batch, regions] = {pred.shape[:2]}'
    )


def _safe_div(num: jax.Array, den: jax.Array) -> jax.Array:
  return num / jnp.where(den > 0, den, 1.0)


def mpm_loss(
  pred: jax.Array,
  target: jax.Array,
  mpm_mask: jax.Array,
  *,
  axis_name: str | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Regression MPM: mean squared error per feature over the masked regions.

  Args:
    pred: [b, R, Dr] regression-head predictions.
    target: [b, R, Dr] region targets.
    mpm_mask: [b, R] 1.0 where a region is masked.
    axis_name: the data axis (None: one device).
  """
  _check(pred, target, mpm_mask, 'MPM')
  dtype = jnp.promote_types(pred.dtype, jnp.float32)
  w = mpm_mask.astype(dtype)
  sq = jnp.mean(jnp.square(pred.astype(dtype) - target.astype(dtype)), axis=-1)  # [b, R]
  num = jnp.sum(w * sq)
  n_mask = collectives.global_sum(jnp.sum(w), axis_name)
  share = _safe_div(num, n_mask)
  total = collectives.global_sum(lax.stop_gradient(num), axis_name)
  return share, {'mpm': _safe_div(total, n_mask), 'mpm_masked_regions': n_mask}


def mpm_r_loss(
  pred: jax.Array,
  target: jax.Array,
  mpm_mask: jax.Array,
  image_missing: jax.Array,
  tau: jax.Array | float,
  *,
  cross_device: bool = True,
  axis_name: str | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Contrastive MPM_R of paper eq. 1-2.

  Args:
    pred: [b, R, Dr] MPM_R prediction head outputs v^.
    target: [b, R, Dr] region targets v.
    mpm_mask: [b, R] 1.0 where a region is masked (the rows of eq. 2).
    image_missing: [b] bool, True for products without an image (excluded everywhere).
    tau: temperature > 0 (scalar; trainable).
    cross_device: the denominator spans every device's images (gathered with gradient).
    axis_name: the data axis (None: one device).
  """
  _check(pred, target, mpm_mask, 'MPM_R')
  b, r, dr = pred.shape
  if image_missing.shape != (b,):
    raise ValueError(f'MPM_R: image_missing {image_missing.shape} must be [{b}]')
  dtype = jnp.promote_types(pred.dtype, jnp.float32)
  has_image = ~image_missing.astype(bool)
  row_w = (mpm_mask.astype(dtype) > 0) & has_image[:, None]  # [b, R] masked regions
  row_w = row_w.reshape(b * r)
  v = target.astype(dtype).reshape(b * r, dr)
  v_hat = pred.astype(dtype).reshape(b * r, dr)
  col_axis = axis_name if cross_device else None
  v_hat_all = collectives.all_gather(v_hat, col_axis)  # [N*R, Dr]
  col_ok = jnp.repeat(collectives.all_gather(has_image, col_axis), r)  # [N*R]
  offset = collectives.axis_index(col_axis) * (b * r)
  own = offset + jnp.arange(b * r)  # Column of each region's own prediction.

  logits = (v @ v_hat_all.T) / jnp.asarray(tau, dtype)  # [b*R, N*R]
  logits = jnp.where(col_ok[None, :], logits, -jnp.inf)
  # Rows that are not masked regions are zeroed (dropped below) so that no row is all -inf:
  # a fully masked logsumexp would put NaN into the gradient even where it is not selected.
  logits = jnp.where(row_w[:, None], logits, 0.0)
  pos = backend.take_along_last(logits, own)  # Each row's own column.
  per_region = jnp.where(row_w, jax.nn.logsumexp(logits, axis=1) - pos, 0.0)
  num = jnp.sum(per_region)
  n_mask = collectives.global_sum(jnp.sum(row_w).astype(dtype), axis_name)
  share = _safe_div(num, n_mask)
  total = collectives.global_sum(lax.stop_gradient(num), axis_name)
  # Denominator size per masked region (averaged over devices when it is per device).
  n_cand = collectives.global_sum(jnp.sum(has_image).astype(dtype) * r, axis_name)
  if not cross_device:
    n_cand = n_cand / collectives.axis_size(axis_name)
  return share, {
    'mpm_r': _safe_div(total, n_mask),
    'mpm_r_tau': lax.stop_gradient(jnp.asarray(tau, dtype)),
    'mpm_r_masked_regions': n_mask,
    'mpm_r_candidates': n_cand,
  }
