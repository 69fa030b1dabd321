"""ResNet backbone of the image encoder (SPEC 3: ResNet-101 in the paper; depth configurable).

Normalisation is GroupNorm, not BatchNorm: BatchNorm's running statistics would be mutable
state outside the params (a second collection to thread through the train state, pmap
averaging, and checkpoints) and its batch statistics would differ between one device and a
sharded global batch. GroupNorm is per-example, so sharded == single-device exactly.

`small_stem` replaces the 7x7/2 convolution + 3x3/2 max-pool stem (total stride 32) by a
3x3/1 convolution (total stride 8), so 32x32 and 64x64 images still leave a >= 4x4 map.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from make_jax.models import conv
from make_jax.models.model_config import at_least_float32
from make_jax.parallel.partitioning import constrain, partitioned

# depth -> (block kind, blocks per stage).
STAGES = {
  18: ('basic', (2, 2, 2, 2)),
  50: ('bottleneck', (3, 4, 6, 3)),
  101: ('bottleneck', (3, 4, 23, 3)),
}
_CONV_NAMES = ('conv_height', 'conv_width', 'conv_in', 'conv_out')
# ImageNet channel statistics: uint8 pixels are scaled to [0, 1] and standardised.
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def _groups(channels: int, max_groups: int = 32) -> int:
  """The largest divisor of `channels` that is at most `max_groups`."""
  return max(g for g in range(1, min(channels, max_groups) + 1) if channels % g == 0)


class _ConvNorm(nn.Module):
  """Convolution (no bias) + GroupNorm (+ ReLU)."""

  features: int
  kernel: int
  stride: int = 1
  relu: bool = True
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  per_tap: bool = False  # The kernel gradient as per-tap matmuls (conv.py; faster on CPU).

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Conv(
      self.features,
      (self.kernel, self.kernel),
      strides=(self.stride, self.stride),
      padding=[(self.kernel // 2, self.kernel // 2)] * 2,
      use_bias=False,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      kernel_init=partitioned(nn.initializers.kaiming_normal(), _CONV_NAMES),
      conv_general_dilated=conv.conv_general_dilated if self.per_tap else lax.conv_general_dilated,
      name='conv',
    )(x)
    x = nn.GroupNorm(
      num_groups=_groups(self.features),
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      scale_init=partitioned(nn.initializers.ones_init(), ('channels',)),
      bias_init=partitioned(nn.initializers.zeros_init(), ('channels',)),
      name='norm',
    )(x)
    return nn.relu(x) if self.relu else x


class _Block(nn.Module):
  """Basic (two 3x3) or bottleneck (1x1, 3x3, 1x1 with 4x expansion) residual block."""

  kind: str
  width: int
  stride: int
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  per_tap: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, per_tap=self.per_tap)
    if self.kind == 'basic':
      out_ch = self.width
      h = _ConvNorm(self.width, 3, self.stride, name='a', **kw)(x)
      h = _ConvNorm(out_ch, 3, relu=False, name='b', **kw)(h)
    else:
      out_ch = 4 * self.width
      h = _ConvNorm(self.width, 1, name='a', **kw)(x)
      h = _ConvNorm(self.width, 3, self.stride, name='b', **kw)(h)
      h = _ConvNorm(out_ch, 1, relu=False, name='c', **kw)(h)
    if x.shape[-1] != out_ch or self.stride != 1:
      x = _ConvNorm(out_ch, 1, self.stride, relu=False, name='shortcut', **kw)(x)
    return nn.relu(x + h)


class ResNet(nn.Module):
  """ResNet-{18,50,101} feature extractor: uint8 images [B, S, S, 3] -> [B, h, w, C]."""

  depth: int = 18
  width: int = 64
  small_stem: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  # 'per_tap' (conv.py's kernel gradient), 'xla' (lax's), 'auto': per_tap on CPU only.
  conv_kernel_gradient: str = 'auto'

  @property
  def out_channels(self) -> int:
    kind, _ = STAGES[self.depth]
    return self.width * 8 * (4 if kind == 'bottleneck' else 1)

  @property
  def stride(self) -> int:
    """Total downsampling factor from the image to the final feature map."""
    return 8 if self.small_stem else 32

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    if self.depth not in STAGES:
      raise ValueError(f'resnet depth {self.depth}; expected one of {sorted(STAGES)}')
    kind, blocks = STAGES[self.depth]
    per_tap = conv.use_per_tap(self.conv_kernel_gradient)
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, per_tap=per_tap)
    x = images.astype(at_least_float32(self.dtype)) / 255.0
    x = ((x - jnp.asarray(_MEAN)) / jnp.asarray(_STD)).astype(self.dtype)
    if self.small_stem:
      x = _ConvNorm(self.width, 3, name='stem', **kw)(x)
    else:
      x = _ConvNorm(self.width, 7, 2, name='stem', **kw)(x)
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for s, n in enumerate(blocks):
      for b in range(n):
        stride = 2 if (b == 0 and s > 0) else 1
        x = _Block(kind, self.width * 2**s, stride, name=f'stage{s}_block{b}', **kw)(x)
    return constrain(x, ('act_batch', 'act_height', 'act_width', 'act_channels'))


def _pool_matrix(size: int, bins: int) -> np.ndarray:
  """[bins, size] averaging matrix of adaptive average pooling (PyTorch's bin edges).

  Bin i covers [floor(i * size / bins), ceil((i + 1) * size / bins)).
  """
  rows = []
  for i in range(bins):
    lo, hi = (i * size) // bins, math.ceil((i + 1) * size / bins)
    rows.append([1.0 / (hi - lo) if lo <= j < hi else 0.0 for j in range(size)])
  return np.asarray(rows)  # float64 here; cast to the feature map's dtype where used.


def adaptive_avg_pool(x: jax.Array, grid: int) -> jax.Array:
  """Pools a feature map [B, h, w, C] to [B, grid, grid, C] (needs h, w >= grid)."""
  _, h, w, _ = x.shape
  if h < grid or w < grid:
    raise ValueError(
      f'the final ResNet feature map is {h}x{w}, smaller than the {grid}x{grid} region grid: '
      'use larger images or model.resnet_small_stem=True'
    )
  ph, pw = _pool_matrix(h, grid), _pool_matrix(w, grid)
  dtype = at_least_float32(x.dtype)
  return jnp.einsum('ih,jw,bhwc->bijc', ph.astype(dtype), pw.astype(dtype), x.astype(dtype))
