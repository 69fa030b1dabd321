"""The model's building blocks that carry logical partitioning: initialisers, Dense, LayerNorm.

Every dense layer of every encoder and head is `dense(...)`, so the compute/parameter dtypes,
the weight initialiser and the logical axis names of kernel and bias are decided in one
place (make_jax/parallel/partitioning.py holds the names' rules).
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from make_jax.models.model_config import ModelConfig
from make_jax.parallel.partitioning import partitioned

ZEROS_INIT = nn.initializers.zeros_init()
ONES_INIT = nn.initializers.ones_init()


def weight_init(cfg: ModelConfig) -> nn.initializers.Initializer:
  """Normal(0, cfg.init_std) for weights and embeddings (BERT: 0.02 for a 768-wide model).

  A truncated normal in HF; a normal is close enough for training from scratch, and
  pretrained weights replace it anyway. Narrow models need a larger std (about
  1/sqrt(hidden)): with 0.02 at width 64 every [CLS] output starts nearly identical
  (cosine 0.9999 between queries), and the retrieval losses sit at chance for hundreds
  of steps before the symmetry breaks.
  """
  return nn.initializers.normal(stddev=cfg.init_std)


def identity_init(key, shape, dtype=jnp.float32) -> jax.Array:
  """The identity matrix of a square kernel [n, n] (a projection that starts as a no-op)."""
  del key
  if len(shape) != 2 or shape[0] != shape[1]:
    raise ValueError(f'an identity initialisation needs a square kernel; got {shape}')
  return jnp.eye(shape[0], dtype=dtype)


def dense(
  cfg: ModelConfig,
  features: int,
  names: Sequence[str],
  name: str,
  *,
  kernel_init: nn.initializers.Initializer | None = None,
  bias_init: nn.initializers.Initializer = ZEROS_INIT,
) -> nn.Dense:
  """A Dense layer with kernel axes `names` (in, out) and bias axis `names[1:]`.

  Compute in `cfg.dtype`, parameters in `cfg.param_dtype`, kernel from `weight_init` (or
  `kernel_init`), zero bias (or `bias_init`).
  """
  if len(names) != 2:
    raise ValueError(f'dense {name!r}: kernel names must be (in, out), got {tuple(names)}')
  return nn.Dense(
    features,
    dtype=cfg.compute_dtype,
    param_dtype=cfg.params_dtype,
    kernel_init=partitioned(kernel_init or weight_init(cfg), names),
    bias_init=partitioned(bias_init, names[1:]),
    name=name,
  )


def layer_norm(cfg: ModelConfig, name: str) -> nn.LayerNorm:
  """LayerNorm with BERT's epsilon and logically named scale/bias."""
  return nn.LayerNorm(
    epsilon=cfg.layer_norm_eps,
    dtype=cfg.compute_dtype,
    param_dtype=cfg.params_dtype,
    scale_init=partitioned(ONES_INIT, ('embed',)),
    bias_init=partitioned(ZEROS_INIT, ('embed',)),
    name=name,
  )
