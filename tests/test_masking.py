"""MLM / MPM masking with Keyword Enhancement (contract 3): rates, specials, 80/10/10, jit."""

import jax
import numpy as np
import pytest

from configs import base
from make_jax.models.heads import mlm_max_predictions
from make_jax.train.masking import mask_batch

PAD, UNK, CLS, SEP, MASK, V = 0, 1, 2, 3, 4, 1000
B, LQ, LT, R = 512, 16, 32, 16


def _batch(seed=0):
  rs = np.random.RandomState(seed)
  out = {}
  for field, length in (('query', LQ), ('title', LT)):
    n = rs.randint(3, length + 1, size=B)
    mask = (np.arange(length)[None] < n[:, None]).astype(np.int32)
    ids = rs.randint(5, V, size=(B, length)).astype(np.int32)
    ids[:, 0] = CLS
    ids[np.arange(B), n - 1] = SEP
    out[f'{field}_ids'] = np.where(mask > 0, ids, PAD).astype(np.int32)
    out[f'{field}_mask'] = mask
    inner = mask * (ids != CLS) * (ids != SEP)
    out[f'{field}_keyword'] = ((rs.rand(B, length) < 0.25) * inner).astype(np.int32)
  out['image_missing'] = rs.rand(B) < 0.2
  return out


def _cfg(**overrides):
  cfg = base.get_config().masking
  for k, v in overrides.items():
    cfg[k] = v
  return cfg


def _mask(batch, cfg, seed=0):
  fn = jax.jit(
    lambda b, r: mask_batch(
      b, r, cfg, pad_id=PAD, cls_id=CLS, sep_id=SEP, mask_id=MASK, vocab_size=V, num_regions=R
    )
  )
  return jax.tree.map(np.asarray, fn(batch, jax.random.key(seed)))


def _chosen(out, field):
  """[B, L] weights of the predicted tokens, scattered from the K slots."""
  w = np.zeros(out[f'{field}_ids'].shape, np.float32)
  np.add.at(w, (np.arange(B)[:, None], out[f'mlm_{field}_positions']), out[f'mlm_{field}_weights'])
  return w


def _rate(chosen, where):
  return chosen[where].mean(), where.sum()


def _check_rate(chosen, where, p):
  rate, n = _rate(chosen, where)
  sigma = np.sqrt(p * (1 - p) / n)
  assert abs(rate - p) < 5 * sigma + 1e-9, (rate, p, n)


@pytest.mark.parametrize('ke', [True, False])
def test_selection_rates_and_specials(ke):
  cfg = _cfg(keyword_enhancement=ke, mlm_prob=0.15, keyword_prob=0.6)
  batch = _batch()
  out = _mask(batch, cfg)
  for field in ('query', 'title'):
    ids, mask, kw = batch[f'{field}_ids'], batch[f'{field}_mask'], batch[f'{field}_keyword']
    slots = out[f'mlm_{field}_weights']
    assert slots.dtype == np.float32 and set(np.unique(slots)) <= {0.0, 1.0}
    positions = out[f'mlm_{field}_positions']
    np.testing.assert_array_equal(out[f'mlm_{field}_labels'], np.take_along_axis(ids, positions, 1))
    np.testing.assert_array_equal(out[f'{field}_clean_ids'], ids)
    w = _chosen(out, field)
    assert set(np.unique(w)) <= {0.0, 1.0}  # No position sits in two used slots.
    special = (ids == PAD) | (ids == CLS) | (ids == SEP) | (mask == 0)
    assert not w[special].any(), 'a [PAD]/[CLS]/[SEP] token was chosen'
    chosen = w > 0
    plain = (~special) & (kw == 0)
    keyword = (~special) & (kw > 0)
    _check_rate(chosen, plain, 0.15)
    _check_rate(chosen, keyword, 0.6 if ke else 0.15)
    # Tokens not chosen are left as they were.
    np.testing.assert_array_equal(out[f'{field}_ids'][~chosen], ids[~chosen])


