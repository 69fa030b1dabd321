"""Naive references of the losses, written from the papers' formulas with Python loops.

The loss tests compare make_jax.losses against these (values, and gradients by float64
central finite differences). Nothing here is vectorised: every term of every sum is an
explicit loop iteration, so the reference reads like eq. 1-3. The tests in this file check the
references themselves on cases small enough to work out by hand.
"""

import math

import numpy as np
import pytest


def _dot(a, b):
  return sum(float(x) * float(y) for x, y in zip(a, b, strict=True))


def naive_qpm(
  q,
  p,
  log_p,
  ids,
  temperature,
  *,
  device_of_row=None,
  cdns_on=True,
  bank=None,
  bank_on=True,
  w1=0.25,
  w2=1.0,
  logp_correction=True,
):
  """Paper eq. 3, -mean_r log e^s(u_r,v_r) / (e^s + w1 SUM_i e^s(u,v_i) + w2 SUM_j e^s(u,v_j)).

  Args:
    q, p: [B, d] queries and their positives (row r's positive is p[r]).
    log_p: [B]; ids: [B] product ids.
    temperature: T in s(u, v) = u.v / T - log p(v).
    device_of_row: [B] device of each row; with cdns_on False only same-device rows are
      batch negatives. None: one device.
    bank: None or (emb [K, d], log_p [K], ids [K], valid [K]).
    bank_on: queue entries count (step >= bank_start_step).

  Returns:
    (loss, stats) with stats: per-query counts of (local, cross, bank) negatives summed over
    queries, sum of positive scores, number of queries whose positive beats every negative.
  """
  n = len(q)
  dev = device_of_row if device_of_row is not None else [0] * n

  def s(u, v, lp):
    # float(): a NumPy float32 log p would otherwise make the whole score float32 (NEP 50).
    return _dot(u, v) / float(temperature) - (float(lp) if logp_correction else 0.0)

  total = 0.0
  n_local = n_cross = n_bank = 0
  correct = 0
  pos_sum = 0.0
  for r in range(n):
    pos = s(q[r], p[r], log_p[r])
    pos_sum += pos
    den = math.exp(pos)
    best = -math.inf
    for j in range(n):
      if j == r or ids[j] == ids[r]:
        continue  # The positive itself, or an accidental hit.
      same = dev[j] == dev[r]
      if not same and not cdns_on:
        continue
      if w2 == 0:
        continue
      sj = s(q[r], p[j], log_p[j])
      den += w2 * math.exp(sj)
      best = max(best, sj)
      if same:
        n_local += 1
      else:
        n_cross += 1
    if bank is not None and bank_on and w1 > 0:
      b_emb, b_logp, b_ids, b_valid = bank
      for i in range(len(b_emb)):
        if not b_valid[i] or b_ids[i] == ids[r]:
          continue
        si = s(q[r], b_emb[i], b_logp[i])
        den += w1 * math.exp(si)
        best = max(best, si)
        n_bank += 1
    total += -(pos - math.log(den))
    correct += int(pos > best)
  stats = dict(n_local=n_local, n_cross=n_cross, n_bank=n_bank, pos_sum=pos_sum, correct=correct)
  return total / n, stats


def naive_qpc(q, p, ids, scale, margin):
  """AM-Softmax: -mean_r log softmax_c(scale * (u_r.v_c - margin [c == r]))[r], hits removed."""
  n = len(q)
  total = 0.0
  for r in range(n):
    z_pos = scale * (_dot(q[r], p[r]) - margin)
    den = 0.0
    for c in range(n):
      if c == r:
        den += math.exp(z_pos)
      elif ids[c] != ids[r]:
        den += math.exp(scale * _dot(q[r], p[c]))
    total += -(z_pos - math.log(den))
  return total / n


def naive_mpm_r(target, pred, mask, missing, tau, *, device_of_image=None):
  """Paper eq. 1-2: -1/N_MASK SUM_masked log e^(v.v^/tau) / SUM_i SUM_j e^(v.v^_i^j/tau).

  With `device_of_image`, the denominator only runs over images of the region's device
  (cross-device off).
  """
  n, length = len(target), len(target[0])
  dev = device_of_image if device_of_image is not None else [0] * n
  total, count = 0.0, 0
  for i in range(n):
    for j in range(length):
      if not mask[i][j] or missing[i]:
        continue
      v = target[i][j]
      pos = _dot(v, pred[i][j]) / tau
      den = 0.0
      for i2 in range(n):
        if missing[i2] or dev[i2] != dev[i]:
          continue
        for j2 in range(length):
          den += math.exp(_dot(v, pred[i2][j2]) / tau)
      total += -(pos - math.log(den))
      count += 1
  return total / count if count else 0.0


