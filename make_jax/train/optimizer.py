"""AdamW with the paper's schedule (SPEC section 6).

AdamW(beta1=0.9, beta2=0.98); the learning rate rises linearly from 0 to its peak over the
first `warmup_fraction` of the steps, then falls linearly to 0 at the last step. Weight
decay skips biases, LayerNorm/GroupNorm parameters and the scalar temperatures (decaying
them would pull the temperatures towards exp(0) = 1 and the norms towards 0).
"""

from typing import Any

import jax
import ml_collections
import optax


def learning_rate_schedule(optim: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
  """Linear warm-up to `optim.learning_rate` over warmup_fraction * num_steps, then to 0."""
  if num_steps <= 0:
    raise ValueError(f'num_steps must be positive, got {num_steps}')
  if not 0.0 <= optim.warmup_fraction < 1.0:
    raise ValueError(f'optim.warmup_fraction must be in [0, 1), got {optim.warmup_fraction}')
  warmup = int(round(optim.warmup_fraction * num_steps))
  return optax.schedules.join_schedules(
    [
      optax.schedules.linear_schedule(0.0, optim.learning_rate, max(warmup, 1)),
      optax.schedules.linear_schedule(optim.learning_rate, 0.0, max(num_steps - warmup, 1)),
    ],
    boundaries=[warmup],
  )


def _decay_mask(params: Any) -> Any:
  """True for the weight matrices and embedding tables, False for everything 0-d or 1-d."""
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(
  optim: ml_collections.ConfigDict, num_steps: int
) -> optax.GradientTransformation:
  """The optimiser of `cfg.optim`: optional global-norm clipping, then AdamW."""
  adamw = optax.adamw(
    learning_rate_schedule(optim, num_steps),
    b1=optim.b1,
    b2=optim.b2,
    weight_decay=optim.weight_decay,
    mask=_decay_mask,
  )
  if optim.grad_clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(optim.grad_clip_norm), adamw)
  return adamw
