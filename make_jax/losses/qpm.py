"""QPM: the retrieval softmax of paper eq. 3 with CDNS and MBNS negatives (SPEC section 5).

For query u_r and its positive product v_r, with scores s(u, v) = u.v / T - log p(v):

  p(u_r, v_r) = log e^s(u_r,v_r) / (e^s(u_r,v_r) + w1 SUM_i e^s(u_r,v_i) + w2 SUM_j e^s(u_r,v_j))
  loss        = - mean over the global batch of p(u_r, v_r)

- v_j (weight w2): the other products of the batch. Product embeddings are gathered from every
  device with a differentiable `all_gather`. Before CDNS is on (step < cdns_start) columns
  owned by other devices are masked out, so each query sees only its device's batch; from
  `cdns_start` on it sees the global batch. Shapes never change and `step` may be traced, so
  the switch does not recompile.
- v_i (weight w1): the memory-bank queue (make_jax/losses/memory_bank.py), behind stop_gradient;
  empty slots and steps before `bank_start_step` are masked. Empty slots are zeroed before
  the scores are computed, so their contents (even NaN) cannot reach loss or gradients.
- Accidental hits: any negative whose product id equals the positive's id (a duplicate row of
  the batch, on this or another device, or a queued copy) is excluded.
- Stability: log of the denominator is m + log(e^(s_pos-m) + w1 SUM e^(s_i-m) + w2 SUM
  e^(s_j-m)) with m the (gradient-free) maximum over unmasked terms; masked terms are -inf
  before the exponential. A weight of 0 removes its source (its negatives count as masked).

Returns this device's share of the loss (sum over its queries / global batch size); see
make_jax/parallel/collectives.py for why, and for the parameter-gradient reduction.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from jax import lax

from make_jax.parallel import collectives

if TYPE_CHECKING:
  from make_jax.losses.memory_bank import MemoryBank

_NEG_INF = -jnp.inf


def start_step(fraction: float, num_steps: int, name: str = 'start fraction') -> int:
  """First step at which a switch (CDNS, the queue) is on: floor(fraction * num_steps).

  0.5 -> the second half; 1.0 -> step num_steps, which training never reaches (off).
  `name` (the config field) goes into the error for a fraction outside [0, 1].
  """
  if not 0.0 <= fraction <= 1.0:
    raise ValueError(f'{name} must be in [0, 1], got {fraction}')
  if num_steps < 0:
    raise ValueError(f'num_steps must be >= 0, got {num_steps}')
  return int(math.floor(fraction * num_steps))


def _check_shapes(query_emb, product_emb, log_p, product_id):
  if query_emb.ndim != 2 or query_emb.shape != product_emb.shape:
    raise ValueError(
      f'QPM: query_emb {query_emb.shape} and product_emb {product_emb.shape} must both be '
      '[batch, dim]'
    )
  b = query_emb.shape[0]
  if log_p.shape != (b,) or product_id.shape != (b,):
    raise ValueError(
      f'QPM: log_p {log_p.shape} and product_id {product_id.shape} must be [{b}] '
      '(one per product of the batch)'
    )


def _masked_exp_sum(scores: jax.Array, mask: jax.Array, m: jax.Array) -> jax.Array:
  """SUM_j mask_j * exp(scores_j - m) per row, exact zeros for masked entries."""
  return jnp.sum(jnp.exp(jnp.where(mask, scores - m[:, None], _NEG_INF)), axis=1)


def _masked_max(scores: jax.Array, mask: jax.Array) -> jax.Array:
  return jnp.max(jnp.where(mask, scores, _NEG_INF), axis=1, initial=_NEG_INF)


def qpm_loss(
  query_emb: jax.Array,
  product_emb: jax.Array,
  log_p: jax.Array,
  product_id: jax.Array,
  temperature: jax.Array | float,
  *,
  step: jax.Array | int,
  cdns_start: int,
  bank: MemoryBank | None = None,
  bank_start_step: int = 0,
  w_mbns: float = 0.25,
  w_batch: float = 1.0,
  logp_correction: bool = True,
  axis_name: str | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The corrected softmax loss of paper eq. 3 over in-batch, CDNS and MBNS negatives.

  Args:
    query_emb: [b, d] this device's query embeddings u.
    product_emb: [b, d] their positive products' embeddings v (row r is query r's positive).
    log_p: [b] log sampling probability of each positive product.
    product_id: [b] int product ids (accidental hits share the positive's id).
    temperature: T > 0 (scalar; trainable).
    step: the current step (may be traced); CDNS is on when step >= cdns_start and the bank
      counts when step >= bank_start_step.
    cdns_start: first step with cross-device negatives (see `start_step`).
    bank: the MBNS queue, or None for no memory-bank negatives.
    bank_start_step: first step at which queue entries are negatives.
    w_mbns: w1, weight of each memory-bank term.
    w_batch: w2, weight of each in-batch / cross-device term.
    logp_correction: subtract log p(v) from every score; False gives s = u.v / T.
    axis_name: the data axis (None: one device holding the global batch).

  Returns:
    (share, metrics): share = SUM over local queries of -p(u, v) / global batch size; the
    metrics are global (identical on every device) and carry no gradient.
  """
  _check_shapes(query_emb, product_emb, log_p, product_id)
  if w_mbns < 0 or w_batch < 0:
    raise ValueError(f'QPM: weights must be >= 0, got w_mbns={w_mbns}, w_batch={w_batch}')
  b = query_emb.shape[0]
  n_dev = collectives.axis_size(axis_name)
  global_b = b * n_dev
  step = jnp.asarray(step)
  dtype = jnp.promote_types(query_emb.dtype, jnp.float32)
  u = query_emb.astype(dtype)
  temperature = jnp.asarray(temperature, dtype)

  # Product tower of the whole global batch; gradient flows back to its owners.
  v_all = collectives.all_gather(product_emb.astype(dtype), axis_name)  # [B, d]
  logp_all = collectives.all_gather(lax.stop_gradient(log_p).astype(dtype), axis_name)
  id_all = collectives.all_gather(product_id, axis_name)
  offset = collectives.axis_index(axis_name) * b
  rows = jnp.arange(b)
  pos_col = offset + rows  # Column of each query's own positive in the gathered batch.

  s_batch = (u @ v_all.T) / temperature  # [b, B]
  if logp_correction:
    s_batch = s_batch - logp_all[None, :]
  s_pos = s_batch[rows, pos_col]

  cols = jnp.arange(global_b)
  col_device = cols // b
  is_pos = cols[None, :] == pos_col[:, None]
  hit = (id_all[None, :] == product_id[:, None]) & ~is_pos  # Accidental hits.
  local = col_device[None, :] == collectives.axis_index(axis_name)
  cdns_on = step >= cdns_start
  keep_local = local & ~is_pos & ~hit
  keep_cross = ~local & ~hit & cdns_on
  batch_mask = (keep_local | keep_cross) & (w_batch > 0)

  use_bank = bank is not None and bank.size > 0
  if use_bank:
    bank_emb, bank_logp, bank_id, bank_valid = bank.negatives()
    if bank_emb.shape[1] != u.shape[1]:
      raise ValueError(
        f'QPM: bank embeddings have dim {bank_emb.shape[1]}, queries have dim {u.shape[1]}'
      )
    # Empty slots are zeroed before any arithmetic: whatever they hold (NaN included) must
    # not reach the scores, whose masked entries would still put 0 * NaN into gradients.
    bank_emb = jnp.where(bank_valid[:, None], bank_emb.astype(dtype), 0.0)
    bank_logp = jnp.where(bank_valid, bank_logp.astype(dtype), 0.0)
    s_bank = (u @ bank_emb.T) / temperature  # [b, Q*B]
    if logp_correction:
      s_bank = s_bank - bank_logp[None, :]
    bank_mask = (
      bank_valid[None, :]
      & (bank_id[None, :] != product_id[:, None])
      & (step >= bank_start_step)
      & (w_mbns > 0)
    )
  else:
    s_bank = jnp.zeros((b, 0), dtype)
    bank_mask = jnp.zeros((b, 0), bool)

  # Stable log-denominator; m is a constant shift (the result does not depend on it).
  m = lax.stop_gradient(
    jnp.maximum(
      s_pos, jnp.maximum(_masked_max(s_batch, batch_mask), _masked_max(s_bank, bank_mask))
    )
  )
  denom = (
    jnp.exp(s_pos - m)
    + w_batch * _masked_exp_sum(s_batch, batch_mask, m)
    + w_mbns * _masked_exp_sum(s_bank, bank_mask, m)
  )
  per_query = m + jnp.log(denom) - s_pos  # -p(u, v)
  share = jnp.sum(per_query) / global_b

  metrics = _metrics(
    per_query,
    s_pos,
    s_batch,
    s_bank,
    keep_local & (w_batch > 0),
    keep_cross & (w_batch > 0),
    bank_mask,
    global_b,
    axis_name,
  )
  metrics['qpm_temperature'] = lax.stop_gradient(temperature)
  metrics['qpm_cdns_on'] = cdns_on.astype(jnp.float32)
  return share, metrics


