"""In-training retrieval evaluation: exact against a naive reference, perfect embeddings -> 1.

Built on the synthetic `en_small` data (1k products) and the tiny model, in the session's
shared TFDS directory, like tests/test_input_pipeline.py.
"""

import collections
import functools
from unittest import mock

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import tiny
from make_jax.input.featurize import make_featurizer
from make_jax.models import make_model
from make_jax.retrieval import evaluator as evaluator_lib

KS = (1, 10, 100)


@pytest.fixture(scope='module')
def config(builder):
  c = tiny.get_config()
  c.data.data_dir = str(builder.data_dir_root)
  return c


def _tiny_model(config):
  """The tiny MakeModel with random params of its two encoders, made without compiling init."""
  model = make_model.build_model(config)
  batch = make_model.example_batch(config, 2)
  init = lambda method, *args: model.init({'params': jax.random.key(0)}, *args, method=method)
  product = (batch['title_ids'], batch['title_mask'], batch['image'], batch['image_missing'])
  shapes = jax.eval_shape(lambda: init('encode_product', *product))['params']
  shapes |= jax.eval_shape(lambda: init('encode_query', batch['query_ids'], batch['query_mask']))[
    'params'
  ]
  rng = np.random.default_rng(0)
  params = jax.tree.map(
    lambda s: rng.normal(0.0, 0.1, s.shape).astype(s.dtype), nn.meta.unbox(shapes)
  )
  return model, params


def _records(builder, split):
  source = builder.as_data_source(split, decoders={'image': tfds.decode.SkipDecoding()})
  return source.__getitems__(range(len(source)))


def _batch(examples, size):
  """Examples stacked and padded with copies of the first up to `size` rows."""
  examples = examples + [examples[0]] * (size - len(examples))
  keys = ('title_ids', 'title_mask', 'image', 'image_missing', 'query_ids', 'query_mask')
  return {k: np.stack([e[k] for e in examples]) for k in keys if k in examples[0]}


def _naive_recall(config, text, builder, evaluator, model, params, max_queries):
  """Featurise, group and sort every score: Recall@K the slow, obvious way.

  Only the evaluator's jitted towers (`retrieval.tower.TowerEncoder`) are reused (a compile is minutes on a
  loaded CPU); featurising, ordering, padding, grouping and search are done here again.
  """
  featurize = make_featurizer(
    text,
    image_size=config.data.image_size,
    query_len=config.text.query_len,
    title_len=config.text.title_len,
    attribute_features=builder.info.metadata['attribute_features'],
    require_query=False,
  )
  products = [featurize(r) for r in _records(builder, 'catalogue')]
  product_tower, query_tower = evaluator._tower(model, 'product'), evaluator._tower(model, 'query')
  ids = np.array([p['product_id'] for p in products])
  product_emb = np.concatenate(
    [
      product_tower(_batch(products[i : i + 64], 64), params)['embedding']
      for i in range(0, len(products), 64)
    ]
  )[: len(products)]
  targets, texts = collections.defaultdict(set), {}
  for r in _records(builder, 'validation'):
    qid = text.qid(r['query'])
    targets[qid].add(int(r['product_id']))
    texts.setdefault(qid, r['query'])
  qids = sorted(targets)[:max_queries]
  q_ids, q_mask = text.encode_batch([texts[q] for q in qids], config.text.query_len)
  queries = [{'query_ids': i, 'query_mask': m} for i, m in zip(q_ids, q_mask, strict=True)]
  query_emb = query_tower(_batch(queries, 64), params)['embedding'][: len(qids)]
  hits = np.zeros(len(KS))
  for q, emb in zip(qids, np.asarray(query_emb, np.float64), strict=True):
    scores = np.asarray(product_emb, np.float64) @ emb
    ranked = [ids[i] for i in sorted(range(len(ids)), key=lambda i: (-scores[i], ids[i]))]
    hits += [bool(targets[q] & set(ranked[:k])) for k in KS]
  return hits / len(qids)


