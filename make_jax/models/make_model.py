"""MakeModel: query encoder, product encoder with Modal Adaptation, and the pre-training heads.

SPEC 3 and contract 4. One forward pass over a (masked) training batch gives every output
the losses need: the L2-normalised query and product embeddings, the modal weights
(a_title, a_image), MLM logits, MPM / MPM_R predictions and targets, and the temperatures.

Retrieval embeddings (QPM, QPC) come, by default, from a pass over the *unmasked* query,
title and image regions, and MLM / MPM / MPM_R from the masked pass (as contrastive
vision-language pre-training usually separates them): a short query whose only keyword
is masked would otherwise be unmatchable. The ResNet runs once for both passes.

Modal Adaptation (this project's reading of MAKE): `fusion_layers` transformer layers attend
over [title tokens; image tokens] (each with a modality embedding); a gate MLP on the fused
title and image [CLS] vectors gives (a_title, a_image) = softmax(g(h_title, h_image)); the
product embedding is normalize(a_title * proj_t(h_title) + a_image * proj_i(h_image)).
MA off: no fusion, fixed (0.5, 0.5). An image-missing product gets (1, 0) exactly, its image
keys are masked out of fusion, and its embedding is proj_t(h_title) alone, so it does not
depend on the pixels at all. h_title is the [CLS] output or, with `model.pooling='mean'`,
the mean of the title's token outputs (how sentence-transformers checkpoints pool).

A pretrained start (SPEC 8, configs/finetune.py) loses nothing: `fusion_feeds_embedding=
False` mixes the encoders' own pooled vectors (the fusion only sets the gate), the text
projections start as the identity and the image projection at zero
(`projection_init='identity'`), and the gate at a_image = `initial_image_weight`. At step
0 the query and product embeddings are then the imported checkpoint's own. With loss
`qpm_image` on, a matching head gives the image tower a retrieval loss of its own
(`image_emb`); `image_from_match_head` then makes the product embedding's image part that
head's vector times a learned scale starting at 0 (no separate image projection), so what
the head learns reaches the mixed embedding at once rather than through a projection that
grows from zero under a small image weight.

`product_image=False` is the text-only two-tower (the CLIP-style baseline): the product tower
is the title encoder alone, normalize(proj_t(title [CLS])), with weights (1, 0) for every
product. The image encoder, fusion, gate, image projection and the MPM / MPM_R heads and
temperature are never created, the image inputs are accepted and ignored (the towers keep
their signatures), and the outputs have no `mpm_*` keys, so a loss that needs them cannot
be configured (`ModelConfig.from_config` refuses it).
"""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from make_jax.models.heads import MlmHead, RegionHead, mlm_max_predictions
from make_jax.models.image_encoder import ImageEncoder
from make_jax.models.layers import ZEROS_INIT, dense, identity_init, weight_init
from make_jax.models.model_config import ModelConfig, at_least_float32
from make_jax.models.transformer import TextEncoder, TransformerStack, pool
from make_jax.parallel.partitioning import constrain, partitioned

OUTPUT_KEYS = (
  'query_emb',
  'product_emb',
  'modal_weights',
  'mlm_query_logits',
  'mlm_title_logits',
  'mpm_pred',
  'mpm_r_pred',
  'mpm_target',
  'qpm_temperature',  # Only with cfg.loss.qpm_learn_temperature (else the loss's constant).
  'mpm_r_tau',
)
# Only with loss.weights.qpm_image > 0: the image tower alone through its matching head.
IMAGE_MATCH_KEY = 'image_emb'
# The outputs that need the product image: absent with model.product_image=False.
IMAGE_OUTPUT_KEYS = ('mpm_pred', 'mpm_r_pred', 'mpm_target', 'mpm_r_tau')


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """x / max(||x||, eps) along the last axis, in float32 (float64 stays float64)."""
  x = x.astype(at_least_float32(x.dtype))
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


