"""The MBNS memory bank: a FIFO queue of the last Q global batches of product embeddings.

SPEC section 5 (paper eq. 3, "Memory Bank Negative Sampling"): after each step the current
batch is pushed and the oldest removed; every queued product is a negative of every query,
weighted by w1, and no gradient flows into queue entries. The queue is training state: a
`flax.struct.dataclass` of plain arrays that lives in the train state and is checkpointed and
restored with it.

Layout: a ring buffer of `num_batches` slots, each holding one *global* batch (every device
pushes the gathered global batch, so every device holds the same queue). `head` is the slot
the next push overwrites, i.e. the oldest batch once the queue is full; `valid` marks slots
that have been written, so empty slots never count as negatives. The order of slots does not
matter to the loss (it sums over the queue), so a ring buffer is an exact FIFO.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from jax import lax

from make_jax.parallel import collectives


@struct.dataclass
class MemoryBank:
  """FIFO queue of product embeddings with their log p and product ids.

  Attributes:
    embeddings: [Q, B, d] queued product embeddings (B = global batch size).
    log_p: [Q, B] float32 log sampling probability of each queued product.
    product_id: [Q, B] int32 product ids (for accidental-hit removal).
    valid: [Q] bool, True for slots that hold a pushed batch.
    head: [] int32, the slot the next push writes (the oldest batch when full).
  """

  embeddings: jax.Array
  log_p: jax.Array
  product_id: jax.Array
  valid: jax.Array
  head: jax.Array

  @classmethod
  def create(
    cls, num_batches: int, batch_size: int, dim: int, dtype: jnp.dtype = jnp.float32
  ) -> MemoryBank:
    """An empty queue.

    Args:
      num_batches: Q, global batches kept (cfg.loss.bank_batches); 0 gives a bank with no
        slots (MBNS off) that is still a valid pytree.
      batch_size: the global batch size (every slot holds one global batch).
      dim: the embedding dimension d.
      dtype: storage dtype of the embeddings (float32; bfloat16 halves the queue's memory).
        log p is always kept in float32 and ids in int32.

    Raises:
      ValueError: for negative or zero sizes.
    """
    for name, value in (('num_batches', num_batches), ('batch_size', batch_size), ('dim', dim)):
      if not isinstance(value, int) or value < 0:
        raise ValueError(f'MemoryBank.create: {name} must be a non-negative int, got {value!r}')
    if batch_size == 0 or dim == 0:
      raise ValueError(
        f'MemoryBank.create: batch_size and dim must be > 0, got {batch_size}, {dim}'
      )
    return cls(
      embeddings=jnp.zeros((num_batches, batch_size, dim), dtype),
      log_p=jnp.zeros((num_batches, batch_size), jnp.float32),
      product_id=jnp.full((num_batches, batch_size), -1, jnp.int32),
      valid=jnp.zeros((num_batches,), bool),
      head=jnp.zeros((), jnp.int32),
    )

  @property
  def num_batches(self) -> int:
    """Q, the number of global batches the queue holds when full."""
    return self.embeddings.shape[0]

  @property
  def batch_size(self) -> int:
    """The global batch size of one slot."""
    return self.embeddings.shape[1]

  @property
  def size(self) -> int:
    """Number of entries (Q * B), valid or not."""
    return self.embeddings.shape[0] * self.embeddings.shape[1]

  def negatives(self) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Flattened entries as (embeddings [Q*B, d], log_p [Q*B], ids [Q*B], valid [Q*B]).

    The embeddings are behind `stop_gradient`: MBNS negatives carry no gradient (SPEC 5).
    """
    q, b, d = self.embeddings.shape
    valid = jnp.broadcast_to(self.valid[:, None], (q, b)).reshape(q * b)
    return (
      lax.stop_gradient(self.embeddings.reshape(q * b, d)),
      lax.stop_gradient(self.log_p.reshape(q * b)),
      self.product_id.reshape(q * b),
      valid,
    )

  def push(
    self,
    product_emb: jax.Array,
    log_p: jax.Array,
    product_id: jax.Array,
    *,
    axis_name: str | None = None,
  ) -> MemoryBank:
    """Returns the queue with this step's batch pushed and the oldest batch dropped.

    Args:
      product_emb: [b, d] this device's product embeddings (b = per-device batch).
      log_p: [b] their log sampling probabilities.
      product_id: [b] their product ids.
      axis_name: the data axis; the per-device batches are gathered so every device pushes
        the same global batch (and holds the same queue). None on one device.

    Raises:
      ValueError: when the gathered batch does not match the queue's slot shape.
    """
    if self.num_batches == 0:
      return self
    emb = collectives.all_gather_constant(product_emb, axis_name)
    log_p = collectives.all_gather_constant(log_p, axis_name)
    product_id = collectives.all_gather_constant(product_id, axis_name)
    if emb.shape != self.embeddings.shape[1:]:
      raise ValueError(
        f'MemoryBank.push: global batch of embeddings has shape {emb.shape}, the queue '
        f'holds slots of shape {self.embeddings.shape[1:]} (batch_size, dim)'
      )
    if log_p.shape != (emb.shape[0],) or product_id.shape != (emb.shape[0],):
      raise ValueError(
        f'MemoryBank.push: log_p {log_p.shape} and product_id {product_id.shape} must be '
        f'[{emb.shape[0]}] like the embeddings'
      )
    slot = self.head
    return self.replace(
      embeddings=lax.dynamic_update_index_in_dim(
        self.embeddings, emb.astype(self.embeddings.dtype), slot, 0
      ),
      log_p=lax.dynamic_update_index_in_dim(self.log_p, log_p.astype(jnp.float32), slot, 0),
      product_id=lax.dynamic_update_index_in_dim(
        self.product_id, product_id.astype(jnp.int32), slot, 0
      ),
      valid=self.valid.at[slot].set(True),
      head=((slot + 1) % self.num_batches).astype(jnp.int32),
    )


def bank_from_config(
  loss_cfg: Any, global_batch_size: int, dim: int, dtype: jnp.dtype = jnp.float32
) -> MemoryBank:
  """The empty queue of `cfg.loss.bank_batches` global batches of `dim`-dim embeddings."""
  return MemoryBank.create(int(loss_cfg.bank_batches), int(global_batch_size), int(dim), dtype)
