"""A frozen, hashable view of the config fields the model reads.

Flax modules are dataclasses that JAX transforms may hash; an `ml_collections.ConfigDict` is
neither frozen nor hashable, so the model takes this dataclass, built once from the config.
"""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections

from make_jax.models import conv

_RESNET_DEPTHS = (18, 50, 101)
# Fields of the config's `loss` section that the model reads: the initial values of the
# temperatures it trains, and whether the QPM temperature trains at all. Every other loss
# constant is read by the losses from cfg.loss alone.
_LOSS_FIELDS = ('qpm_temperature', 'qpm_learn_temperature', 'mpm_r_tau')
# Loss terms that read the product image (the MPM heads' outputs): impossible without it.
IMAGE_LOSSES = ('mpm', 'mpm_r', 'qpm_image')
# How an encoder's token outputs become one vector: the [CLS] output, or the mean of the real
# tokens (how sentence-transformers checkpoints such as all-MiniLM-L6-v2 were trained).
POOLINGS = ('cls', 'mean')
# 'normal': random projections; 'identity': the query/title projections start as the
# identity (embed_dim == hidden_size) and the image projection at zero (a pretrained start).
PROJECTION_INITS = ('normal', 'identity')


def at_least_float32(dtype: jnp.dtype) -> jnp.dtype:
  """The dtype of what is kept in float32 whatever the compute dtype (softmaxes, logits,
  embeddings): float32 for bfloat16, float16 and float32; float64 for float64, so a float64
  model (a numerics check) is float64 end to end."""
  return jnp.promote_types(dtype, jnp.float32)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Model hyper-parameters (field meanings: configs/base.py, sections `model` and `loss`)."""

  vocab_size: int = 30522
  hidden_size: int = 384
  num_layers: int = 6
  num_heads: int = 12
  mlp_dim: int = 1536
  max_position: int = 512
  type_vocab_size: int = 2
  dropout_rate: float = 0.1
  layer_norm_eps: float = 1e-12
  init_std: float = 0.02
  dtype: str = 'float32'
  param_dtype: str = 'float32'
  embed_dim: int = 256
  resnet_depth: int = 18
  resnet_width: int = 32
  resnet_small_stem: bool = True
  conv_kernel_gradient: str = 'auto'
  image_grid: int = 4
  image_num_layers: int = 6
  modal_adaptation: bool = True
  fusion_layers: int = 1
  retrieval_from_unmasked: bool = True
  product_image: bool = True
  # The pretrained start (SPEC 8; configs/base.py documents each field).
  pooling: str = 'cls'
  projection_init: str = 'normal'
  fusion_feeds_embedding: bool = True
  initial_image_weight: float = -1.0
  # From loss.weights: the image tower's own matching head exists only for loss qpm_image.
  image_match_head: bool = False
  # The product embedding's image part from the matching head (needs loss qpm_image).
  image_from_match_head: bool = False
  # From the loss section: the trainable temperatures' initial values.
  qpm_temperature: float = 0.05
  qpm_learn_temperature: bool = True
  mpm_r_tau: float = 0.1

  def __post_init__(self):
    if self.hidden_size % self.num_heads:
      raise ValueError(
        f'model.hidden_size={self.hidden_size} is not divisible by model.num_heads={self.num_heads}'
      )
    if self.resnet_depth not in _RESNET_DEPTHS:
      raise ValueError(f'model.resnet_depth={self.resnet_depth}; expected one of {_RESNET_DEPTHS}')
    if self.conv_kernel_gradient not in conv.KERNEL_GRADIENTS:
      raise ValueError(
        f'model.conv_kernel_gradient={self.conv_kernel_gradient!r}; expected one of '
        f'{conv.KERNEL_GRADIENTS}'
      )
    for name in ('vocab_size', 'num_layers', 'mlp_dim', 'max_position', 'embed_dim', 'image_grid'):
      if getattr(self, name) < 1:
        raise ValueError(f'model.{name}={getattr(self, name)} must be >= 1')
    for name in ('dtype', 'param_dtype'):
      value = getattr(self, name)
      if value not in ('float32', 'bfloat16', 'float16', 'float64'):
        raise ValueError(f'model.{name}={value!r}; expected float32|bfloat16|float16|float64')
      if value == 'float64' and not jax.config.jax_enable_x64:
        raise ValueError(
          f'model.{name}=float64 needs 64-bit JAX: set JAX_ENABLE_X64=1 (or '
          "jax.config.update('jax_enable_x64', True)) before JAX is used"
        )
    if self.pooling not in POOLINGS:
      raise ValueError(f'model.pooling={self.pooling!r}; expected one of {POOLINGS}')
    if self.projection_init not in PROJECTION_INITS:
      raise ValueError(
        f'model.projection_init={self.projection_init!r}; expected one of {PROJECTION_INITS}'
      )
    if self.projection_init == 'identity' and self.embed_dim != self.hidden_size:
      raise ValueError(
        f"model.projection_init='identity' needs model.embed_dim == model.hidden_size; got "
        f'{self.embed_dim} and {self.hidden_size}'
      )
    if self.initial_image_weight != -1.0 and not 0.0 < self.initial_image_weight < 1.0:
      raise ValueError(
        f'model.initial_image_weight={self.initial_image_weight} must be in (0, 1), or -1 '
        'for a randomly initialised gate'
      )
    if self.image_from_match_head and not (self.image_match_head and self.product_image):
      raise ValueError(
        'model.image_from_match_head=True mixes the image matching head into the product '
        'embedding; it needs model.product_image=True and loss.weights.qpm_image > 0'
      )
    for name in ('qpm_temperature', 'mpm_r_tau'):
      if getattr(self, name) <= 0:
        raise ValueError(f'loss.{name}={getattr(self, name)} must be > 0')

  @property
  def num_regions(self) -> int:
    """R: image regions (the 4x4 grid gives 16)."""
    return self.image_grid * self.image_grid

  @property
  def compute_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.dtype)

  @property
  def params_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.param_dtype)

  @property
  def output_dtype(self) -> jnp.dtype:
    """Embeddings, logits and softmaxes: float32, or float64 for a float64 model."""
    return at_least_float32(self.compute_dtype)

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> 'ModelConfig':
    """Builds the model view of a full config (needs `config.model`; reads `config.loss`)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in config.model.items() if k in fields}
    unknown = set(config.model.keys()) - fields
    if unknown:
      raise ValueError(f'unknown model config field(s): {sorted(unknown)}')
    loss = config.get('loss', {})
    for k in _LOSS_FIELDS:
      if k in loss:
        values[k] = loss[k]
    values['image_match_head'] = float(dict(loss.get('weights', {})).get('qpm_image', 0)) > 0
    if not values.get('product_image', True):
      weights = dict(loss.get('weights', {}))
      on = [k for k in IMAGE_LOSSES if weights.get(k, 0) > 0]
      if on:
        raise ValueError(
          f'model.product_image=False (text-only product tower) has no image, but '
          f'loss.weights {", ".join(f"{k}={weights[k]}" for k in on)} ask for image losses; '
          f'set them to 0'
        )
    return cls(**values)
