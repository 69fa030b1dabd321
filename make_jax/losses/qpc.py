"""QPC: query-product classification with an additive-margin softmax (SPEC section 4).

Each query u_r is classified among the products of the batch by the AM-Softmax logits

  z_rc = scale * (u_r . v_c - margin * [c is r's positive]),   loss = -mean_r log softmax(z_r)[pos]

with no temperature and no log-p correction (it sharpens the decision boundary that QPM's
corrected softmax softens).

Decisions:
- The classes follow QPM's CDNS schedule: before `cdns_start` they are this device's own
  products; from then on the *global* batch, gathered with gradient exactly as for QPM, so
  QPC's value and gradients do not depend on how the batch is split over devices (sharded ==
  single device). A "no CDNS" ablation (cdns_start past the last step) thus has no
  cross-device negatives in any loss. The switch masks columns with a traced step: no
  recompile.
- Accidental hits are handled as in QPM: a column holding the positive's product id (a
  duplicate row on any device) other than the positive's own column is removed from the
  softmax, so a query is never trained to reject its own product.

Returns this device's share (sum over local queries / global batch size).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from make_jax.parallel import collectives


def qpc_loss(
  query_emb: jax.Array,
  product_emb: jax.Array,
  product_id: jax.Array,
  scale: jax.Array | float,
  margin: jax.Array | float,
  *,
  step: jax.Array | int = 0,
  cdns_start: int = 0,
  axis_name: str | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """AM-Softmax query-to-product classification over the batch (global once CDNS is on).

  Args:
    query_emb: [b, d] this device's query embeddings (L2-normalised by the model).
    product_emb: [b, d] the positive products' embeddings (row r belongs to query r).
    product_id: [b] int product ids.
    scale: AM-Softmax scale s > 0.
    margin: additive margin m subtracted from the positive's cosine.
    step: the current step (may be traced); other devices' products are classes when
      step >= cdns_start.
    cdns_start: first step with cross-device classes (`qpm.start_step`).
    axis_name: the data axis (None: one device).

  Returns:
    (share, metrics) with metrics 'qpc' (global loss) and 'qpc_accuracy' (positive logit
    above every unmasked other logit, margin included).
  """
  if query_emb.ndim != 2 or query_emb.shape != product_emb.shape:
    raise ValueError(
      f'QPC: query_emb {query_emb.shape} and product_emb {product_emb.shape} must both be '
      '[batch, dim]'
    )
  b = query_emb.shape[0]
  if product_id.shape != (b,):
    raise ValueError(f'QPC: product_id {product_id.shape} must be [{b}]')
  dtype = jnp.promote_types(query_emb.dtype, jnp.float32)
  global_b = b * collectives.axis_size(axis_name)
  v_all = collectives.all_gather(product_emb.astype(dtype), axis_name)
  id_all = collectives.all_gather(product_id, axis_name)
  rows = jnp.arange(b)
  pos_col = collectives.axis_index(axis_name) * b + rows
  is_pos = jnp.arange(global_b)[None, :] == pos_col[:, None]
  hit = (id_all[None, :] == product_id[:, None]) & ~is_pos
  local = jnp.arange(global_b)[None, :] // b == collectives.axis_index(axis_name)
  drop = hit | (~local & (jnp.asarray(step) < cdns_start))
  cos = query_emb.astype(dtype) @ v_all.T
  z = jnp.asarray(scale, dtype) * (cos - jnp.asarray(margin, dtype) * is_pos)
  z = jnp.where(drop, -jnp.inf, z)
  z_pos = z[rows, pos_col]
  per_query = jax.nn.logsumexp(z, axis=1) - z_pos
  share = jnp.sum(per_query) / global_b

  zs = lax.stop_gradient(z)
  best_other = jnp.max(jnp.where(is_pos, -jnp.inf, zs), axis=1)
  tot = collectives.global_sum(
    dict(
      loss=lax.stop_gradient(jnp.sum(per_query)),
      correct=jnp.sum(lax.stop_gradient(z_pos) > best_other).astype(dtype),
    ),
    axis_name,
  )
  return share, {'qpc': tot['loss'] / global_b, 'qpc_accuracy': tot['correct'] / global_b}