@pytest.mark.slow
def test_evaluator_equals_a_naive_reference_without_recompiling(config, text, builder):
  model, params = _tiny_model(config)
  evaluator = evaluator_lib.RetrievalEvaluator(
    config, text, builder, 'validation', max_queries=40, ks=KS, batch_size=64, search_chunk=128
  )
  got = evaluator(model, params)
  assert got['num_products'] == 1000 and got['num_queries'] == 40
  # Params replicated over 8 devices give the same metrics, and nothing recompiles.
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ('data',))
  replicated = jax.device_put(
    params, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  )
  assert evaluator(model, replicated) == got
  assert evaluator.traces == 3  # Products, queries, search: once each.

  expected = _naive_recall(config, text, builder, evaluator, model, params, 40)
  np.testing.assert_array_equal([got[f'recall@{k}'] for k in KS], expected)
  assert 0 < got['recall@100'] < 1  # An untrained model: the comparison is not trivial.
  for name in ('p_rel', 'p_cate'):
    assert 0 < got[f'{name}@10'] <= 1 and got[f'{name}_queries'] > 0

  # Decoding images per batch (no cache) gives the batches of the cache.
  uncached = evaluator_lib.RetrievalEvaluator(
    config, text, builder, 'validation', max_queries=10, ks=KS, batch_size=64, image_cache_bytes=0
  )
  assert not isinstance(uncached.featurised.images, np.ndarray)
  for start in (0, 960):  # A full batch and the short last one.
    want = evaluator.featurised.batch(start, start + 64)
    have = uncached.featurised.batch(start, start + 64)
    for k in want:
      np.testing.assert_array_equal(have[k], want[k], err_msg=k)

  # A catalogue cache: the second evaluator reads no catalogue and gives the same metrics.
  cache = {}
  cached = functools.partial(
    evaluator_lib.RetrievalEvaluator,
    config,
    text,
    builder,
    'validation',
    max_queries=40,
    ks=KS,
    batch_size=64,
    search_chunk=128,
    catalogue_cache=cache,
    catalogue_key='k',
  )
  first = cached()
  assert list(cache) == ['k']
  with mock.patch.object(evaluator_lib, 'featurise_catalogue', side_effect=AssertionError('read')):
    second = cached()
  assert first(model, params) == got and second(model, params) == got


_WEIGHTS = np.random.default_rng(0).integers(1, 1 << 15, size=64).astype(np.int32)


def _key(ids):
  """A hash of token-id rows (int32, no overflow for ids < 2048 and <= 32 tokens)."""
  return (ids.astype(jnp.int32) * _WEIGHTS[: ids.shape[-1]]).sum(-1)


class _LookupModel(nn.Module):
  """Embeddings looked up by a hash of the tokens: whatever tables the test writes."""

  def setup(self):
    # Only applied to tables the test writes: the initialisers never run.
    unused = lambda rng: None
    self.title_keys = self.param('title_keys', unused)
    self.product_table = self.param('product_table', unused)
    self.query_keys = self.param('query_keys', unused)
    self.query_table = self.param('query_table', unused)

  def encode_product(self, title_ids, title_mask, image, image_missing):
    row = jnp.searchsorted(self.title_keys, _key(title_ids))
    emb = self.product_table[jnp.minimum(row, self.title_keys.shape[0] - 1)]
    return emb, jnp.zeros((emb.shape[0], 2), emb.dtype)  # (embedding, modal weights)

  def encode_query(self, query_ids, query_mask):
    row = jnp.searchsorted(self.query_keys, _key(query_ids))
    return self.query_table[jnp.minimum(row, self.query_keys.shape[0] - 1)]


@pytest.fixture(scope='module')
def test_split_evaluator(config, text, builder):
  # Batches of 48 and chunks of 96 over 1000 products: padded batches, a merge per chunk.
  return evaluator_lib.RetrievalEvaluator(
    config, text, builder, 'test', max_queries=100, ks=KS, batch_size=48, search_chunk=96
  )


