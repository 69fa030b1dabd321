"""The pretrained start (SPEC 8): at step 0 the model is the checkpoint, nothing lost.

A model set up as configs/finetune.py sets it up (mean pooling, identity text projections,
a zero image projection, Modal Adaptation at a_image = w feeding only the gate) must embed
queries and products exactly as the imported text encoders do on their own, whatever the
image pixels; `config_for_checkpoint` must take the checkpoint's pooling, vocabulary and
accent rule; and on the real fashion test queries the step-0 model must rank the catalogue
as the untrained all-MiniLM-L6-v2 baseline row does.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import SHARED_DATA

from configs import finetune, tiny
from make_jax.datasets import fashion_products, fashion_queries, loading
from make_jax.evaluation import baselines, eval_set
from make_jax.models import bert_import
from make_jax.models.make_model import build_model, example_batch, init_params
from make_jax.models.transformer import TextEncoder, pool
from make_jax.text.preprocess import TextPreprocessor
from make_jax.train import checkpoint
from tests.test_model_make import random_batch


def _start_config(**model):
  config = tiny.get_config()
  config.model.embed_dim = config.model.hidden_size
  config.model.pooling = 'mean'
  config.model.projection_init = 'identity'
  config.model.fusion_feeds_embedding = False
  config.model.initial_image_weight = 0.05
  config.model.dropout_rate = 0.0
  for k, v in model.items():
    config.model[k] = v
  return config


def _own_embedding(model, params, ids, mask, encoder):
  """The text encoder alone, mean-pooled and L2-normalised (the checkpoint's embedding)."""
  out = TextEncoder(model.cfg).apply({'params': params[encoder]}, ids, mask)
  pooled = np.asarray(pool(out, mask, 'mean'))
  return pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)


def _product(model, params, batch):
  """`encode_product` of a batch: (embeddings, modal weights)."""
  return model.apply(
    {'params': params},
    batch['title_ids'],
    batch['title_mask'],
    batch['image'],
    batch['image_missing'],
    method='encode_product',
  )


def _product_loss(model, batch):
  """A loss of the product embeddings along a fixed random direction (for gradients)."""

  def loss(params):
    p, _ = _product(model, params, batch)
    return -(p * jax.random.normal(jax.random.key(1), p.shape)).sum()

  return loss


def test_step0_embeddings_are_the_text_encoders_own_whatever_the_image():
  config = _start_config()
  model = build_model(config)
  batch = random_batch(config)
  params = init_params(model, jax.random.key(0), batch)
  q = model.apply(
    {'params': params}, batch['query_ids'], batch['query_mask'], method='encode_query'
  )
  p, w = _product(model, params, batch)
  np.testing.assert_allclose(
    q,
    _own_embedding(model, params, batch['query_ids'], batch['query_mask'], 'query_encoder'),
    atol=1e-6,
  )
  np.testing.assert_allclose(
    p,
    _own_embedding(model, params, batch['title_ids'], batch['title_mask'], 'title_encoder'),
    atol=1e-6,
  )
  # Modal Adaptation starts on the title: a_image = 0.05 for every product with an image.
  has_image = ~batch['image_missing']
  np.testing.assert_allclose(np.asarray(w)[has_image], [[0.95, 0.05]] * has_image.sum(), rtol=1e-6)
  # Other pixels, same embeddings: the untrained image tower does not reach them.
  p2, _ = _product(model, params, dict(batch, image=255 - batch['image']))
  np.testing.assert_array_equal(np.asarray(p), np.asarray(p2))


def test_the_image_learns_upward_from_zero():
  """The zero image projection and the gate get gradient once the image is in the loss."""
  config = _start_config()
  model = build_model(config)
  batch = random_batch(config)
  params = init_params(model, jax.random.key(0), batch)

  grads = jax.grad(_product_loss(model, batch))(params)
  assert np.abs(np.asarray(grads['image_proj']['kernel'])).max() > 0
  assert np.all(np.asarray(params['image_proj']['kernel']) == 0)


def test_configs_reject_an_identity_projection_of_another_width():
  config = _start_config(embed_dim=16)
  with pytest.raises(ValueError, match='embed_dim == model.hidden_size'):
    build_model(config)
  with pytest.raises(ValueError, match=r'initial_image_weight=1.5 must be in \(0, 1\)'):
    build_model(_start_config(initial_image_weight=1.5))
  with pytest.raises(ValueError, match="pooling='max'"):
    build_model(_start_config(pooling='max'))