class MakeModel(nn.Module):
  """The three encoders, Modal Adaptation, and the MLM / MPM / MPM_R heads."""

  cfg: ModelConfig

  def setup(self):
    cfg = self.cfg
    image = cfg.product_image  # False: the text-only product tower; no image module exists.
    self.query_encoder = TextEncoder(cfg, name='query_encoder')
    self.title_encoder = TextEncoder(cfg, name='title_encoder')
    if image:
      self.image_encoder = ImageEncoder(cfg, name='image_encoder')
    # A pretrained start (projection_init='identity'): the text projections pass the pooled
    # vectors through unchanged and the image projection starts at zero, so at step 0 the
    # embeddings are the checkpoint's own and an untrained image tower adds nothing.
    identity = cfg.projection_init == 'identity'
    text_init = identity_init if identity else None
    proj = lambda name, init=text_init: dense(
      cfg, cfg.embed_dim, ('embed', 'mlp'), name, kernel_init=init
    )
    self.query_proj = proj('query_proj')
    self.title_proj = proj('title_proj')
    if image:
      # The image tower's own matching head (loss qpm_image): a signal that trains the image
      # tower by itself, whatever weight Modal Adaptation gives the image.
      if cfg.image_match_head:
        self.image_match_proj = proj('image_match_proj', None)
      if cfg.image_from_match_head:
        # The mixed embedding's image part is the matching head's vector (trained by
        # qpm_image to sit where its queries are) times a learned scale that starts at 0,
        # so the start still loses nothing.
        self.image_scale = self.param('image_scale', nn.initializers.zeros, (), jnp.float32)
      else:
        self.image_proj = proj('image_proj', ZEROS_INIT if identity else None)
    if image and cfg.modal_adaptation:
      self.modality_embeddings = self.param(
        'modality_embeddings',
        partitioned(weight_init(cfg), ('modalities', 'embed')),
        (2, cfg.hidden_size),
        cfg.params_dtype,
      )
      self.fusion = TransformerStack(cfg, cfg.fusion_layers, name='fusion')
      self.gate_hidden = dense(cfg, cfg.hidden_size, ('embed', 'mlp'), 'gate_hidden')
      gate_init = {}
      if cfg.initial_image_weight != -1.0:
        # Every product starts at (1 - w, w): zero kernel, bias (0, logit w); learned from there.
        w = cfg.initial_image_weight
        gate_init = dict(
          kernel_init=ZEROS_INIT,
          bias_init=nn.initializers.constant(np.array([0.0, math.log(w / (1.0 - w))])),
        )
      self.gate_out = dense(cfg, 2, ('mlp', 'modalities'), 'gate_out', **gate_init)
    self.mlm_query_head = MlmHead(cfg, name='mlm_query_head')
    self.mlm_title_head = MlmHead(cfg, name='mlm_title_head')
    if image:
      self.mpm_head = RegionHead(cfg, cfg.hidden_size, name='mpm_head')
      self.mpm_r_head = RegionHead(cfg, cfg.hidden_size, name='mpm_r_head')
    # The model owns only the trainable temperatures (a fixed QPM temperature and the QPC
    # constants are read from cfg.loss by the losses). Stored as logs so that exp() keeps
    # them positive under any update.
    if cfg.qpm_learn_temperature:
      self.log_qpm_temperature = self.param(
        'log_qpm_temperature', nn.initializers.constant(math.log(cfg.qpm_temperature)), ()
      )
    if image:
      self.log_mpm_r_tau = self.param(
        'log_mpm_r_tau', nn.initializers.constant(math.log(cfg.mpm_r_tau)), ()
      )

  # --- Encoders ----------------------------------------------------------------------------

  def encode_query(
    self, query_ids: jax.Array, query_mask: jax.Array, *, train: bool = False
  ) -> jax.Array:
    """Query embeddings [B, d] (L2-normalised, float32) from token ids and mask [B, Lq]."""
    tokens = self.query_encoder(query_ids, query_mask, train=train)
    return l2_normalize(self.query_proj(pool(tokens, query_mask, self.cfg.pooling)))

  def encode_product(
    self,
    title_ids: jax.Array,
    title_mask: jax.Array,
    image: jax.Array,
    image_missing: jax.Array,
    *,
    train: bool = False,
  ) -> tuple[jax.Array, jax.Array]:
    """Product embeddings [B, d] (L2-normalised, float32) and modal weights [B, 2].

    With `product_image=False` the image inputs are ignored (the signature stays the same
    for every caller: export, serving, evaluation).
    """
    title = self.title_encoder(title_ids, title_mask, train=train)
    if not self.cfg.product_image:
      return self._title_only(title, title_mask)
    img = self.image_encoder(image, None, train=train).tokens
    return self._fuse(title, title_mask, img, image_missing, train)

  def _title_only(self, title, title_mask):
    """The text-only product tower: normalize(proj_t(pooled title)), weights (1, 0)."""
    emb = l2_normalize(self.title_proj(pool(title, title_mask, self.cfg.pooling)))
    weights = jnp.broadcast_to(jnp.array([1.0, 0.0], jnp.float32), (title.shape[0], 2))
    return constrain(emb, ('act_batch', 'act_embed')), weights

  def _fuse(self, title, title_mask, img, image_missing, train):
    """Modal Adaptation over title and image token outputs -> (embedding, modal weights)."""
    cfg = self.cfg
    missing = jnp.asarray(image_missing).astype(bool)
    if missing.shape != (title.shape[0],):
      raise ValueError(f'image_missing must be [{title.shape[0]}]; got {missing.shape}')
    if cfg.modal_adaptation:
      seq = jnp.concatenate(
        [
          title + self.modality_embeddings[0].astype(title.dtype),
          img + self.modality_embeddings[1].astype(img.dtype),
        ],
        axis=1,
      )
      # Image keys are masked out of fusion for image-missing products.
      img_mask = jnp.broadcast_to(~missing[:, None], img.shape[:2]).astype(jnp.int32)
      fused = self.fusion(seq, jnp.concatenate([title_mask, img_mask], axis=1), train=train)
      length = title.shape[1]
      g_title, g_image = pool(fused[:, :length], title_mask, cfg.pooling), fused[:, length]
      g = self.gate_out(nn.gelu(self.gate_hidden(jnp.concatenate([g_title, g_image], -1))))
      weights = jax.nn.softmax(g.astype(cfg.output_dtype), axis=-1)
      if cfg.fusion_feeds_embedding:
        h_title, h_image = g_title, g_image
      else:  # The fusion sets the weights only; the encoders' own vectors are mixed.
        h_title, h_image = pool(title, title_mask, cfg.pooling), img[:, 0]
    else:
      h_title, h_image = pool(title, title_mask, cfg.pooling), img[:, 0]
      weights = jnp.full((title.shape[0], 2), 0.5, jnp.float32)
    weights = jnp.where(missing[:, None], jnp.array([1.0, 0.0]), weights)
    p_title = self.title_proj(h_title).astype(cfg.output_dtype)
    if cfg.image_from_match_head:
      p_image = self.image_scale * self.image_match_proj(h_image).astype(cfg.output_dtype)
    else:
      p_image = self.image_proj(h_image).astype(cfg.output_dtype)
    # `where`, not a product with a_image = 0, so nothing of the image reaches the embedding.
    mixed = jnp.where(
      missing[:, None], p_title, weights[:, :1] * p_title + weights[:, 1:] * p_image
    )
    return constrain(l2_normalize(mixed), ('act_batch', 'act_embed')), weights

  # --- Training forward pass ---------------------------------------------------------------

  @staticmethod
  def _encode_text(encoder, batch, field, clean, *, train, pack):
    """(masked, clean) token outputs of `field` ('query' / 'title'); clean is masked when
    `clean` is False. Without packing both passes are one call over the stacked ids."""
    ids, mask = batch[f'{field}_ids'], batch[f'{field}_mask']
    if not clean:
      out = encoder(ids, mask, train=train, pack=pack)
      return out, out
    clean_ids = batch[f'{field}_clean_ids']
    if pack is not None:
      return (
        encoder(ids, mask, train=train, pack=pack),
        encoder(clean_ids, mask, train=train, pack=pack),
      )
    both = encoder(jnp.concatenate([ids, clean_ids]), jnp.concatenate([mask, mask]), train=train)
    b = ids.shape[0]
    return both[:b], both[b:]

  def __call__(self, batch: dict[str, Any], *, train: bool = False) -> dict[str, jax.Array]:
    """All outputs of contract 4 for a masked batch of contract 3 (`train/masking.py`).

    The batch's *_ids are the masked MLM inputs, mlm_*_positions [B, K] the positions whose
    tokens are predicted (MLM logits are computed there only) and mpm_mask (optional) the
    masked regions.
    With `retrieval_from_unmasked` the retrieval pass reads `query_clean_ids` and
    `title_clean_ids`, which masking emits; a batch without them is an error, never a
    silent fall-back to the masked ids.
    """
    cfg = self.cfg
    required = ['query_ids', 'query_mask', 'title_ids', 'title_mask']
    if cfg.product_image:
      required += ['image', 'image_missing']
    required += ['mlm_query_positions', 'mlm_title_positions']
    if cfg.retrieval_from_unmasked:
      required += ['query_clean_ids', 'title_clean_ids']
    for key in required:
      if key not in batch:
        raise ValueError(
          f'batch is missing {key!r}; it has {sorted(batch)} (the model takes a batch masked '
          'by make_jax/train/masking.mask_batch; model.retrieval_from_unmasked needs the '
          'clean ids it emits)'
        )
    # Masked pass (MLM / MPM inputs) and, with `retrieval_from_unmasked`, the retrieval pass
    # over the unmasked ids: one encoder call over both halves (twice the batch, half the
    # kernels; dropout draws one mask for the pair). Packed rows (make_jax/input/packing.py)
    # where the batch carries packing indices: a call per pass.
    q_pack, t_pack = batch.get('query_pack'), batch.get('title_pack')
    clean = cfg.retrieval_from_unmasked
    query, query_clean = self._encode_text(
      self.query_encoder, batch, 'query', clean, train=train, pack=q_pack
    )
    title, title_clean = self._encode_text(
      self.title_encoder, batch, 'title', clean, train=train, pack=t_pack
    )
    image = None
    if cfg.product_image:  # The ResNet runs once for both passes.
      image = self.image_encoder(
        batch['image'],
        batch.get('mpm_mask'),
        train=train,
        with_unmasked=cfg.retrieval_from_unmasked,
      )
    query_emb = l2_normalize(self.query_proj(pool(query_clean, batch['query_mask'], cfg.pooling)))
    if image is None:
      product_emb, weights = self._title_only(title_clean, batch['title_mask'])
    else:
      img_clean = image.unmasked_tokens if cfg.retrieval_from_unmasked else image.tokens
      product_emb, weights = self._fuse(
        title_clean, batch['title_mask'], img_clean, batch['image_missing'], train
      )
    out = {
      'query_emb': query_emb,
      'product_emb': product_emb,
      'modal_weights': weights,
      # Logits only where masking chose a token: [B, K, V] at the batch's positions.
      'mlm_query_logits': self.mlm_query_head(
        query, batch['mlm_query_positions'], self.query_encoder.attend
      ),
      'mlm_title_logits': self.mlm_title_head(
        title, batch['mlm_title_positions'], self.title_encoder.attend
      ),
    }
    if image is not None:
      regions = image.tokens[:, 1:]
      out['mpm_pred'] = self.mpm_head(regions)
      out['mpm_r_pred'] = self.mpm_r_head(regions)
      # Targets carry gradient here; the MPM losses apply cfg.loss.mpm_stop_gradient_target.
      out['mpm_target'] = image.regions.astype(cfg.output_dtype)
      out['mpm_r_tau'] = jnp.exp(self.log_mpm_r_tau)
      if cfg.image_match_head:  # The image tower alone, through its own matching head.
        out[IMAGE_MATCH_KEY] = l2_normalize(self.image_match_proj(img_clean[:, 0]))
    if cfg.qpm_learn_temperature:
      out['qpm_temperature'] = jnp.exp(self.log_qpm_temperature)
    return out