def test_equal_scores_go_to_the_lower_product_id(test_split_evaluator):
  evaluator = test_split_evaluator
  one_key = np.zeros(1, np.int32)  # Every title and query maps to row 0: all scores tie.
  params = {
    'title_keys': one_key,
    'product_table': np.ones((1, 4), np.float32) / 2,
    'query_keys': one_key,
    'query_table': np.ones((1, 4), np.float32) / 2,
  }
  model = _LookupModel()
  rows = evaluator.search(
    evaluator.embed_queries(model, params), evaluator.embed_products(model, params)
  )
  lowest = np.sort(evaluator.product_ids)[: max(KS)]
  assert rows.shape == (evaluator.num_queries, max(KS))
  assert (evaluator.product_ids[rows] == lowest).all()


def test_perfect_embeddings_give_recall_one(test_split_evaluator):
  evaluator = test_split_evaluator
  # Query q's embedding is e_q; a product's is the normalised sum of e_q over the queries
  # that target it, so a query scores its targets > 0 and every other product 0.
  title_keys = np.asarray(_key(evaluator.products['title_ids']))
  query_keys = np.asarray(_key(evaluator.queries['query_ids']))
  assert len(set(query_keys.tolist())) == evaluator.num_queries
  t_keys, t_rows = np.unique(title_keys, return_inverse=True)
  table = np.zeros((len(t_keys), evaluator.num_queries), np.float32)
  row_of = {pid: t_rows[i] for i, pid in enumerate(evaluator.product_ids.tolist())}
  for q, targets in enumerate(evaluator.targets):
    for pid in targets.tolist():
      table[row_of[pid], q] = 1.0
  table /= np.maximum(np.linalg.norm(table, axis=1, keepdims=True), 1e-12)
  q_order = np.argsort(query_keys)
  params = {
    'title_keys': t_keys,
    'product_table': table,
    'query_keys': query_keys[q_order],
    'query_table': np.eye(evaluator.num_queries, dtype=np.float32)[q_order],
  }
  got = evaluator(_LookupModel(), params)
  assert got['recall_queries'] == evaluator.num_queries > 40  # Every query has a target.
  assert got['recall@10'] == 1.0 and got['recall@100'] == 1.0
  assert got['recall@1'] > 0.9  # Below 1 only where a same-title product has a lower id.


@pytest.mark.slow
def test_the_demo_service_embeds_products_as_the_evaluator_does(config, text, builder):
  """`service.encode_catalogue` (the demo searcher's) featurises as the evaluator and the
  export do: the same products give the same embeddings; what the featuriser refuses is
  skipped and counted, not embedded from a blank."""
  from make_jax.retrieval import catalogue as catalogue_lib
  from make_jax.serving import service

  model, params = _tiny_model(config)
  evaluator = evaluator_lib.RetrievalEvaluator(
    config, text, builder, 'test', max_queries=10, ks=KS, batch_size=64
  )
  records = {int(r['product_id']): r for r in _records(builder, 'catalogue')}
  ids = evaluator.product_ids[:150]  # Three batches, the last one short.
  catalogue = catalogue_lib.Catalogue(
    ids=ids,
    titles=[records[i]['title'].decode() for i in ids.tolist()],
    attributes={},
    image_loader=lambda i: None if records[i]['image_missing'] else records[i]['image'],
  )
  rows, emb, weights, skipped = service.encode_catalogue(config, model, params, catalogue, text)
  np.testing.assert_array_equal(rows, np.arange(150))
  assert not skipped
  want = np.asarray(evaluator.embed_products(model, params))[:150]
  np.testing.assert_allclose(emb, want, atol=1e-6)
  assert weights.shape == (150, 2)

  # An undecodable image and an empty title: skipped and counted, the rest embedded alike.
  titles = list(catalogue.titles)
  titles[3] = '  '
  broken = catalogue_lib.Catalogue(
    ids=ids,
    titles=titles,
    attributes={},
    image_loader=lambda i: b'not an image' if i == ids[7] else catalogue.image(i),
  )
  rows, emb, _, skipped = service.encode_catalogue(config, model, params, broken, text)
  assert skipped == collections.Counter({'empty_title': 1, 'bad_image': 1})
  np.testing.assert_array_equal(rows, np.delete(np.arange(150), [3, 7]))
  np.testing.assert_allclose(emb, want[rows], atol=1e-6)
