"""Pre-training heads (SPEC 4): MLM (tied to the word embeddings), MPM regression, MPM_R."""

from collections.abc import Callable

import flax.linen as nn
import jax

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


class MlmHead(nn.Module):
  """Logits over the vocabulary: transform, then the (tied) word embeddings, plus a bias."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, x: jax.Array, attend: Callable[[jax.Array], jax.Array]) -> jax.Array:
    """x [B, L, H] -> logits [B, L, V] (float32); `attend` multiplies by the embedding table."""
    h = _Transform(self.cfg, name='transform')(x)
    bias = self.param(
      'bias', partitioned(ZEROS_INIT, ('vocab',)), (self.cfg.vocab_size,), self.cfg.params_dtype
    )
    logits = attend(h).astype('float32') + bias
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
    return constrain(out.astype('float32'), ('act_batch', 'act_regions', 'act_embed'))