def test_config_for_checkpoint_takes_pooling_vocabulary_and_accents(tmp_path):
  minilm = bert_import.default_checkpoint_dir()
  config = bert_import.config_for_checkpoint(finetune.get_config(), minilm)
  assert config.model.pooling == 'mean'
  assert config.text.vocab_path == str(minilm / 'vocab.txt')
  assert config.text.strip_accents is True
  assert config.model.vocab_size == 30522
  # A [CLS]-pooled sentence model: the pooling follows its 1_Pooling file.
  cls_dir = tmp_path / 'cls_model'
  (cls_dir / '1_Pooling').mkdir(parents=True)
  for name in ('config.json', 'model.safetensors', 'vocab.txt'):
    os.symlink(minilm / name, cls_dir / name)
  pooling = {'pooling_mode_cls_token': True, 'pooling_mode_mean_tokens': False}
  (cls_dir / '1_Pooling' / 'config.json').write_text(json.dumps(pooling))
  assert bert_import.config_for_checkpoint(finetune.get_config(), cls_dir).model.pooling == 'cls'
  # A model of another shape is refused before anything is built.
  wrong = finetune.get_config()
  wrong.model.num_layers = 4
  with pytest.raises(ValueError, match='model.num_layers=4 but checkpoint .* num_hidden_layers=6'):
    bert_import.config_for_checkpoint(wrong, minilm)


def test_load_init_params_imports_a_checkpoint_dir_into_the_text_encoders():
  config = bert_import.config_for_checkpoint(
    finetune.get_config(), bert_import.default_checkpoint_dir()
  )
  model = build_model(config)
  initial = init_params(model, jax.random.key(0), example_batch(config, 1))
  params = checkpoint.load_init_params(checkpoint.init_from_dir('minilm'), config, initial)
  _, tensors = bert_import.load_checkpoint(bert_import.default_checkpoint_dir())
  word = tensors['embeddings.word_embeddings.weight']
  for enc in ('query_encoder', 'title_encoder'):
    np.testing.assert_array_equal(params[enc]['word_embeddings']['embedding'], word)
  # Everything else keeps its initial value.
  np.testing.assert_array_equal(params['image_proj']['kernel'], initial['image_proj']['kernel'])
  np.testing.assert_array_equal(params['query_proj']['kernel'], np.eye(384, dtype=np.float32))


ZIP = os.path.join(SHARED_DATA, fashion_products.ARCHIVE)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(ZIP), reason=f'{ZIP} not present')
def test_step0_ranks_the_fashion_test_queries_as_untrained_minilm(tmp_path):
  """MAKE imported from all-MiniLM-L6-v2 (configs/finetune.py) at step 0 against the
  baseline row (`baselines.MiniLM`: the checkpoint's own tokenizer, mean pooling): on every
  fashion test query, over a 1-in-8 sample of the catalogue, the top 10 are the same
  products, in the same order up to products whose baseline scores tie (to 1e-5: duplicate
  titles, float noise), and the scores agree."""
  config = fashion_products.FashionProductsConfig(
    name='test_small', mock=fashion_queries.MockSpec(num_pairs=2000, validation_share=0.01)
  )
  builder = loading.prepare('fashion_products', config, tmp_path / 'tfds', SHARED_DATA)
  es = eval_set.from_builder(builder, 'test')
  domain_words = list(builder.info.metadata['domain_words'])
  titles = es.catalogue.titles[::8]
  config = bert_import.config_for_checkpoint(
    finetune.get_config(), bert_import.default_checkpoint_dir()
  )
  config.text.query_len, config.text.title_len = 16, 32  # No fashion text is cut.
  text = TextPreprocessor.from_config(config.text, config.text.vocab_path, domain_words)
  model = build_model(config)
  initial = init_params(model, jax.random.key(0), example_batch(config, 1))
  params = checkpoint.load_init_params(bert_import.default_checkpoint_dir(), config, initial)
  encode_query = jax.jit(lambda p, i, m: model.apply({'params': p}, i, m, method='encode_query'))
  encode_product = jax.jit(
    lambda p, i, m, img, miss: model.apply({'params': p}, i, m, img, miss, method='encode_product')[
      0
    ]
  )

  def ours(texts, length, fn):
    out = []
    for start in range(0, len(texts), 256):
      ids, mask = text.encode_batch(texts[start : start + 256], length)
      if fn is encode_query:
        out.append(fn(params, ids, mask))
      else:
        images = np.zeros((len(ids), config.data.image_size, config.data.image_size, 3), np.uint8)
        out.append(fn(params, ids, mask, images, np.zeros(len(ids), bool)))
    return np.concatenate(out)

  queries = ours(es.queries, config.text.query_len, encode_query)
  products = ours(titles, config.text.title_len, encode_product)
  minilm = baselines.MiniLM()
  ref_queries, ref_products = minilm(es.queries), minilm(titles)
  ours_scores = queries @ products.T
  ref_scores = ref_queries @ ref_products.T
  np.testing.assert_allclose(ours_scores, ref_scores, atol=1e-5)
  ref_top = -np.sort(-ref_scores, axis=1)[:, :10]
  ours_top = np.argsort(-ours_scores, axis=1, kind='stable')[:, :10]
  # Our top 10, scored by the baseline: the baseline's own top 10 scores, in order.
  np.testing.assert_allclose(np.take_along_axis(ref_scores, ours_top, 1), ref_top, atol=1e-5)
  assert len(es.queries) > 1000