def naive_mpm(target, pred, mask):
  """Mean over masked regions of the per-feature squared error."""
  total, count = 0.0, 0
  for i in range(len(target)):
    for j in range(len(target[0])):
      if mask[i][j]:
        dims = len(target[i][j])
        total += (
          sum((float(a) - float(b)) ** 2 for a, b in zip(pred[i][j], target[i][j], strict=True))
          / dims
        )
        count += 1
  return total / count if count else 0.0


def naive_mlm(logit_sets, label_sets, weight_sets):
  """SUM w CE / SUM w over every position of every (logits, labels, weights) set."""
  num, den = 0.0, 0.0
  for logits, labels, weights in zip(logit_sets, label_sets, weight_sets, strict=True):
    for b in range(len(logits)):
      for t in range(len(logits[b])):
        w = float(weights[b][t])
        if w == 0:
          continue
        row = [float(x) for x in logits[b][t]]
        mx = max(row)
        lse = mx + math.log(sum(math.exp(x - mx) for x in row))
        num += w * (lse - row[int(labels[b][t])])
        den += w
  return num / den if den else 0.0


def finite_diff(f, x, eps=1e-6):
  """Central differences of scalar f at every element of the float64 array x."""
  x = np.array(x, np.float64)
  g = np.zeros_like(x)
  for idx in np.ndindex(x.shape):
    xp, xm = x.copy(), x.copy()
    xp[idx] += eps
    xm[idx] -= eps
    g[idx] = (f(xp) - f(xm)) / (2 * eps)
  return g


# --- Checks of the references on cases worked out by hand ---------------------------------


def test_naive_qpm_two_products_by_hand():
  q = [[1.0, 0.0], [0.0, 1.0]]
  p = [[1.0, 0.0], [0.6, 0.8]]
  log_p = [math.log(0.5), math.log(0.25)]
  loss, stats = naive_qpm(q, p, log_p, [7, 8], 0.5)
  s00 = 1.0 / 0.5 - math.log(0.5)
  s01 = 0.6 / 0.5 - math.log(0.25)
  s11 = 0.8 / 0.5 - math.log(0.25)
  s10 = 0.0 / 0.5 - math.log(0.5)
  want = 0.5 * (-(s00 - math.log(math.exp(s00) + math.exp(s01)))) + 0.5 * (
    -(s11 - math.log(math.exp(s11) + math.exp(s10)))
  )
  assert loss == pytest.approx(want, rel=1e-12)
  assert stats['n_local'] == 2 and stats['n_cross'] == 0


def test_naive_qpm_only_accidental_hits_is_zero():
  # Both rows hold product 3: each is the other's accidental hit, so no negatives remain.
  loss, stats = naive_qpm(
    [[1.0, 2.0], [0.5, 0.1]], [[0.3, 0.4], [0.3, 0.4]], [0.0, 0.0], [3, 3], 1.0
  )
  assert loss == pytest.approx(0.0, abs=1e-12) and stats['n_local'] == 0


def test_naive_mpm_r_single_region_is_zero_and_two_by_hand():
  assert naive_mpm_r([[[1.0]]], [[[2.0]]], [[1]], [False], 0.1) == pytest.approx(0.0)
  # One image, two regions, the first masked: -log e^(1*2/1) / (e^(1*2) + e^(1*3)).
  got = naive_mpm_r([[[1.0], [5.0]]], [[[2.0], [3.0]]], [[1, 0]], [False], 1.0)
  assert got == pytest.approx(math.log(1 + math.e), rel=1e-12)


def test_naive_qpc_and_mlm_by_hand():
  # Two classes, cosines 1 (positive) and 0, scale 2, margin 0.5: -log e^1 / (e^1 + e^0).
  got = naive_qpc([[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]], [1, 2], 2.0, 0.5)
  assert got == pytest.approx(math.log(1 + math.exp(-1.0)), rel=1e-12)
  # Uniform logits over 4 words: CE = log 4 whatever the label.
  assert naive_mlm([[[[0.0] * 4]]], [[[2]]], [[[1.0]]]) == pytest.approx(math.log(4.0))