def test_80_10_10_replacement():
  cfg = _cfg(mlm_prob=0.5, keyword_enhancement=False)
  batch = _batch(1)
  out = _mask(batch, cfg)
  chosen = _chosen(out, 'title') > 0
  new, old = out['title_ids'][chosen], batch['title_ids'][chosen]
  n = chosen.sum()
  to_mask = new == MASK
  kept = (new == old) & ~to_mask
  rand = ~to_mask & ~kept
  for share, p in ((to_mask.mean(), 0.8), (rand.mean(), 0.1 * (1 - 1 / V))):
    assert abs(share - p) < 5 * np.sqrt(p * (1 - p) / n), (share, p)
  assert ((new[rand] >= 0) & (new[rand] < V)).all()


def test_region_mask_rate_and_missing_images():
  cfg = _cfg(mpm_prob=0.3)
  batch = _batch(2)
  out = _mask(batch, cfg)
  m = out['mpm_mask']
  assert m.shape == (B, R) and m.dtype == np.float32
  assert not m[batch['image_missing']].any()
  present = np.broadcast_to(~batch['image_missing'][:, None], m.shape)
  _check_rate(m > 0, present, 0.3)


def test_deterministic_per_key_and_different_across_keys():
  batch = _batch(3)
  a, b, c = _mask(batch, _cfg(), 0), _mask(batch, _cfg(), 0), _mask(batch, _cfg(), 1)
  np.testing.assert_array_equal(a['title_ids'], b['title_ids'])
  assert (a['title_ids'] != c['title_ids']).any()


def test_bad_input_is_a_clear_error():
  batch = _batch()
  with pytest.raises(ValueError, match='mlm_prob=1.5'):
    _mask(batch, _cfg(mlm_prob=1.5))
  with pytest.raises(ValueError, match='exceeds 1'):
    _mask(batch, _cfg(mask_token_prob=0.8, random_token_prob=0.3))
  no_kw = {k: v for k, v in batch.items() if k != 'title_keyword'}
  with pytest.raises(ValueError, match="no 'title_keyword'"):
    _mask(no_kw, _cfg(keyword_enhancement=True))
  out = _mask(no_kw, _cfg(keyword_enhancement=False))  # KE off: keywords are not needed.
  assert out['mlm_title_weights'].shape == (B, mlm_max_predictions(LT, 0.15))


def test_at_most_k_tokens_are_predicted_and_the_rest_counted():
  """Every candidate a keyword at probability 1: each sequence is chosen whole, K are kept."""
  cfg = _cfg(
    keyword_enhancement=True,
    keyword_prob=1.0,
    mlm_prob=0.15,
    mask_token_prob=1.0,
    random_token_prob=0.0,
  )
  batch = _batch(4)
  for field in ('query', 'title'):
    ids = batch[f'{field}_ids']
    batch[f'{field}_keyword'] = ((ids != PAD) & (ids != CLS) & (ids != SEP)).astype(np.int32)
  out = _mask(batch, cfg)
  for field, length in (('query', LQ), ('title', LT)):
    k = mlm_max_predictions(length, 0.15)
    assert 1 <= k < length - 2  # The rule: mean + 4 sd of Binomial(L - 2, 0.15), clipped.
    ids = batch[f'{field}_ids']
    n = batch[f'{field}_keyword'].sum(1)
    w = out[f'mlm_{field}_weights']
    assert w.shape == (B, k) and out[f'mlm_{field}_positions'].shape == (B, k)
    np.testing.assert_array_equal(w.sum(1), np.minimum(n, k))
    np.testing.assert_array_equal(out[f'mlm_{field}_capped'], n - np.minimum(n, k))
    assert (n > k).any()  # The cap binds for long sequences here.
    # Exactly the kept tokens are masked (mask_token_prob 1); the capped ones stay as they were.
    chosen = _chosen(out, field) > 0
    np.testing.assert_array_equal(out[f'{field}_ids'] == MASK, chosen)
    np.testing.assert_array_equal(out[f'{field}_ids'][~chosen], ids[~chosen])
    # Used slots hold distinct ascending positions; unused slots point at 0 with weight 0.
    pos = out[f'mlm_{field}_positions']
    used = w > 0
    assert (np.diff(np.where(used, pos, length), axis=1) > 0)[used[:, 1:]].all()
    assert (pos[~used] == 0).all()
  # The kept subset is uniform: late positions of a long title are kept as often as early.
  long = batch['title_keyword'].sum(1) >= 25
  chosen = _chosen(out, 'title')[long]
  assert abs(chosen[:, 1:6].mean() - chosen[:, 20:25].mean()) < 0.1
