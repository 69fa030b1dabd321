"""Pre-training heads (SPEC 4): MLM (tied to the word embeddings), MPM regression, MPM_R.

The MLM head projects only the positions where a token is predicted: masking lists them,
K per sequence (`mlm_max_predictions`), and the head gathers those K token outputs before
the transform and the [*, V] vocabulary projection. Computing logits for every position
would spend most of the head's FLOPs (a quarter of a base step's) on positions whose loss
weight is 0; the gathered loss and its gradients equal the full head's on the same masks.
"""

import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from make_jax.models.layers import ZEROS_INIT, dense, layer_norm
from make_jax.models.model_config import ModelConfig
from make_jax.parallel.partitioning import constrain, partitioned


class _Transform(nn.Module):
  """BERT's head transform: dense, exact GELU, LayerNorm."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.cfg
    x = dense(cfg, cfg.hidden_size, ('embed', 'mlp'), 'dense')(x)
    return layer_norm(cfg, 'ln')(nn.gelu(x, approximate=False))


def mlm_max_predictions(length: int, mlm_prob: float) -> int:
  """K: the predicted-token slots of a sequence of `length` tokens (static; masking caps at K).

  The rule: n = length - 2 candidates ([CLS] and [SEP] are never predicted), each chosen
  with `mlm_prob`; K = ceil(n p + 4 sqrt(n p (1 - p))), the mean of that binomial count plus
  four standard deviations, clipped to [1, n] (at least one slot so shapes are never empty).
  Keywords, chosen with the higher `keyword_prob` under Keyword Enhancement, can push a
  sequence past K: masking then keeps a uniformly random K of its chosen tokens and counts
  the others (the step's `mlm_capped_tokens` metric), so masking and head always agree.
  """
  if not 0.0 <= mlm_prob <= 1.0:
    raise ValueError(f'masking.mlm_prob={mlm_prob} must be in [0, 1]')
  n = max(int(length) - 2, 0)
  k = math.ceil(n * mlm_prob + 4.0 * math.sqrt(n * mlm_prob * (1.0 - mlm_prob)))
  return max(1, min(n, k))


def gather_positions(x: jax.Array, positions: jax.Array) -> jax.Array:
  """x [B, L, H] at positions [B, K] (int, in [0, L)) -> [B, K, H]."""
  if positions.ndim != 2 or positions.shape[0] != x.shape[0]:
    raise ValueError(
      f'MLM positions {positions.shape} must be [batch, K] for token outputs {x.shape}'
    )
  return jnp.take_along_axis(x, positions.astype(jnp.int32)[..., None], axis=1)


class MlmHead(nn.Module):
  """Logits over the vocabulary at the predicted positions: transform, then the (tied) word
  embeddings, plus a bias."""

  cfg: ModelConfig

  @nn.compact
  def __call__(
    self, x: jax.Array, positions: jax.Array, attend: Callable[[jax.Array], jax.Array]
  ) -> jax.Array:
    """x [B, L, H], positions [B, K] -> logits [B, K, V] (cfg.output_dtype: float32).

    `attend` multiplies by the embedding table. Only the K gathered positions are projected.
    """
    h = _Transform(self.cfg, name='transform')(gather_positions(x, positions))
    bias = self.param(
      'bias', partitioned(ZEROS_INIT, ('vocab',)), (self.cfg.vocab_size,), self.cfg.params_dtype
    )
    logits = attend(h).astype(self.cfg.output_dtype) + bias
    return constrain(logits, ('act_batch', 'act_len', 'act_vocab'))


class RegionHead(nn.Module):
  """Per-region prediction in the target space: transform, then a dense layer to `out_dim`.

  Used twice with separate weights: the MPM regression head and the MPM_R prediction head.
  """

  cfg: ModelConfig
  out_dim: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = _Transform(self.cfg, name='transform')(x)
    out = dense(self.cfg, self.out_dim, ('mlp', 'embed'), 'out')(h)
    return constrain(out.astype(self.cfg.output_dtype), ('act_batch', 'act_regions', 'act_embed'))
