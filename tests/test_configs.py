"""Every config in configs/ builds, and its model initialises abstractly with the right shapes."""

import importlib
import pathlib

import jax
import jax.numpy as jnp
import pytest
from flax import linen as nn

from make_jax.models.heads import mlm_max_predictions
from make_jax.models.make_model import build_model, example_batch
from make_jax.models.model_config import ModelConfig
from make_jax.parallel.partitioning import LOGICAL_AXIS_RULES, logical_partition_specs

CONFIG_DIR = pathlib.Path(__file__).resolve().parent.parent / 'configs'
NAMES = sorted(p.stem for p in CONFIG_DIR.glob('*.py') if p.stem != '__init__')


def test_the_three_reference_configs_exist():
  assert {'base', 'tiny', 'paper'} <= set(NAMES)


@pytest.mark.parametrize('name', NAMES)
def test_config_initialises_abstractly(name):
  config = importlib.import_module(f'configs.{name}').get_config()
  model = build_model(config)
  batch = example_batch(config, 2)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), batch))
  out = jax.eval_shape(lambda v: model.apply(v, batch), nn.meta.unbox(variables))
  m, t = config.model, config.text
  assert out['query_emb'].shape == (2, m.embed_dim)
  assert out['product_emb'].shape == (2, m.embed_dim)
  assert out['modal_weights'].shape == (2, 2)
  k = lambda length: mlm_max_predictions(length, config.masking.mlm_prob)
  assert out['mlm_query_logits'].shape == (2, k(t.query_len), m.vocab_size)
  assert out['mlm_title_logits'].shape == (2, k(t.title_len), m.vocab_size)
  for key in ('mpm_pred', 'mpm_r_pred', 'mpm_target'):
    assert out[key].shape == (2, m.image_grid**2, m.hidden_size), key
  for key, value in out.items():
    assert value.dtype == jnp.float32, key
  params = nn.meta.unbox(variables)['params']
  enc = params['query_encoder']
  assert enc['word_embeddings']['embedding'].shape == (m.vocab_size, m.hidden_size)
  assert len(enc['stack']) == m.num_layers
  assert len(params['image_encoder']['stack']) == m.image_num_layers
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
  # Every weight carries logical axis names, one per dimension, all known to the rules.
  known = {name for name, _ in LOGICAL_AXIS_RULES}
  specs = logical_partition_specs(variables['params'])
  flat_specs = jax.tree_util.tree_flatten_with_path(
    specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)
  )[0]
  shapes = dict(
    (jax.tree_util.keystr(k), v.shape) for k, v in jax.tree_util.tree_flatten_with_path(params)[0]
  )
  for path, spec in flat_specs:
    key = jax.tree_util.keystr(path)
    assert len(spec) == len(shapes[key]), f'{key}: names {spec} for shape {shapes[key]}'
    assert set(spec) <= known, f'{key}: unknown logical names {spec}'


def test_model_config_rejects_bad_values():
  with pytest.raises(ValueError, match='not divisible by model.num_heads'):
    ModelConfig(hidden_size=100, num_heads=12)
  with pytest.raises(ValueError, match='resnet_depth=34'):
    ModelConfig(resnet_depth=34)
  with pytest.raises(ValueError, match='qpm_temperature'):
    ModelConfig(qpm_temperature=0.0)


def test_small_images_without_small_stem_are_a_clear_error():
  config = importlib.import_module('configs.tiny').get_config()
  config.model.resnet_small_stem = False  # 32 px / 32 = a 1x1 map: too small for 4x4.
  model = build_model(config)
  with pytest.raises(ValueError, match='smaller than the 4x4 region grid'):
    jax.eval_shape(lambda: model.init(jax.random.key(0), example_batch(config, 1)))
