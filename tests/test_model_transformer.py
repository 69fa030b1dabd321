"""The BERT-layout text encoder: sharded by the logical axis rules == unsharded, and dtypes."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from make_jax.models.model_config import ModelConfig
from make_jax.models.transformer import TextEncoder
from make_jax.parallel.partitioning import LOGICAL_AXIS_RULES

CFG = ModelConfig(
    vocab_size=256, hidden_size=32, num_heads=4, mlp_dim=64, num_layers=2, max_position=16,
    dropout_rate=0.0,
)  # fmt: skip


def _inputs(b=8, length=12):
  rs = np.random.RandomState(0)
  ids = rs.randint(0, CFG.vocab_size, (b, length)).astype(np.int32)
  n = rs.randint(2, length + 1, b)
  mask = (np.arange(length)[None] < n[:, None]).astype(np.int32)
  return ids, mask


def test_sharded_by_logical_rules_equals_unsharded():
  ids, mask = _inputs()
  model = TextEncoder(CFG)
  boxed = jax.jit(model.init)(jax.random.key(0), ids, mask)
  params = nn.meta.unbox(boxed)
  ref = jax.jit(model.apply)(params, ids, mask)

  mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ('data', 'model'))
  specs = nn.get_partition_spec(boxed)
  shardings = nn.logical_to_mesh_sharding(specs, mesh, LOGICAL_AXIS_RULES)
  # The rules really shard something over 'model' (vocab, heads, mlp).
  flat = jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, NamedSharding))
  assert any('model' in s.spec for s in flat)
  sharded_params = jax.device_put(params, shardings)
  data = NamedSharding(mesh, PartitionSpec('data'))

  def run(p, i, m):
    with nn.logical_axis_rules(LOGICAL_AXIS_RULES):
      return model.apply(p, i, m)

  with jax.set_mesh(mesh):
    out = jax.jit(run, out_shardings=NamedSharding(mesh, PartitionSpec('data')))(
      sharded_params, jax.device_put(ids, data), jax.device_put(mask, data)
    )
  assert out.sharding.spec[0] == 'data'
  np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-5)


def test_bfloat16_compute_keeps_float32_params():
  cfg = dataclasses.replace(CFG, dtype='bfloat16')
  ids, mask = _inputs()
  model = TextEncoder(cfg)
  params = nn.meta.unbox(model.init(jax.random.key(0), ids, mask))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
  out = model.apply(params, ids, mask)
  assert out.dtype == jnp.bfloat16
  ref = TextEncoder(CFG).apply(params, ids, mask)
  assert np.abs(np.asarray(out, np.float32) - np.asarray(ref)).max() < 0.1


def test_float64_needs_64_bit_jax_and_is_then_float64_end_to_end():
  """model.dtype=float64 (the layouts' numerics check) is refused without 64-bit JAX, and
  with it the parameters, the attention scores and the outputs are float64."""
  assert not jax.config.jax_enable_x64
  with pytest.raises(ValueError, match='model.dtype=float64 needs 64-bit JAX: set JAX_ENABLE_X64'):
    dataclasses.replace(CFG, dtype='float64', param_dtype='float64')
  with pytest.raises(ValueError, match=r"model.dtype='float8'; expected float32\|bfloat16"):
    dataclasses.replace(CFG, dtype='float8')
  ids, mask = _inputs()
  jax.config.update('jax_enable_x64', True)
  try:
    cfg = dataclasses.replace(CFG, dtype='float64', param_dtype='float64')
    model = TextEncoder(cfg)
    params = nn.meta.unbox(model.init(jax.random.key(0), ids, mask))
    assert all(x.dtype == jnp.float64 for x in jax.tree.leaves(params))
    out = model.apply(params, ids, mask)
    assert out.dtype == jnp.float64
    ref = TextEncoder(CFG).apply(jax.tree.map(lambda x: x.astype(jnp.float32), params), ids, mask)
  finally:
    jax.config.update('jax_enable_x64', False)
  np.testing.assert_allclose(np.asarray(out), np.asarray(ref, np.float64), atol=1e-5)


def test_too_long_sequence_is_a_clear_error():
  ids = np.zeros((1, 20), np.int32)
  model = TextEncoder(CFG)
  try:
    jax.eval_shape(lambda: model.init(jax.random.key(0), ids, np.ones_like(ids)))
  except ValueError as e:
    assert 'exceeds model.max_position=16' in str(e)
  else:
    raise AssertionError('no error for a sequence longer than max_position')
