"""BERT-layout transformer encoder shared by the query, title and image encoders (SPEC 3).

Post-LN blocks (x = LN(x + Attn(x)); x = LN(x + MLP(x))), exact erf GELU, padding masks on
the attention keys, dropout on hidden states and attention probabilities. Parameter names and
shapes are chosen so a HuggingFace BERT checkpoint maps onto them one to one
(make_jax/models/bert_import.py): query/key/value kernels are [embed, heads, kv], the
output kernel [heads, kv, embed].
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from make_jax.models.layers import ZEROS_INIT, dense, layer_norm, weight_init
from make_jax.models.model_config import ModelConfig
from make_jax.parallel.partitioning import constrain, partitioned

BATCH_LEN_EMBED = ('act_batch', 'act_len', 'act_embed')


def attention_bias(mask: jax.Array, dtype: jnp.dtype = jnp.float32) -> jax.Array:
  """Turns a [B, L] key mask (1 = attend) into an additive [B, 1, 1, L] bias.

  Masked keys get the dtype's most negative value, so their softmax weight is exactly 0.
  """
  big_neg = jnp.finfo(dtype).min
  return jnp.where(mask[:, None, None, :] > 0, 0.0, big_neg).astype(dtype)


def segment_attention_bias(segments: jax.Array, dtype: jnp.dtype = jnp.float32) -> jax.Array:
  """An additive [R, 1, L, L] bias for packed rows: segments [R, L] (0 = empty slot, s > 0 =
  the s-th text) let a token attend only to the tokens of its own text."""
  big_neg = jnp.finfo(dtype).min
  same = (segments[:, :, None] == segments[:, None, :]) & (segments[:, None, :] > 0)
  return jnp.where(same[:, None], 0.0, big_neg).astype(dtype)


def pool(tokens: jax.Array, mask: jax.Array, pooling: str) -> jax.Array:
  """One vector per sequence from token outputs [B, L, H] and their mask [B, L].

  'cls': the [CLS] output (position 0); 'mean': the mean over the real tokens ([CLS] and
  [SEP] included, as sentence-transformers pools a BERT output), in float32 (float64 stays
  float64).
  """
  if pooling == 'cls':
    return tokens[:, 0]
  if pooling != 'mean':
    raise ValueError(f'pooling={pooling!r}; expected cls or mean')
  m = mask[..., None].astype(jnp.promote_types(tokens.dtype, jnp.float32))
  return (tokens * m).sum(axis=1) / jnp.maximum(m.sum(axis=1), 1.0)


class HeadProjection(nn.Module):
  """An einsum projection with a kernel of its true rank, e.g. [embed, heads, kv].

  Replaces nn.DenseGeneral, whose initializer creates a flattened 2-D kernel and so cannot
  carry rank-3 logical names once a mesh and rules are in scope.
  """

  kernel_shape: tuple[int, ...]
  kernel_names: tuple[str, ...]
  bias_names: tuple[str, ...]
  equation: str
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  init_std: float = 0.02

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param(
      'kernel',
      partitioned(nn.initializers.normal(stddev=self.init_std), self.kernel_names),
      self.kernel_shape,
      self.param_dtype,
    )
    bias_shape = self.kernel_shape[-len(self.bias_names) :]
    bias = self.param(
      'bias', partitioned(ZEROS_INIT, self.bias_names), bias_shape, self.param_dtype
    )
    y = jnp.einsum(self.equation, x.astype(self.dtype), kernel.astype(self.dtype))
    return y + bias.astype(self.dtype)


class SelfAttention(nn.Module):
  """Multi-head self-attention with a key padding mask."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, x: jax.Array, bias: jax.Array, *, train: bool) -> jax.Array:
    cfg = self.cfg
    head_dim = cfg.hidden_size // cfg.num_heads
    kw = dict(dtype=cfg.compute_dtype, param_dtype=cfg.params_dtype, init_std=cfg.init_std)

    def proj(name: str) -> jax.Array:
      return HeadProjection(
        (cfg.hidden_size, cfg.num_heads, head_dim),
        ('embed', 'heads', 'kv'),
        ('heads', 'kv'),
        'ble,ehd->blhd',
        name=name,
        **kw,
      )(x)

    q, k, v = proj('query'), proj('key'), proj('value')
    q = constrain(q, ('act_batch', 'act_len', 'act_heads', 'act_kv'))
    # Scores and softmax in float32 whatever the compute dtype (float64 for a float64 model).
    scores = jnp.einsum('bqhd,bkhd->bhqk', q, k, preferred_element_type=cfg.output_dtype)
    scores = scores / jnp.sqrt(jnp.asarray(head_dim, scores.dtype)) + bias
    probs = jax.nn.softmax(scores, axis=-1)
    probs = nn.Dropout(cfg.dropout_rate)(probs, deterministic=not train)
    ctx = jnp.einsum('bhqk,bkhd->bqhd', probs.astype(cfg.compute_dtype), v)
    ctx = constrain(ctx, ('act_batch', 'act_len', 'act_heads', 'act_kv'))
    out = HeadProjection(
      (cfg.num_heads, head_dim, cfg.hidden_size),
      ('heads', 'kv', 'embed'),
      ('embed',),
      'blhd,hde->ble',
      name='out',
      **kw,
    )(ctx)
    return constrain(out, BATCH_LEN_EMBED)