def test_qpm_image_trains_the_image_tower_through_its_own_head():
  """loss.weights.qpm_image > 0 adds the matching head; its loss is QPM of the queries
  against the image tower alone, and its gradient reaches the ResNet even while the
  mixed embedding's image projection is still zero."""
  from make_jax.losses import qpm
  from make_jax.losses.total import compute_losses
  from tests.test_model_make import _masked

  config = _start_config()
  config.loss.weights.qpm_image = 1.0
  model = build_model(config)
  assert model.cfg.image_match_head and not build_model(_start_config()).cfg.image_match_head
  batch = _masked(config, 3)
  params = init_params(model, jax.random.key(0), batch)
  out = model.apply({'params': params}, batch)
  only = config.copy_and_resolve_references()
  only.loss.weights = {k: 0.0 for k in config.loss.weights} | {'qpm_image': 1.0}
  share, metrics = compute_losses(out, batch, only.loss, step=0, num_steps=10)
  expected, _ = qpm.qpm_loss(
    out['query_emb'],
    out['image_emb'],
    batch['log_p'],
    batch['product_id'],
    out['qpm_temperature'],
    step=0,
    cdns_start=0,
  )
  np.testing.assert_allclose(share, expected, rtol=1e-6)
  assert 'qpm_image' in metrics and 'qpm' not in metrics

  def loss(p):
    return compute_losses(
      model.apply({'params': p}, batch), batch, only.loss, step=0, num_steps=10
    )[0]

  grads = jax.grad(loss)(params)
  resnet = jax.tree.leaves(grads['image_encoder']['resnet'])
  assert max(float(np.abs(g).max()) for g in resnet) > 0


def test_image_from_match_head_starts_at_the_title_and_learns_its_scale():
  """model.image_from_match_head: the image part is the matching head's vector times a
  scale that starts at 0, so step 0 is still the title encoder's own embedding; the
  scale gets gradient, and no separate image projection exists."""
  config = _start_config(image_from_match_head=True)
  config.loss.weights.qpm_image = 1.0
  model = build_model(config)
  batch = random_batch(config)
  params = init_params(model, jax.random.key(0), batch)
  assert 'image_proj' not in params and float(params['image_scale']) == 0.0
  p, _ = _product(model, params, batch)
  np.testing.assert_allclose(
    p,
    _own_embedding(model, params, batch['title_ids'], batch['title_mask'], 'title_encoder'),
    atol=1e-6,
  )

  assert abs(float(jax.grad(_product_loss(model, batch))(params)['image_scale'])) > 0
  # With the scale moved off 0 the pixels reach the embedding through the matching head.
  moved = dict(params, image_scale=jnp.float32(1.0))
  p1, _ = _product(model, moved, batch)
  p2, _ = _product(model, moved, dict(batch, image=255 - batch['image']))
  has_image = ~np.asarray(batch['image_missing'])
  assert np.abs(np.asarray(p1) - np.asarray(p2))[has_image].max() > 1e-4


def test_image_from_match_head_needs_the_qpm_image_loss():
  with pytest.raises(ValueError, match='image_from_match_head'):
    build_model(_start_config(image_from_match_head=True))
