"""The train state and one optimisation step, written once against an optional axis name.

State is one pytree (STYLE.md 5): params, optimiser state, step, RNG and the MBNS queue live
in `TrainState`; what is in it is what a checkpoint holds. The step masks the batch (MLM /
MPM, with Keyword Enhancement), runs the model, computes the weighted losses, reduces the
gradients the way make_jax/parallel/collectives.py prescribes (never a pmean), applies AdamW
and pushes the batch's product embeddings into the queue.

The same `make_train_step(...)` serves one device (`axis_name=None`, plain `jax.jit`), the
`jax.pmap` path (`axis_name='data'`) and `shard_map` inside `jax.jit`.
"""

from collections.abc import Callable
from typing import Any, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import struct

from make_jax.losses.memory_bank import MemoryBank, bank_from_config
from make_jax.losses.total import compute_losses, reduce_gradients
from make_jax.models.model_config import at_least_float32
from make_jax.parallel.collectives import global_sum
from make_jax.train import masking, optimizer

Batch = dict[str, Any]


class SpecialIds(Protocol):
  """What the step needs of the tokenizer (`make_jax.text.preprocess.TextPreprocessor`)."""

  pad_id: int
  cls_id: int
  sep_id: int
  mask_id: int
  vocab_size: int


@struct.dataclass
class TrainState:
  """Everything a training run carries from step to step (and checkpoints)."""

  step: jax.Array  # int32 scalar: optimiser steps taken.
  params: Any
  opt_state: Any
  # MBNS queue of the last cfg.loss.bank_batches global batches; None when that is 0 (a
  # queue of no slots has zero-size arrays, which a checkpoint cannot hold).
  bank: MemoryBank | None
  rng: jax.Array  # Base key; each step folds in its step number (and device index).


def create_train_state(
  model: nn.Module,
  params: Any,
  tx: optax.GradientTransformation,
  config: ml_collections.ConfigDict,
  rng: jax.Array,
) -> TrainState:
  """A fresh state at step 0 with an empty queue sized for the global batch (None: no MBNS)."""
  bank = None
  if int(config.loss.bank_batches) > 0:
    bank = bank_from_config(
      config.loss,
      config.data.global_batch_size,
      config.model.embed_dim,
      # The product embeddings' dtype: float32, or float64 for a float64 model.
      at_least_float32(jnp.dtype(config.model.dtype)),
    )
  return TrainState(
    step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), bank=bank, rng=rng
  )


def make_train_step(
  model: nn.Module,
  tx: optax.GradientTransformation,
  config: ml_collections.ConfigDict,
  tokens: SpecialIds,
  *,
  axis_name: str | None = None,
) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
  """Returns `step(state, batch) -> (state, metrics)`; metrics are global values.

  Args:
    model: the `MakeModel`.
    tx: the optimiser (make_jax/train/optimizer.py).
    config: the full config (masking, loss, train.num_steps).
    tokens: special token ids and vocabulary size of the tokenizer feeding the batch.
    axis_name: the data axis under pmap / shard_map; None on one device.

  Raises:
    ValueError: the tokenizer's vocabulary does not fit the model's embedding table.
  """
  if tokens.vocab_size > config.model.vocab_size:
    raise ValueError(
      f'The tokenizer has {tokens.vocab_size} tokens but config.model.vocab_size is '
      f'{config.model.vocab_size}: raise model.vocab_size or use a smaller vocabulary'
    )
  num_steps = int(config.train.num_steps)
  num_regions = int(config.model.image_grid) ** 2

  def step_fn(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
    # Packing indices (make_jax/input/packing.py) are per batch, not per example: they
    # bypass the per-example masking and go to the model as they are.
    packs = {k: v for k, v in batch.items() if k.endswith('_pack')}
    if packs and axis_name is not None:
      raise ValueError(
        f'packed batches ({sorted(packs)}) run on one device only (parallelism=single)'
      )
    mask_rng, dropout_rng = jax.random.split(jax.random.fold_in(state.rng, state.step))
    row_offset = 0
    if axis_name is not None:
      # Masks are drawn per example of the global batch (identical to one device holding
      # it); dropout masks differ per device.
      device = jax.lax.axis_index(axis_name)
      row_offset = device * batch['image_missing'].shape[0]
      dropout_rng = jax.random.fold_in(dropout_rng, device)
    masked = masking.mask_batch_by_example(
      {k: v for k, v in batch.items() if k not in packs},
      mask_rng,
      config.masking,
      row_offset=row_offset,
      pad_id=tokens.pad_id,
      cls_id=tokens.cls_id,
      sep_id=tokens.sep_id,
      mask_id=tokens.mask_id,
      vocab_size=tokens.vocab_size,
      num_regions=num_regions,
    )
    masked.update(packs)

    def loss_fn(params):
      outputs = model.apply({'params': params}, masked, train=True, rngs={'dropout': dropout_rng})
      share, metrics = compute_losses(
        outputs,
        masked,
        config.loss,
        step=state.step,
        num_steps=num_steps,
        bank=state.bank,
        axis_name=axis_name,
      )
      return share, (metrics, outputs['product_emb'])

    (_, (metrics, product_emb)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grads = reduce_gradients(grads, axis_name)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    bank = state.bank
    if bank is not None:
      bank = bank.push(
        jax.lax.stop_gradient(product_emb), batch['log_p'], batch['product_id'], axis_name=axis_name
      )
    metrics['grad_norm'] = optimizer.global_norm(grads)
    # Chosen MLM tokens beyond the head's K slots (left unmasked; see mlm_max_predictions).
    capped = jnp.sum(masked['mlm_query_capped']) + jnp.sum(masked['mlm_title_capped'])
    metrics['mlm_capped_tokens'] = global_sum(capped.astype(jnp.float32), axis_name)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, bank=bank)
    return new_state, metrics

  return step_fn
