"""AdamW with the paper's schedule (SPEC section 6).

AdamW(beta1=0.9, beta2=0.98); the learning rate rises linearly from 0 to its peak over the
first `warmup_fraction` of the steps, then falls linearly to 0 at the last step. Weight
decay skips biases, LayerNorm/GroupNorm parameters and the scalar temperatures (decaying
them would pull the temperatures towards exp(0) = 1 and the norms towards 0). A pretrained
start gives the imported encoders a group of their own (lower rate, own warm-up; SPEC 8).
"""

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from make_jax.parallel import backend


def _schedule(peak: float, warmup_fraction: float, num_steps: int, name: str) -> optax.Schedule:
  if num_steps <= 0:
    raise ValueError(f'num_steps must be positive, got {num_steps}')
  if not 0.0 <= warmup_fraction < 1.0:
    raise ValueError(f'optim.{name} must be in [0, 1), got {warmup_fraction}')
  warmup = int(round(warmup_fraction * num_steps))
  return optax.schedules.join_schedules(
    [
      optax.schedules.linear_schedule(0.0, peak, max(warmup, 1)),
      optax.schedules.linear_schedule(peak, 0.0, max(num_steps - warmup, 1)),
    ],
    boundaries=[warmup],
  )


def learning_rate_schedule(optim: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
  """Linear warm-up to `optim.learning_rate` over warmup_fraction * num_steps, then to 0."""
  return _schedule(optim.learning_rate, optim.warmup_fraction, num_steps, 'warmup_fraction')


def pretrained_schedule(optim: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
  """The pretrained group's schedule: the same shape to `optim.pretrained_learning_rate`."""
  return _schedule(
    optim.pretrained_learning_rate,
    optim.get('pretrained_warmup_fraction', optim.warmup_fraction),
    num_steps,
    'pretrained_warmup_fraction',
  )


def has_pretrained_group(optim: ml_collections.ConfigDict) -> bool:
  """True when the pretrained modules learn at their own rate (`pretrained_learning_rate` > 0)."""
  return float(optim.get('pretrained_learning_rate', 0.0)) > 0.0


def param_groups(optim: ml_collections.ConfigDict, params: Any) -> Any:
  """'pretrained' for every leaf under a top-level module of `optim.pretrained_modules`,
  'new' for the rest (a params-shaped tree of labels for `optax.multi_transform`)."""
  modules = set(optim.get('pretrained_modules', ()))
  return {
    k: jax.tree.map(lambda _, k=k: 'pretrained' if k in modules else 'new', v)
    for k, v in params.items()
  }


def global_norm(tree: Any) -> jax.Array:
  """sqrt(sum of the squares of every leaf), accumulated in float32 (float64 stays float64).

  On an accelerator one reduction over the concatenated leaves, one fused kernel where a
  sum per leaf (optax.tree.norm) is one kernel per parameter array (some 250 in the base
  model); on CPU a sum per leaf (no launch cost, no copy).
  The step's `grad_norm` metric and the clip call this same function, so XLA computes it
  once.
  """
  leaves = jax.tree.leaves(tree)
  if not leaves:
    return jnp.zeros((), jnp.float32)
  dtype = jnp.result_type(jnp.float32, *(x.dtype for x in leaves))
  if backend.target_platform() == 'cpu':  # No launch cost there; a concatenation is a copy.
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(dtype))) for x in leaves))
  flat = jnp.concatenate([jnp.ravel(x).astype(dtype) for x in leaves])
  return jnp.sqrt(jnp.sum(flat * flat))


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
  """`optax.clip_by_global_norm` (same rule, same empty state) over `global_norm`."""

  def update(updates, state, params=None):
    del params
    norm = global_norm(updates)
    clip = lambda t: jnp.where(norm < max_norm, t, (t / norm.astype(t.dtype)) * max_norm)
    return jax.tree.map(clip, updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def _decay_mask(params: Any) -> Any:
  """True for the weight matrices and embedding tables, False for everything 0-d or 1-d."""
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(
  optim: ml_collections.ConfigDict, num_steps: int
) -> optax.GradientTransformation:
  """The optimiser of `cfg.optim`: optional global-norm clipping, then AdamW.

  With `optim.pretrained_learning_rate` > 0 there are two parameter groups, each AdamW
  with its own schedule (`optax.multi_transform`): the top-level modules named in
  `optim.pretrained_modules` (the imported encoders) at the pretrained rate and warm-up,
  everything else (projections, gate, image tower, heads, temperatures) at
  `optim.learning_rate`. The clip sees the whole gradient.
  """
  adam = lambda schedule: optax.adamw(
    schedule, b1=optim.b1, b2=optim.b2, weight_decay=optim.weight_decay, mask=_decay_mask
  )
  adamw = adam(learning_rate_schedule(optim, num_steps))
  if has_pretrained_group(optim):
    adamw = optax.multi_transform(
      {'new': adamw, 'pretrained': adam(pretrained_schedule(optim, num_steps))},
      lambda params: param_groups(optim, params),
    )
  if optim.grad_clip_norm > 0:
    return optax.chain(clip_by_global_norm(optim.grad_clip_norm), adamw)
  return adamw
