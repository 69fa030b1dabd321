"""MLM / MPM masking with Keyword Enhancement (contract 3): rates, specials, 80/10/10, jit."""

import jax
import numpy as np
import pytest

from configs import base
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
    w = out[f'mlm_{field}_weights']
    assert w.dtype == np.float32 and set(np.unique(w)) <= {0.0, 1.0}
    np.testing.assert_array_equal(out[f'mlm_{field}_labels'], ids)
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
  chosen = out['mlm_title_weights'] > 0
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
  assert out['mlm_title_weights'].shape == (B, LT)
