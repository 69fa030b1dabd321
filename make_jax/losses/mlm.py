"""MLM: cross-entropy of masked tokens over the weighted positions (SPEC section 4).

Masking itself (BERT 80/10/10 with Keyword Enhancement) is make_jax/train/masking.py; it marks each
position to predict with weight 1.0. Query and title tokens are pooled: every predicted token
of either text counts once,

  L_MLM = SUM_t w_t * CE(logits_t, label_t) / SUM_t w_t     over query and title positions,

with both sums taken over the global batch (psum), so the sharded loss equals the
single-device one. Logits are upcast to float32 for the log-softmax. The loss is 0 when no
token is chosen. Each function returns this device's share (its numerator / global weight).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from make_jax.parallel import backend, collectives


def weighted_cross_entropy(
  logits: jax.Array, labels: jax.Array, weights: jax.Array, name: str = 'MLM'
) -> tuple[jax.Array, jax.Array]:
  """(SUM w * CE, SUM w) over all positions of one device.

  Args:
    logits: [b, L, V] unnormalised token scores.
    labels: [b, L] int target token ids (anything where the weight is 0).
    weights: [b, L] float weights (1.0 where a token is predicted).
    name: used in error messages.
  """
  if logits.ndim != 3 or labels.shape != logits.shape[:2] or weights.shape != labels.shape:
    raise ValueError(
      f'{name}: logits {logits.shape} must be [b, L, V] with labels {labels.shape} and '
      f'weights {weights.shape} both [b, L]'
    )
  dtype = jnp.promote_types(logits.dtype, jnp.float32)
  logp = jax.nn.log_softmax(logits.astype(dtype), axis=-1)
  vocab = logits.shape[-1]
  safe = jnp.clip(labels, 0, vocab - 1)
  ce = -backend.take_along_last(logp, safe)
  w = weights.astype(dtype)
  return jnp.sum(w * jnp.where(w != 0, ce, 0.0)), jnp.sum(w)


def mlm_loss(
  query_logits: jax.Array,
  query_labels: jax.Array,
  query_weights: jax.Array,
  title_logits: jax.Array,
  title_labels: jax.Array,
  title_weights: jax.Array,
  *,
  axis_name: str | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Pooled query + title MLM; metrics also give each text's own mean cross-entropy."""
  q_num, q_den = weighted_cross_entropy(query_logits, query_labels, query_weights, 'MLM query')
  t_num, t_den = weighted_cross_entropy(title_logits, title_labels, title_weights, 'MLM title')
  den = collectives.global_sum(q_den + t_den, axis_name)
  share = (q_num + t_num) / jnp.where(den > 0, den, 1.0)
  tot = collectives.global_sum(
    lax.stop_gradient(dict(q=q_num, t=t_num, qd=q_den, td=t_den)), axis_name
  )

  def div(a, b):
    return a / jnp.where(b > 0, b, 1.0)

  return share, {
    'mlm': div(tot['q'] + tot['t'], den),
    'mlm_query': div(tot['q'], tot['qd']),
    'mlm_title': div(tot['t'], tot['td']),
    'mlm_tokens': den,
  }