def build_model(config: ml_collections.ConfigDict) -> MakeModel:
  """The model of a full config (configs/*.py)."""
  return MakeModel(ModelConfig.from_config(config))


def example_batch(config: ml_collections.ConfigDict, batch_size: int) -> dict[str, np.ndarray]:
  """A zero batch with the shapes and dtypes of a masked batch (contract 3) for `config`."""
  lq, lt, s = config.text.query_len, config.text.title_len, config.data.image_size
  regions = config.model.image_grid**2
  kq, kt = (mlm_max_predictions(n, config.masking.mlm_prob) for n in (lq, lt))
  i32 = lambda *shape: np.zeros(shape, np.int32)
  return {
    'mlm_query_positions': i32(batch_size, kq),
    'mlm_query_labels': i32(batch_size, kq),
    'mlm_query_weights': np.zeros((batch_size, kq), np.float32),
    'mlm_title_positions': i32(batch_size, kt),
    'mlm_title_labels': i32(batch_size, kt),
    'mlm_title_weights': np.zeros((batch_size, kt), np.float32),
    'query_ids': i32(batch_size, lq),
    'query_clean_ids': i32(batch_size, lq),
    'query_mask': np.ones((batch_size, lq), np.int32),
    'query_keyword': i32(batch_size, lq),
    'title_ids': i32(batch_size, lt),
    'title_clean_ids': i32(batch_size, lt),
    'title_mask': np.ones((batch_size, lt), np.int32),
    'title_keyword': i32(batch_size, lt),
    'image': np.zeros((batch_size, s, s, 3), np.uint8),
    'image_missing': np.zeros((batch_size,), bool),
    'product_id': i32(batch_size),
    'log_p': np.zeros((batch_size,), np.float32),
    'mpm_mask': np.zeros((batch_size, regions), np.float32),
  }


def init_params(model: MakeModel, rng: jax.Array, batch: dict[str, Any]) -> Any:
  """Initialises the model and returns its (unboxed) params tree.

  The logical axis names stay available through `jax.eval_shape` of `model.init`
  (see `partitioning.logical_partition_specs`).
  """
  variables = jax.jit(lambda r, b: model.init({'params': r}, b, train=False))(rng, batch)
  return nn.meta.unbox(variables)['params']