class EncoderLayer(nn.Module):
  """One post-LN BERT block: attention, add & norm, GELU MLP, add & norm."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, x: jax.Array, bias: jax.Array, *, train: bool) -> jax.Array:
    cfg = self.cfg
    drop = nn.Dropout(cfg.dropout_rate)
    h = SelfAttention(cfg, name='attention')(x, bias, train=train)
    x = layer_norm(cfg, 'attention_ln')(x + drop(h, deterministic=not train))
    h = dense(cfg, cfg.mlp_dim, ('embed', 'mlp'), 'mlp_in')(x)
    h = constrain(nn.gelu(h, approximate=False), ('act_batch', 'act_len', 'act_mlp'))
    h = dense(cfg, cfg.hidden_size, ('mlp', 'embed'), 'mlp_out')(h)
    x = layer_norm(cfg, 'mlp_ln')(x + drop(h, deterministic=not train))
    return constrain(x, BATCH_LEN_EMBED)


class TransformerStack(nn.Module):
  """`num_layers` encoder layers over already-embedded inputs x [B, L, H] with mask [B, L]."""

  cfg: ModelConfig
  num_layers: int

  @nn.compact
  def __call__(
    self, x: jax.Array, mask: jax.Array, *, train: bool, bias: jax.Array | None = None
  ) -> jax.Array:
    """`bias` (e.g. `segment_attention_bias`) replaces the key-padding bias of `mask`."""
    if bias is None:
      bias = attention_bias(mask)
    for i in range(self.num_layers):
      x = EncoderLayer(self.cfg, name=f'layer_{i}')(x, bias, train=train)
    return x


class TextEncoder(nn.Module):
  """BERT text encoder: word + position + type embeddings, LayerNorm, dropout, the stack.

  Returns the token outputs [B, L, H]; `pool` makes them one vector (the [CLS] output, or
  the mean of the real tokens, by `model.pooling`).
  `embed_tokens` exposes the word-embedding table for the tied MLM head.
  """

  cfg: ModelConfig

  def setup(self):
    cfg = self.cfg
    embed = lambda n, names, name: nn.Embed(
      n,
      cfg.hidden_size,
      dtype=cfg.compute_dtype,
      param_dtype=cfg.params_dtype,
      embedding_init=partitioned(weight_init(cfg), names),
      name=name,
    )
    self.word_embeddings = embed(cfg.vocab_size, ('vocab', 'embed'), 'word_embeddings')
    self.position_embeddings = embed(cfg.max_position, ('position', 'embed'), 'position_embeddings')
    self.type_embeddings = embed(cfg.type_vocab_size, ('token_type', 'embed'), 'type_embeddings')
    self.embeddings_ln = layer_norm(cfg, 'embeddings_ln')
    self.dropout = nn.Dropout(cfg.dropout_rate)
    self.stack = TransformerStack(cfg, cfg.num_layers, name='stack')

  def __call__(
    self,
    ids: jax.Array,
    mask: jax.Array,
    *,
    train: bool = False,
    pack: jax.Array | None = None,
  ) -> jax.Array:
    """Encodes token ids [B, L] (mask [B, L], 1 = real token) into [B, L, H].

    With `pack` [R, L] (make_jax/input/packing.py: slot -> flat index b * L + l, -1 empty)
    the real tokens are encoded in R packed rows, each attending to its own text only and
    at its own position l, and the outputs come back to [B, L, H]: a real token's output
    is the unpacked one (padding positions hold arbitrary values; every consumer masks
    them). Dropout draws differ between the two layouts.
    """
    length = ids.shape[-1]
    if length > self.cfg.max_position:
      raise ValueError(
        f'sequence length {length} exceeds model.max_position={self.cfg.max_position}'
      )
    if pack is None:
      positions = jnp.arange(length)[None]
    else:
      if pack.ndim != 2 or pack.shape[1] != length:
        raise ValueError(f'pack must be [R, {length}] for ids {ids.shape}; got {pack.shape}')
      valid = pack >= 0
      flat = jnp.where(valid, pack, 0)
      ids = jnp.where(valid, ids.reshape(-1)[flat], 0)
      positions = flat % length
      segments = jnp.where(valid, flat // length + 1, 0)
    x = self.word_embeddings(ids)
    x = x + self.position_embeddings(positions)
    x = x + self.type_embeddings(jnp.zeros_like(ids))  # Single-segment inputs: type 0.
    x = self.dropout(self.embeddings_ln(x), deterministic=not train)
    x = constrain(x, BATCH_LEN_EMBED)
    if pack is None:
      return self.stack(x, mask, train=train)
    x = self.stack(x, valid, train=train, bias=segment_attention_bias(segments))
    # Back to [B, L]: each real token from its slot (scatter the slot numbers by token);
    # padding positions read slot 0.
    total = mask.shape[0] * length
    slot_of = (
      jnp.zeros((total,), jnp.int32)
      .at[jnp.where(valid, pack, total).reshape(-1)]
      .set(jnp.arange(pack.size, dtype=jnp.int32), mode='drop')
    )
    out = x.reshape(pack.size, -1)[slot_of]
    return constrain(out.reshape(*mask.shape, -1), BATCH_LEN_EMBED)

  def attend(self, x: jax.Array) -> jax.Array:
    """Logits against the word-embedding table (weight tying for the MLM head)."""
    return self.word_embeddings.attend(x)
