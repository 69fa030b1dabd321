"""The MBNS queue: FIFO order, empty slots, identical copies under pmap/shard_map, checkpoints."""

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from configs import base
from make_jax.losses.memory_bank import MemoryBank, bank_from_config

Q, GB, D, N_DEV = 3, 16, 4, 8


def _batch(k):
  """Global batch number k: embeddings filled with k, ids 100k..100k+GB-1."""
  emb = jnp.full((GB, D), float(k)) + jnp.arange(GB, dtype=jnp.float32)[:, None] / 100
  return emb, jnp.full((GB,), -float(k)), jnp.arange(GB, dtype=jnp.int32) + 100 * k


def _queued_ids(bank):
  _, _, ids, valid = bank.negatives()
  return set(np.asarray(ids)[np.asarray(valid)].tolist())


def test_fifo_keeps_the_last_q_batches_and_drops_the_oldest():
  bank = MemoryBank.create(Q, GB, D)
  assert _queued_ids(bank) == set()  # Empty slots hold nothing.
  push = jax.jit(lambda b, e, lp, i: b.push(e, lp, i))
  for k in range(Q):
    bank = push(bank, *_batch(k))
    assert int(np.asarray(bank.valid).sum()) == k + 1
  assert _queued_ids(bank) == {100 * k + j for k in range(Q) for j in range(GB)}
  bank = push(bank, *_batch(Q))  # The (Q+1)-th push: batch 0 is gone, 1..Q remain.
  assert _queued_ids(bank) == {100 * k + j for k in range(1, Q + 1) for j in range(GB)}
  emb, logp, ids, valid = (np.asarray(a) for a in bank.negatives())
  by_id = dict(zip(ids.tolist(), range(len(ids)), strict=True))
  row = by_id[100 * Q + 5]
  np.testing.assert_allclose(emb[row], np.full(D, Q + 0.05), rtol=1e-6)
  assert logp[row] == -float(Q) and valid.all()
  assert int(bank.head) == 1  # The next push overwrites the slot of batch 1, now the oldest.


def test_zero_batches_is_a_valid_empty_queue():
  bank = MemoryBank.create(0, GB, D)
  assert bank.size == 0
  assert bank.push(*_batch(0)) is bank
  assert bank_from_config(base.get_config().loss, 256, 32).embeddings.shape == (8, 256, 32)


def test_bad_shapes_raise_clear_errors():
  with pytest.raises(ValueError, match='num_batches'):
    MemoryBank.create(-1, GB, D)
  bank = MemoryBank.create(Q, GB, D)
  emb, logp, ids = _batch(0)
  with pytest.raises(ValueError, match='global batch of embeddings'):
    bank.push(emb[:8], logp[:8], ids[:8])
  with pytest.raises(ValueError, match='product_id'):
    bank.push(emb, logp, ids[:8])


def _split(a):
  return a.reshape((N_DEV, GB // N_DEV) + a.shape[1:])


def test_every_device_pushes_the_same_global_batch_under_pmap_and_shard_map():
  start = MemoryBank.create(Q, GB, D).push(*_batch(7))
  want = start.push(*_batch(1))  # One device pushing the global batch.

  per_dev = jax.pmap(
    lambda b, e, lp, i: b.push(e, lp, i, axis_name='data'),
    axis_name='data',
    in_axes=(None, 0, 0, 0),
  )(start, *(_split(a) for a in _batch(1)))
  for d in range(N_DEV):
    for got, ref in zip(jax.tree.leaves(per_dev), jax.tree.leaves(want), strict=True):
      np.testing.assert_array_equal(np.asarray(got[d]), np.asarray(ref))

  mesh = jax.make_mesh((N_DEV,), ('data',))
  f = jax.jit(
    jax.shard_map(
      lambda b, e, lp, i: b.push(e, lp, i, axis_name='data'),
      mesh=mesh,
      in_specs=(P(), P('data'), P('data'), P('data')),
      out_specs=P(),  # The queue is replicated: typed invariant over the data axis.
    )
  )
  put = lambda t, spec: jax.device_put(t, NamedSharding(mesh, spec))
  got = f(put(start, P()), *(put(a, P('data')) for a in _batch(1)))
  for g, ref in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_array_equal(np.asarray(g), np.asarray(ref))


def test_checkpoints_as_plain_arrays_and_restores_exactly(tmp_path):
  bank = MemoryBank.create(Q, GB, D)
  for k in range(Q + 1):
    bank = bank.push(*_batch(k))
  leaves = jax.tree.leaves(bank)
  assert len(leaves) == 5 and all(isinstance(a, jax.Array) for a in leaves)
  ckpt = ocp.StandardCheckpointer()
  ckpt.save(tmp_path / 'bank', bank)
  ckpt.wait_until_finished()
  restored = ckpt.restore(tmp_path / 'bank', jax.eval_shape(lambda: MemoryBank.create(Q, GB, D)))
  assert isinstance(restored, MemoryBank)
  for a, b in zip(jax.tree.leaves(restored), leaves, strict=True):
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # Pushing after restore continues the FIFO exactly where it stopped.
  np.testing.assert_array_equal(
    np.asarray(restored.push(*_batch(9)).product_id), np.asarray(bank.push(*_batch(9)).product_id)
  )
