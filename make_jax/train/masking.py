"""Masking for MLM and MPM / MPM_R, with Keyword Enhancement (SPEC sections 3 and 4; contract 3).

MLM: each real token other than [CLS]/[SEP]/[PAD] is chosen for prediction with probability
`mlm_prob`; with Keyword Enhancement on, keyword tokens (query words that also occur in the
clicked product's title or attribute values, marked by the pipeline in *_keyword) are chosen
with `keyword_prob` instead. Chosen tokens follow BERT's 80/10/10 rule: [MASK], a random
token, or unchanged (ratios configurable). At most K = `mlm_max_predictions(L, mlm_prob)`
tokens per sequence are predicted (make_jax/models/heads.py states the rule): the MLM head
projects exactly those K positions. MPM: each of the R image regions is masked with
`mpm_prob`; never for an image-missing product (it has no image to reconstruct).

Pure jax.numpy and jit-able: `cfg` and the special ids are Python constants.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

from make_jax.models.heads import mlm_max_predictions


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


class MaskedTokens(NamedTuple):
  """One masked token field; K = `mlm_max_predictions(L, cfg.mlm_prob)`.

  Attributes:
    ids: [B, L] int32 masked ids (the MLM inputs).
    clean_ids: [B, L] int32 the original ids.
    positions: [B, K] int32 positions of the predicted tokens, ascending; unused slots 0.
    labels: [B, K] int32 the original ids at `positions`.
    weights: [B, K] float32, 1.0 for a predicted token, 0.0 for an unused slot.
    capped: [B] int32 tokens chosen beyond K and left unmasked (see mlm_max_predictions).
  """

  ids: jax.Array
  clean_ids: jax.Array
  positions: jax.Array
  labels: jax.Array
  weights: jax.Array
  capped: jax.Array


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
) -> MaskedTokens:
  """BERT masking of one token field, at most K predicted tokens per sequence.

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
    The masked field (`MaskedTokens`). When more than K tokens of a sequence are chosen, a
    uniformly random K of them are kept (the others stay unchanged and unpredicted, and are
    counted in `capped`), so the MLM head's K slots always cover every predicted token.
  """
  if ids.shape != mask.shape:
    raise ValueError(f'token ids {ids.shape} and mask {mask.shape} differ in shape')
  ids = ids.astype(jnp.int32)
  length = ids.shape[-1]
  k = mlm_max_predictions(length, cfg.mlm_prob)
  candidate = mask > 0
  for sid in special_ids:
    candidate &= ids != sid
  prob = jnp.full(ids.shape, cfg.mlm_prob, jnp.float32)
  if cfg.keyword_enhancement and keyword is not None:
    if keyword.shape != ids.shape:
      raise ValueError(f'keyword marks {keyword.shape} and token ids {ids.shape} differ in shape')
    prob = jnp.where(keyword > 0, cfg.keyword_prob, prob)
  k_choose, k_kind, k_random = jax.random.split(rng, 3)
  u = jax.random.uniform(k_choose, ids.shape)
  chosen = candidate & (u < prob)
  # The cap: keep the K chosen tokens of smallest u / prob. Given that a token is chosen,
  # u / prob is uniform on [0, 1) whatever its probability, so the kept K are a uniformly
  # random subset (keywords are not favoured or disfavoured by the cap).
  score = jnp.where(chosen, u / jnp.maximum(prob, 1e-30), 2.0)
  rank = jnp.argsort(jnp.argsort(score, axis=-1, stable=True), axis=-1, stable=True)
  kept = chosen & (rank < k)
  capped = jnp.sum(chosen, axis=-1) - jnp.sum(kept, axis=-1)
  kind = jax.random.uniform(k_kind, ids.shape)
  random_ids = jax.random.randint(k_random, ids.shape, 0, vocab_size, jnp.int32)
  to_mask = kept & (kind < cfg.mask_token_prob)
  to_random = kept & ~to_mask & (kind < cfg.mask_token_prob + cfg.random_token_prob)
  masked = jnp.where(to_mask, mask_id, jnp.where(to_random, random_ids, ids))
  # Kept positions in ascending order, then unused slots (position `length`, mapped to 0).
  slots = jnp.sort(jnp.where(kept, jnp.arange(length, dtype=jnp.int32), length), axis=-1)
  slots = slots[..., :k]
  used = slots < length
  positions = jnp.where(used, slots, 0).astype(jnp.int32)
  labels = jnp.take_along_axis(ids, positions, axis=-1)
  return MaskedTokens(
    ids=masked,
    clean_ids=ids,
    positions=positions,
    labels=labels,
    weights=used.astype(jnp.float32),
    capped=capped.astype(jnp.int32),
  )


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

  Per field (query, title; L tokens, K = `mlm_max_predictions(L, cfg.mlm_prob)` slots) adds
  mlm_<field>_positions / _labels / _weights [B, K] (the predicted tokens, see
  `MaskedTokens`) and mlm_<field>_capped [B]; adds mpm_mask [B, R] float32 (1.0 = region
  masked); replaces <field>_ids by the masked inputs and keeps the originals as
  <field>_clean_ids (the model's retrieval pass reads them). With Keyword Enhancement on,
  the batch must carry query_keyword and title_keyword.
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
    tokens = mask_tokens(
      key,
      batch[f'{field}_ids'],
      batch[f'{field}_mask'],
      batch.get(f'{field}_keyword'),
      cfg,
      special_ids=special,
      mask_id=mask_id,
      vocab_size=vocab_size,
    )
    out[f'{field}_ids'] = tokens.ids
    out[f'{field}_clean_ids'] = tokens.clean_ids
    out[f'mlm_{field}_positions'] = tokens.positions
    out[f'mlm_{field}_labels'] = tokens.labels
    out[f'mlm_{field}_weights'] = tokens.weights
    out[f'mlm_{field}_capped'] = tokens.capped
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
