"""The text-only product tower (`model.product_image=False`): the two-tower baseline.

A user comparing MAKE with a text-only two-tower relies on that baseline having no image
anywhere: no image parameters, a product embedding that is exactly the projected title
[CLS], pixels that change nothing, a train step that runs, and a config asking for an image
loss refused up front rather than failing deep in a jitted step.
"""

import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.linen import meta
from test_model_make import random_batch

from configs import tiny
from make_jax.evaluation import results
from make_jax.losses.total import compute_losses
from make_jax.models.make_model import (
  IMAGE_OUTPUT_KEYS,
  OUTPUT_KEYS,
  MakeModel,
  build_model,
  example_batch,
)
from make_jax.models.transformer import TextEncoder
from make_jax.train import optimizer
from make_jax.train import step as train_step

B = 4
TEXT_PARAMS = {
  'query_encoder',
  'title_encoder',
  'query_proj',
  'title_proj',
  'mlm_query_head',
  'mlm_title_head',
  'log_qpm_temperature',
}


def _config(**weights):
  config = tiny.get_config()
  config.model.num_layers = 1
  config.model.image_num_layers = 1
  config.model.product_image = False
  for k, v in (dict(mpm=0.0, mpm_r=0.0) | weights).items():
    config.loss.weights[k] = v
  return config


@pytest.fixture(scope='module')
def setup():
  config = _config()
  model = build_model(config)
  variables = jax.jit(lambda r, b: model.init({'params': r}, b))(
    jax.random.key(0), random_batch(config)
  )
  params = meta.unbox(variables)['params']
  return config, model, params, jax.jit(lambda p, b: model.apply({'params': p}, b))


@functools.cache
def _product_tower(model):
  return jax.jit(lambda p, *a: model.apply({'params': p}, *a, method=MakeModel.encode_product))


def _encode_product(model, params, b):
  args = b['title_ids'], b['title_mask'], b['image'], b['image_missing']
  return _product_tower(model)(params, *args)


def test_no_image_parameters_and_no_image_work(setup):
  config, model, params, forward = setup
  assert set(params) == TEXT_PARAMS
  b = random_batch(config)
  # Neither the training forward nor the product tower holds a convolution (the ResNet).
  assert 'conv_general_dilated' not in str(jax.make_jaxpr(forward)(params, b))
  assert 'conv_general_dilated' not in str(
    jax.make_jaxpr(lambda p: _encode_product(model, p, b))(params)
  )
  out = forward(params, b)
  assert set(out) == set(OUTPUT_KEYS) - set(IMAGE_OUTPUT_KEYS)
  # The image is not read at all: a batch without it runs and gives the same embeddings.
  no_image = {k: v for k, v in b.items() if k not in ('image', 'image_missing', 'mpm_mask')}
  np.testing.assert_array_equal(forward(params, no_image)['product_emb'], out['product_emb'])


def test_product_embedding_is_the_projected_title_cls(setup):
  config, model, params, forward = setup
  b = random_batch(config)
  tokens = TextEncoder(model.cfg).apply(
    {'params': params['title_encoder']}, b['title_ids'], b['title_mask']
  )
  proj = params['title_proj']
  cls = np.asarray(tokens[:, 0], np.float64)
  want = cls @ np.asarray(proj['kernel'], np.float64) + np.asarray(proj['bias'], np.float64)
  want /= np.linalg.norm(want, axis=-1, keepdims=True)
  emb, weights = _encode_product(model, params, b)
  np.testing.assert_allclose(emb, want, atol=1e-5)
  np.testing.assert_array_equal(weights, np.tile([1.0, 0.0], (B, 1)))
  # The training forward gives the same embedding.
  out = forward(params, b)
  np.testing.assert_allclose(out['product_emb'], emb, atol=1e-6)
  np.testing.assert_array_equal(out['modal_weights'], weights)
  # The comparison can fail: another title gives another embedding.
  other = dict(b, title_ids=np.roll(b['title_ids'], 1, axis=0))
  assert np.abs(np.asarray(_encode_product(model, params, other)[0]) - want).max() > 1e-3


def test_the_image_does_not_change_the_embedding(setup):
  config, model, params, forward = setup
  b1 = random_batch(config)
  b2 = dict(b1, image=255 - b1['image'], image_missing=~b1['image_missing'])
  e1, w1 = _encode_product(model, params, b1)
  e2, w2 = _encode_product(model, params, b2)
  np.testing.assert_array_equal(e1, e2)
  np.testing.assert_array_equal(w1, w2)


def test_one_train_step_of_the_two_tower_row():
  row = next(r for r in results.ROWS if r.name == 'two_tower_text')
  assert row.kind == 'trained'
  config = results.apply_overrides(_config(), row.overrides)
  assert {k for k, w in config.loss.weights.items() if w > 0} == {'qpm'}
  assert config.loss.cdns_start_fraction == 1.0 and not config.model.product_image
  config.data.global_batch_size = B
  config.optim.warmup_fraction = 0.0  # A non-zero rate at step 0: the step moves params.
  config.loss.bank_batches = 2  # The queue takes the text-only product embeddings.
  model = build_model(config)
  rng = jax.random.key(0)
  params = jax.jit(model.init)(rng, example_batch(config, 2))['params']
  params = meta.unbox(params)
  tx = optimizer.make_optimizer(config.optim, config.train.num_steps)
  state = train_step.create_train_state(model, params, tx, config, rng)
  tokens = types.SimpleNamespace(pad_id=0, cls_id=2, sep_id=3, mask_id=4, vocab_size=2048)
  step = jax.jit(train_step.make_train_step(model, tx, config, tokens))
  batch = random_batch(config)
  del batch['mpm_mask']
  new, metrics = step(state, batch)
  assert 'qpm' in metrics and not {'mpm', 'mpm_r', 'mlm', 'qpc'} & set(metrics)
  assert np.isfinite(float(metrics['loss'])) and float(metrics['grad_norm']) > 0
  assert int(new.step) == 1
  moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), state.params, new.params)
  assert moved['title_proj']['kernel'] and moved['title_encoder']['word_embeddings']['embedding']
  assert float(optax.tree.norm(new.bank.embeddings)) > 0


def test_image_losses_with_a_text_only_tower_are_refused(setup):
  with pytest.raises(ValueError, match=r'product_image=False .* mpm_r=1\.0'):
    build_model(_config(mpm_r=1.0))
  with pytest.raises(ValueError, match=r'mpm=0\.5'):
    build_model(_config(mpm=0.5))
  # A loss config that bypasses the model's check still fails by name, not deep in a step.
  config, model, params, forward = setup
  b = random_batch(config)
  out = forward(params, b)
  loss_cfg = _config(mpm=1.0).loss
  with pytest.raises(ValueError, match="'mpm' needs model output keys"):
    compute_losses(out, b, loss_cfg, step=0, num_steps=10)
