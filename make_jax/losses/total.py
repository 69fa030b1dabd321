"""The pre-training objective: a configurable weighted sum of the registered loss terms.

  loss = SUM_k cfg.loss.weights[k] * L_k        (SPEC section 4; weight 0 skips the term)

`compute_losses` is written once against an optional axis name and runs unchanged on one
device, under `jax.pmap(axis_name='data')` and under `jax.shard_map` inside `jax.jit`.

Contract for the trainer (make_jax/parallel/collectives.py explains why):
- `loss` is this device's share; the global loss is its sum over the data axis (on one
  device it *is* the loss). Differentiate the share, then sum parameter gradients with
  `reduce_gradients(grads, axis_name)` (a psum under pmap; a no-op for gradients that
  shard_map already summed). Do not pmean: that divides the gradient by the device count.
- `metrics` are global values, identical on every device: 'loss', each active term's value
  under its own name ('qpm', 'qpc', 'mlm', 'mpm', 'mpm_r') and its diagnostics (negatives per
  query by source, mean positive/negative logits, accuracy, temperatures).
- After the step, push the batch into the queue:
  `bank = bank.push(outputs['product_emb'], batch['log_p'], batch['product_id'],
  axis_name=axis_name)` (make_jax/losses/memory_bank.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
from jax import lax

from make_jax.losses import registry
from make_jax.losses import terms as _terms  # noqa: F401  (registers the terms)
from make_jax.parallel.collectives import reduce_gradients

if TYPE_CHECKING:
  from make_jax.losses.memory_bank import MemoryBank

__all__ = ['compute_losses', 'reduce_gradients']


def compute_losses(
  outputs: Mapping[str, Any],
  batch: Mapping[str, Any],
  loss_cfg: Any,
  *,
  step: jax.Array | int,
  num_steps: int,
  bank: MemoryBank | None = None,
  axis_name: str | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Weighted sum of the configured pre-training losses.

  Args:
    outputs: model outputs (contract 4).
    batch: the (masked) training batch of this device (contracts 2-3).
    loss_cfg: `cfg.loss` (configs/base.py): weights, QPM/MBNS/CDNS/MPM_R/QPC settings.
    step: current step (may be traced: the CDNS and bank switches do not recompile).
    num_steps: total training steps (Python int).
    bank: the MBNS queue (required when cfg.loss.bank_batches > 0).
    axis_name: the data axis, or None on one device.

  Returns:
    (share, metrics): this device's share of the total loss and global metrics.

  Raises:
    ValueError: unknown term names, negative weights, no active term, missing keys.
  """
  weights = dict(loss_cfg.weights)
  active = {}
  for name, w in weights.items():
    term = registry.get(name)
    if not isinstance(w, int | float) or w < 0:
      raise ValueError(f'cfg.loss.weights.{name} must be a number >= 0, got {w!r}')
    if w > 0:
      active[name] = (float(w), term)
  if not active:
    raise ValueError(f'cfg.loss.weights switches every term off: {weights}')
  ctx = registry.LossContext(step=step, num_steps=int(num_steps), bank=bank, axis_name=axis_name)
  total = jnp.zeros((), jnp.float32)
  metrics: dict[str, jax.Array] = {}
  loss_value = jnp.zeros((), jnp.float32)
  for name, (w, term) in active.items():
    share, term_metrics = term(outputs, batch, loss_cfg, ctx)
    total = total + w * share
    metrics.update(term_metrics)
    loss_value = loss_value + w * term_metrics[name]
  metrics['loss'] = lax.stop_gradient(loss_value)
  return total, metrics
