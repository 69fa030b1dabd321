"""Image encoder (SPEC 3): ResNet -> 4x4 grid of region features -> [CLS] + positions -> transformer.

The region features `v` (projected to the hidden size, before masking and position
embeddings) are what the image transformer is fed; they are the targets of MPM / MPM_R
(paper eq. 1: the masked patch's own input embedding is the positive). A masked region's
input is replaced by a learned [MASK] region vector. That vector is a parameter whether or not
a mask is passed, so the parameter tree does not depend on the batch used to initialise.
"""

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from make_jax.models.layers import dense, layer_norm, weight_init
from make_jax.models.model_config import ModelConfig
from make_jax.models.resnet import ResNet, adaptive_avg_pool
from make_jax.models.transformer import BATCH_LEN_EMBED, TransformerStack
from make_jax.parallel.partitioning import constrain, partitioned


class ImageEncoding(NamedTuple):
  """What the image encoder returns.

  Attributes:
    tokens: [B, 1 + R, H] transformer outputs of the (masked, when a mask is given) regions.
    regions: [B, R, H] region features v before masking: the MPM / MPM_R targets.
    unmasked_tokens: [B, 1 + R, H] outputs of the unmasked regions: `tokens` itself when no
      mask is given, the second half of one transformer call over both when one is and
      `with_unmasked` is set, and None otherwise.
  """

  tokens: jax.Array
  regions: jax.Array
  unmasked_tokens: jax.Array | None


class ImageEncoder(nn.Module):
  """Encodes uint8 images [B, S, S, 3] into tokens [B, 1 + R, H] and region features [B, R, H]."""

  cfg: ModelConfig

  @nn.compact
  def __call__(
    self,
    image: jax.Array,
    mpm_mask: jax.Array | None = None,
    *,
    train: bool = False,
    with_unmasked: bool = False,
  ) -> ImageEncoding:
    """Encodes the images, masking the regions `mpm_mask` marks.

    Args:
      image: uint8 [B, S, S, 3].
      mpm_mask: optional float [B, R]; 1.0 replaces region r's input by the [MASK] vector.
      train: enables dropout.
      with_unmasked: also return the token outputs of the unmasked regions, from the same
        backbone pass (the ResNet runs once; the transformer once over the masked and the
        unmasked regions stacked).
    """
    cfg = self.cfg
    if image.ndim != 4 or image.shape[-1] != 3:
      raise ValueError(f'image must be [batch, size, size, 3]; got shape {image.shape}')
    backbone = ResNet(
      depth=cfg.resnet_depth,
      width=cfg.resnet_width,
      small_stem=cfg.resnet_small_stem,
      conv_kernel_gradient=cfg.conv_kernel_gradient,
      dtype=cfg.compute_dtype,
      param_dtype=cfg.params_dtype,
      name='resnet',
    )
    fmap = backbone(image)
    grid = adaptive_avg_pool(fmap, cfg.image_grid)  # [B, g, g, C]
    regions = grid.reshape(grid.shape[0], cfg.num_regions, grid.shape[-1])
    v = dense(cfg, cfg.hidden_size, ('region_features', 'embed'), 'region_proj')(
      regions.astype(cfg.compute_dtype)
    )
    v = constrain(v, ('act_batch', 'act_regions', 'act_embed'))
    if mpm_mask is not None and mpm_mask.shape != v.shape[:2]:
      raise ValueError(f'mpm_mask must be {v.shape[:2]}; got {mpm_mask.shape}')
    cls = self.param(
      'cls', partitioned(weight_init(cfg), ('embed',)), (cfg.hidden_size,), cfg.params_dtype
    )
    pos = self.param(
      'position_embeddings',
      partitioned(weight_init(cfg), ('position', 'embed')),
      (cfg.num_regions + 1, cfg.hidden_size),
      cfg.params_dtype,
    )
    embeddings_ln = layer_norm(cfg, 'embeddings_ln')
    dropout = nn.Dropout(cfg.dropout_rate)
    stack = TransformerStack(cfg, cfg.image_num_layers, name='stack')

    def encode(x: jax.Array) -> jax.Array:
      x = jnp.concatenate(
        [jnp.broadcast_to(cls.astype(x.dtype), (x.shape[0], 1, cfg.hidden_size)), x], axis=1
      )
      x = embeddings_ln(x + pos.astype(x.dtype)[None])
      x = constrain(dropout(x, deterministic=not train), BATCH_LEN_EMBED)
      return stack(x, jnp.ones(x.shape[:2], jnp.int32), train=train)

    mask_vec = self.param(
      'mask_region', partitioned(weight_init(cfg), ('embed',)), (cfg.hidden_size,), cfg.params_dtype
    )
    if mpm_mask is None:
      tokens = encode(v)
      return ImageEncoding(tokens, v, tokens)
    x = jnp.where(mpm_mask[..., None] > 0, mask_vec.astype(v.dtype), v)
    if not with_unmasked:
      return ImageEncoding(encode(x), v, None)
    # Both passes as one call over twice the batch: half the kernels, the same weights.
    both = encode(jnp.concatenate([x, v]))
    return ImageEncoding(both[: v.shape[0]], v, both[v.shape[0] :])