def _metrics(
  per_query, s_pos, s_batch, s_bank, local_mask, cross_mask, bank_mask, global_b, axis_name
):
  """Global statistics of the QPM softmax (counts are per query, averaged over queries)."""
  sg = lax.stop_gradient
  per_query, s_pos, s_batch, s_bank = sg(per_query), sg(s_pos), sg(s_batch), sg(s_bank)
  neg_mask = local_mask | cross_mask
  neg_sum = jnp.sum(jnp.where(neg_mask, s_batch, 0.0)) + jnp.sum(jnp.where(bank_mask, s_bank, 0.0))
  neg_count = jnp.sum(neg_mask) + jnp.sum(bank_mask)
  best_neg = jnp.maximum(_masked_max(s_batch, neg_mask), _masked_max(s_bank, bank_mask))
  local = dict(
    loss=jnp.sum(per_query),
    pos=jnp.sum(s_pos),
    neg_sum=neg_sum,
    neg_count=neg_count.astype(s_pos.dtype),
    n_local=jnp.sum(local_mask).astype(s_pos.dtype),
    n_cross=jnp.sum(cross_mask).astype(s_pos.dtype),
    n_bank=jnp.sum(bank_mask).astype(s_pos.dtype),
    correct=jnp.sum(s_pos > best_neg).astype(s_pos.dtype),
  )
  tot = collectives.global_sum(local, axis_name)
  return {
    'qpm': tot['loss'] / global_b,
    'qpm_pos_logit': tot['pos'] / global_b,
    'qpm_neg_logit': tot['neg_sum'] / jnp.maximum(tot['neg_count'], 1.0),
    'qpm_negatives_local': tot['n_local'] / global_b,
    'qpm_negatives_cross_device': tot['n_cross'] / global_b,
    'qpm_negatives_bank': tot['n_bank'] / global_b,
    'qpm_accuracy': tot['correct'] / global_b,
  }
