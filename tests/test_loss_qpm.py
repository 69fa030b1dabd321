"""QPM (paper eq. 3) against the loop-written reference: values, gradients, switches, queue."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_loss_reference import finite_diff, naive_qpm

from make_jax.losses import qpm
from make_jax.losses.memory_bank import MemoryBank

B, D = 6, 4
IDS = np.array([10, 11, 12, 11, 13, 10])  # Rows 0/5 and 1/3 are the same product.


def _unit(rng, *shape):
  x = rng.normal(size=shape)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _bank(rng, pushes, q_batches=3):
  bank = MemoryBank.create(q_batches, B, D, jnp.asarray(0.0).dtype)  # float64 under x64.
  for k in range(pushes):
    ids = np.array([10, 20 + k, 12, 30 + k, 40 + k, 13])  # Shares ids 10, 12, 13 with the batch.
    bank = bank.push(
      jnp.asarray(_unit(rng, B, D)), jnp.asarray(rng.normal(size=B) - 3), jnp.asarray(ids)
    )
  return bank


def _bank_tuple(bank):
  emb, logp, ids, valid = (np.asarray(x) for x in bank.negatives())
  return emb.astype(np.float64), logp.astype(np.float64), ids, valid


def _case(seed):
  rng = np.random.default_rng(seed)
  q = _unit(rng, B, D)
  p = _unit(rng, B, D)
  log_p = np.log(rng.uniform(0.01, 0.2, size=B))
  return rng, q, p, log_p


CASES = [
  dict(logp_correction=True, pushes=2, w1=0.25, w2=1.0, t=0.3),  # Partly filled queue.
  dict(logp_correction=False, pushes=0, w1=0.25, w2=1.0, t=0.5),  # In-batch only.
  dict(logp_correction=True, pushes=4, w1=0.5, w2=0.7, t=0.2),  # Queue wrapped around.
]


@pytest.mark.parametrize('case', CASES)
def test_qpm_matches_naive_value_and_gradients(case):
  with jax.enable_x64(True):
    rng, q, p, log_p = _case(1)
    bank = _bank(rng, case['pushes']) if case['pushes'] else None
    bank_t = _bank_tuple(bank) if bank is not None else None
    kw = dict(w1=case['w1'], w2=case['w2'], logp_correction=case['logp_correction'])

    def ours(q_, p_, t_):
      share, _ = qpm.qpm_loss(
          q_, p_, jnp.asarray(log_p), jnp.asarray(IDS), t_, step=0, cdns_start=0, bank=bank,
          w_mbns=case['w1'], w_batch=case['w2'], logp_correction=case['logp_correction'],
      )  # fmt: skip
      return share

    val, grads = jax.jit(jax.value_and_grad(ours, argnums=(0, 1, 2)))(
      jnp.asarray(q), jnp.asarray(p), jnp.asarray(case['t'], jnp.float64)
    )
    ref, _ = naive_qpm(q, p, log_p, IDS, case['t'], bank=bank_t, **kw)
    np.testing.assert_allclose(float(val), ref, rtol=1e-10)
    g_q = finite_diff(lambda x: naive_qpm(x, p, log_p, IDS, case['t'], bank=bank_t, **kw)[0], q)
    g_p = finite_diff(lambda x: naive_qpm(q, x, log_p, IDS, case['t'], bank=bank_t, **kw)[0], p)
    g_t = finite_diff(
      lambda x: naive_qpm(q, p, log_p, IDS, float(x), bank=bank_t, **kw)[0], case['t']
    )
    np.testing.assert_allclose(np.asarray(grads[0]), g_q, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(np.asarray(grads[1]), g_p, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(float(grads[2]), g_t, rtol=1e-5)
    assert np.abs(g_p).max() > 1e-3  # The comparison is not between two zeros.


def test_qpm_metrics_match_naive_counts_and_accuracy():
  with jax.enable_x64(True):
    rng, q, p, log_p = _case(2)
    bank = _bank(rng, 2)
    _, m = qpm.qpm_loss(
        jnp.asarray(q), jnp.asarray(p), jnp.asarray(log_p), jnp.asarray(IDS), 0.25,
        step=0, cdns_start=0, bank=bank,
    )  # fmt: skip
    ref, st = naive_qpm(q, p, log_p, IDS, 0.25, bank=_bank_tuple(bank))
    np.testing.assert_allclose(float(m['qpm']), ref, rtol=1e-10)
    assert float(m['qpm_negatives_local']) == pytest.approx(st['n_local'] / B)
    assert float(m['qpm_negatives_bank']) == pytest.approx(st['n_bank'] / B)
    assert float(m['qpm_negatives_cross_device']) == 0.0
    assert float(m['qpm_pos_logit']) == pytest.approx(st['pos_sum'] / B, rel=1e-10)
    assert float(m['qpm_accuracy']) == pytest.approx(st['correct'] / B)
    # By hand: rows of the duplicated products 10 and 11 have 4 in-batch negatives, the
    # others 5; of the 12 queued entries, the rows with ids 10, 10, 12, 13 lose one per push.
    assert st['n_local'] == 4 * 4 + 2 * 5
    assert st['n_bank'] == 6 * 12 - 4 * 2


def test_uniform_p_makes_the_correction_a_constant():
  with jax.enable_x64(True):
    rng, q, p, _ = _case(3)
    bank = _bank(rng, 2)
    # -4.0 is exact in the queue's float32 log p as well: the same constant everywhere.
    bank = bank.replace(log_p=jnp.full_like(bank.log_p, -4.0))
    uniform = jnp.full((B,), -4.0)

    def loss(q_, p_, correction):
      return qpm.qpm_loss(
          q_, p_, uniform, jnp.asarray(IDS), 0.3, step=0, cdns_start=0, bank=bank,
          logp_correction=correction,
      )[0]  # fmt: skip

    args = (jnp.asarray(q), jnp.asarray(p))
    with_c = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), static_argnums=2)(*args, True)
    without = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), static_argnums=2)(*args, False)
    np.testing.assert_allclose(float(with_c[0]), float(without[0]), rtol=1e-12)
    for a, b in zip(with_c[1], without[1], strict=True):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-14)
    # A non-uniform p does change it (the check above can fail).
    skewed = qpm.qpm_loss(
        *args, jnp.log(jnp.linspace(0.01, 0.5, B)), jnp.asarray(IDS), 0.3, step=0, cdns_start=0,
        bank=bank,
    )[0]  # fmt: skip
    assert abs(float(skewed) - float(without[0])) > 1e-3


def test_queue_entries_get_exactly_zero_gradient():
  rng, q, p, log_p = _case(4)
  bank = _bank(rng, 3)

  def loss(emb, logp, q_, use_bank=True):
    return qpm.qpm_loss(
        q_, jnp.asarray(p, jnp.float32), jnp.asarray(log_p, jnp.float32), jnp.asarray(IDS), 0.1,
        step=0, cdns_start=0, bank=bank.replace(embeddings=emb, log_p=logp) if use_bank else None,
    )[0]  # fmt: skip

  g_emb, g_logp, g_q = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(
    bank.embeddings, bank.log_p, jnp.asarray(q, jnp.float32)
  )
  assert np.all(np.asarray(g_emb) == 0.0)
  assert np.all(np.asarray(g_logp) == 0.0)
  assert np.abs(np.asarray(g_q)).max() > 1e-3  # The queue does shape the query gradient.
  g_q_nobank = jax.jit(jax.grad(loss, argnums=2), static_argnums=3)(
    bank.embeddings, bank.log_p, jnp.asarray(q, jnp.float32), False
  )
  assert np.abs(np.asarray(g_q) - np.asarray(g_q_nobank)).max() > 1e-4


def test_bank_counts_only_from_bank_start_step():
  rng, q, p, log_p = _case(5)
  bank = _bank(rng, 2)
  args = (jnp.asarray(q), jnp.asarray(p), jnp.asarray(log_p), jnp.asarray(IDS), 0.2)
  step_fn = jax.jit(
    lambda step, b: qpm.qpm_loss(*args, step=step, cdns_start=0, bank=b, bank_start_step=5)
  )
  before, m_before = step_fn(4, bank)
  at, m_at = step_fn(5, bank)
  no_bank, _ = qpm.qpm_loss(*args, step=4, cdns_start=0, bank=None)
  np.testing.assert_allclose(float(before), float(no_bank), rtol=1e-6)
  assert float(m_before['qpm_negatives_bank']) == 0.0
  assert float(m_at['qpm_negatives_bank']) > 0.0
  assert float(at) > float(before)


def test_empty_bank_slots_never_count():
  _, q, p, log_p = _case(6)
  args = (jnp.asarray(q), jnp.asarray(p), jnp.asarray(log_p), jnp.asarray(IDS), 0.2)
  empty = MemoryBank.create(4, B, D)
  with_empty, m = qpm.qpm_loss(*args, step=0, cdns_start=0, bank=empty)
  without, _ = qpm.qpm_loss(*args, step=0, cdns_start=0, bank=None)
  assert float(with_empty) == float(without)
  assert float(m['qpm_negatives_bank']) == 0.0


def test_nan_in_an_empty_slot_reaches_neither_loss_nor_gradients():
  rng, q, p, log_p = _case(8)
  bank = _bank(rng, 1)  # Slot 0 written; slots 1 and 2 empty, then poisoned with NaN.
  poisoned = bank.replace(
    embeddings=bank.embeddings.at[1:].set(jnp.nan), log_p=bank.log_p.at[1:].set(jnp.nan)
  )

  def loss(q_, p_, b):
    return qpm.qpm_loss(
        q_, p_, jnp.asarray(log_p, jnp.float32), jnp.asarray(IDS), 0.2, step=0, cdns_start=0,
        bank=b,
    )[0]  # fmt: skip

  f = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
  args = (jnp.asarray(q, jnp.float32), jnp.asarray(p, jnp.float32))
  (val, grads), (want_val, want_grads) = f(*args, poisoned), f(*args, bank)
  assert np.isfinite(float(val)) and all(np.isfinite(np.asarray(g)).all() for g in grads)
  assert float(val) == float(want_val)
  for g, w in zip(grads, want_grads, strict=True):
    np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def test_weight_zero_removes_a_source():
  with jax.enable_x64(True):
    rng, q, p, log_p = _case(7)
    bank = _bank(rng, 2)
    args = (jnp.asarray(q), jnp.asarray(p), jnp.asarray(log_p), jnp.asarray(IDS), 0.4)
    got, m = qpm.qpm_loss(*args, step=0, cdns_start=0, bank=bank, w_batch=0.0)
    ref, _ = naive_qpm(q, p, log_p, IDS, 0.4, bank=_bank_tuple(bank), w2=0.0)
    np.testing.assert_allclose(float(got), ref, rtol=1e-10)
    assert float(m['qpm_negatives_local']) == 0.0


def test_start_step_and_bad_inputs():
  assert qpm.start_step(0.5, 200) == 100
  assert qpm.start_step(0.0, 200) == 0
  with pytest.raises(ValueError, match='start fraction'):
    qpm.start_step(1.5, 10)
  q = jnp.zeros((4, 3))
  with pytest.raises(ValueError, match='product_emb'):
    qpm.qpm_loss(
      q, jnp.zeros((4, 2)), jnp.zeros(4), jnp.zeros(4, jnp.int32), 1.0, step=0, cdns_start=0
    )
  with pytest.raises(ValueError, match='log_p'):
    qpm.qpm_loss(q, q, jnp.zeros(3), jnp.zeros(4, jnp.int32), 1.0, step=0, cdns_start=0)
  with pytest.raises(ValueError, match='bank embeddings have dim'):
    qpm.qpm_loss(
        q, q, jnp.zeros(4), jnp.zeros(4, jnp.int32), 1.0, step=0, cdns_start=0,
        bank=MemoryBank.create(2, 4, 5),
    )  # fmt: skip
