"""Masking for MLM and MPM / MPM_R, with Keyword Enhancement (SPEC sections 3 and 4; contract 3).

MLM: each real token other than [CLS]/[SEP]/[PAD] is chosen for prediction with probability
`mlm_prob`; with Keyword Enhancement on, keyword tokens (query words that also occur in the
clicked product's title or attribute values, marked by the pipeline in *_keyword) are chosen
with `keyword_prob` instead. Chosen tokens follow BERT's 80/10/10 rule: [MASK], a random
token, or unchanged (ratios configurable). MPM: each of the R image regions is masked with
`mpm_prob`; never for an image-missing product (it has no image to reconstruct).

Pure jax.numpy and jit-able: `cfg` and the special ids are Python constants.
"""

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections


def _check_cfg(cfg: ml_collections.ConfigDict) -> None:
  for name in ('mlm_prob', 'keyword_prob', 'mask_token_prob', 'random_token_prob', 'mpm_prob'):
    value = cfg[name]
    if not 0.0 <= value <= 1.0:
      raise ValueError(f'masking.{name}={value} must be in [0, 1]')
  if cfg.mask_token_prob + cfg.random_token_prob > 1.0:
    raise ValueError(
      f'masking.mask_token_prob + masking.random_token_prob = '
      f'{cfg.mask_token_prob + cfg.random_token_prob} exceeds 1'
    )


def mask_tokens(
  rng: jax.Array,
  ids: jax.Array,
  mask: jax.Array,
  keyword: jax.Array | None,
  cfg: ml_collections.ConfigDict,
  *,
  special_ids: tuple[int, ...],
  mask_id: int,
  vocab_size: int,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """BERT masking of one token field.

  Args:
    rng: PRNG key.
    ids: int32 [B, L] token ids.
    mask: int32 [B, L], 1 for real tokens.
    keyword: int32 [B, L], 1 for keyword tokens, or None (no keywords).
    cfg: the `masking` config section.
    special_ids: ids never chosen ([PAD], [CLS], [SEP]).
    mask_id: the [MASK] id.
    vocab_size: random replacements are drawn from [0, vocab_size).

  Returns:
    (masked ids [B, L] int32, labels [B, L] int32 = the original ids, weights [B, L] float32
    with 1.0 where a token is to be predicted).
  """
  if ids.shape != mask.shape:
    raise ValueError(f'token ids {ids.shape} and mask {mask.shape} differ in shape')
  ids = ids.astype(jnp.int32)
  candidate = mask > 0
  for sid in special_ids:
    candidate &= ids != sid
  prob = jnp.full(ids.shape, cfg.mlm_prob, jnp.float32)
  if cfg.keyword_enhancement and keyword is not None:
    if keyword.shape != ids.shape:
      raise ValueError(f'keyword marks {keyword.shape} and token ids {ids.shape} differ in shape')
    prob = jnp.where(keyword > 0, cfg.keyword_prob, prob)
  k_choose, k_kind, k_random = jax.random.split(rng, 3)
  chosen = candidate & (jax.random.uniform(k_choose, ids.shape) < prob)
  kind = jax.random.uniform(k_kind, ids.shape)
  random_ids = jax.random.randint(k_random, ids.shape, 0, vocab_size, jnp.int32)
  to_mask = chosen & (kind < cfg.mask_token_prob)
  to_random = chosen & ~to_mask & (kind < cfg.mask_token_prob + cfg.random_token_prob)
  masked = jnp.where(to_mask, mask_id, jnp.where(to_random, random_ids, ids))
  return masked, ids, chosen.astype(jnp.float32)


def mask_batch(
  batch: dict[str, Any],
  rng: jax.Array,
  cfg: ml_collections.ConfigDict,
  *,
  pad_id: int,
  cls_id: int,
  sep_id: int,
  mask_id: int,
  vocab_size: int,
  num_regions: int,
) -> dict[str, Any]:
  """Returns a copy of `batch` with masked query/title ids and the MLM / MPM targets.

  Adds mlm_query_labels / mlm_query_weights [B, Lq], mlm_title_labels / mlm_title_weights
  [B, Lt] and mpm_mask [B, R] float32 (1.0 = region masked), replaces query_ids and
  title_ids by the masked inputs and keeps the originals as query_clean_ids and
  title_clean_ids (the model's retrieval pass reads them). With Keyword Enhancement on, the batch must carry
  query_keyword and title_keyword.
  """
  _check_cfg(cfg)
  for key in ('query_ids', 'query_mask', 'title_ids', 'title_mask', 'image_missing'):
    if key not in batch:
      raise ValueError(f'batch is missing {key!r}; it has {sorted(batch)}')
  if cfg.keyword_enhancement:
    for key in ('query_keyword', 'title_keyword'):
      if key not in batch:
        raise ValueError(
          f'masking.keyword_enhancement is on but the batch has no {key!r} '
          '(turn it off or have the pipeline mark keywords)'
        )
  special = (pad_id, cls_id, sep_id)
  k_query, k_title, k_region = jax.random.split(rng, 3)
  out = dict(batch)
  for field, key in (('query', k_query), ('title', k_title)):
    ids, labels, weights = mask_tokens(
      key,
      batch[f'{field}_ids'],
      batch[f'{field}_mask'],
      batch.get(f'{field}_keyword'),
      cfg,
      special_ids=special,
      mask_id=mask_id,
      vocab_size=vocab_size,
    )
    out[f'{field}_ids'] = ids
    out[f'{field}_clean_ids'] = labels
    out[f'mlm_{field}_labels'] = labels
    out[f'mlm_{field}_weights'] = weights
  missing = jnp.asarray(batch['image_missing']).astype(bool)
  regions = jax.random.uniform(k_region, (missing.shape[0], num_regions)) < cfg.mpm_prob
  out['mpm_mask'] = (regions & ~missing[:, None]).astype(jnp.float32)
  return out


def mask_batch_by_example(
  batch: dict[str, Any],
  rng: jax.Array,
  cfg: ml_collections.ConfigDict,
  *,
  row_offset: int | jax.Array = 0,
  **ids: int,
) -> dict[str, Any]:
  """`mask_batch` with one key per example: row r uses fold_in(rng, row_offset + r).

  Why: an example's masks then depend on its position in the *global* batch, not on how
  that batch is split over devices, so a data-parallel step (each device passing
  `row_offset = device index * per-device batch`) masks exactly what one device holding
  the global batch would. `ids` are `mask_batch`'s keyword arguments.
  """
  n = jnp.asarray(batch['image_missing']).shape[0]
  keys = jax.vmap(lambda r: jax.random.fold_in(rng, r))(row_offset + jnp.arange(n))

  def one(key, row):
    out = mask_batch(jax.tree.map(lambda x: x[None], row), key, cfg, **ids)
    return jax.tree.map(lambda x: x[0], out)

  return jax.vmap(one)(keys, dict(batch))
