"""Searcher: the online path equals brute-force search of the encoded query, the table
path serves table hits in order, relevance control applies to both (strict: satisfying
products only; backfill: those first, then the best of the rest, k long), and concurrent
queries are batched into fewer model calls without changing their embeddings.

A tiny random model (configs/tiny.py) and a vocabulary learned from the catalogue's
titles; product embeddings are random unit vectors (the search is what is tested).
"""

import collections
import os
import sys
import threading

import flax.linen as nn
import jax
import numpy as np
import pytest

from configs import tiny
from make_jax.datasets import synthetic
from make_jax.models import make_model
from make_jax.retrieval import catalogue as catalogue_lib
from make_jax.serving import ann, filters, search
from make_jax.serving import encoder as encoder_lib
from make_jax.serving import table as table_lib
from make_jax.text.preprocess import TextPreprocessor

K = 5


@pytest.fixture(scope='module')
def parts():
  config = tiny.get_config()
  cat = synthetic.generate(synthetic.SyntheticSpec(num_products=400, num_pairs=400))
  catalogue = catalogue_lib.from_synthetic(cat)
  pre = TextPreprocessor.from_corpus(catalogue.titles, 300)
  model = make_model.build_model(config)
  # Only the query tower: `encode_query` creates the parameters it uses.
  ids = np.zeros((1, config.text.query_len), np.int32)
  variables = jax.jit(lambda r: model.init({'params': r}, ids, ids + 1, method=model.encode_query))(
    jax.random.key(0)
  )
  params = nn.meta.unbox(variables)['params']
  enc = encoder_lib.BatchingQueryEncoder(
    model, params, pre, query_len=config.text.query_len, buckets=(6,), max_batch=4, max_wait_ms=50.0
  )
  rng = np.random.default_rng(0)
  emb = rng.standard_normal((len(catalogue), config.model.embed_dim)).astype(np.float32)
  emb /= np.linalg.norm(emb, axis=1, keepdims=True)
  relevance = filters.RelevanceControl.of_catalogue(catalogue)
  filtered = filters.FilteredSearch(ann.ExactIndex(emb), emb, relevance.inverted)
  weights = rng.dirichlet([1, 1], len(catalogue)).astype(np.float32)

  def reference(text):
    ids, mask = pre.encode_batch([text], config.text.query_len)
    return np.asarray(
      model.apply({'params': params}, ids, mask, method=model.encode_query), np.float32
    )[0]

  def searcher(table=None, **kwargs):
    return search.Searcher(
      catalogue,
      pre,
      filtered,
      relevance,
      encoder=enc,
      table=table,
      modal_weights=weights,
      **kwargs,
    )

  yield dict(catalogue=catalogue, pre=pre, enc=enc, emb=emb, ref=reference, searcher=searcher)
  enc.close()


def test_online_path_equals_brute_force_of_the_encoded_query(parts):
  s = parts['searcher']()
  text = 'new classic vintage'  # No brand or category: unfiltered.
  answer = s.search(text, K)
  assert answer.path == 'online' and answer.fallback_reason == 'table_miss'
  assert answer.strategy == 'none' and answer.filters == {}
  q = parts['ref'](text)
  scores = parts['emb'] @ q
  want = np.argsort(-scores, kind='stable')[:K]
  assert [r.product_id for r in answer.results] == want.tolist()
  np.testing.assert_allclose([r.score for r in answer.results], scores[want], atol=1e-5)
  assert set(answer.latency_ms) >= {'understand', 'encode', 'search', 'total'}
  r0 = answer.results[0]
  assert r0.title == parts['catalogue'].titles[r0.product_id]
  assert r0.title_weight + r0.image_weight == pytest.approx(1.0, abs=1e-6)


def test_online_path_applies_the_filter(parts):
  s, cat = parts['searcher'](relevance_mode=filters.STRICT), parts['catalogue']
  brand, category = cat.attributes['brand'][0], cat.attributes['category'][0]
  text = f'{brand} {category}s'  # A plural still names the category.
  answer = s.search(text, K)
  assert answer.filters == {'brand': [brand], 'category': [category]}
  assert answer.strategy == 'exact_subset'
  rows = [
    i
    for i in range(len(cat))
    if cat.attributes['brand'][i] == brand and cat.attributes['category'][i] == category
  ]
  assert answer.candidates == len(rows)
  scores = parts['emb'][rows] @ parts['ref'](text)
  want = np.array(rows)[np.argsort(-scores, kind='stable')[:K]]
  assert [r.product_id for r in answer.results] == want.tolist()
  assert answer.relevance_mode == 'strict' and all(r.satisfies_filter for r in answer.results)


def _satisfies(cat, answer):
  return [
    all(cat.attributes[f][r.product_id] in v for f, v in answer.filters.items())
    for r in answer.results
  ]


def test_backfill_completes_the_strict_answer(parts):
  """The default mode: the strict answer, then the best products outside the filter."""
  s, cat = parts['searcher'](), parts['catalogue']
  brand, category = cat.attributes['brand'][0], cat.attributes['category'][0]
  text = f'{brand} {category}s'
  k = 40  # More than the products of one brand and category.
  strict = s.search(text, k, relevance_mode=filters.STRICT)
  answer = s.search(text, k)
  assert answer.relevance_mode == 'backfill' and answer.filters == strict.filters
  ids = [r.product_id for r in answer.results]
  m = len(strict.results)
  assert len(ids) == k == len(set(ids)) and 0 < m < k
  assert ids[:m] == [r.product_id for r in strict.results]
  assert [r.satisfies_filter for r in answer.results] == [True] * m + [False] * (k - m)
  assert _satisfies(cat, answer) == [r.satisfies_filter for r in answer.results]
  outside = np.array(
    [
      i
      for i in range(len(cat))
      if (cat.attributes['brand'][i], cat.attributes['category'][i]) != (brand, category)
    ]
  )
  scores = parts['emb'][outside] @ parts['ref'](text)
  assert ids[m:] == outside[np.argsort(-scores, kind='stable')[: k - m]].tolist()
  # Unfiltered: every product satisfies; the same list in both modes.
  plain = s.search('new classic vintage', K)
  assert all(r.satisfies_filter for r in plain.results) and len(plain.results) == K
  with pytest.raises(ValueError, match='relevance mode'):
    s.search(text, K, relevance_mode='loose')


def test_table_path_serves_hits_in_order_and_filters_them(parts):
  pre, cat = parts['pre'], parts['catalogue']
  brand = cat.attributes['brand'][3]
  ids = np.array([3, 99999, 10, 11, 12, 13, 14, 15], np.int64)  # 99999: not in the catalogue.
  scores = np.linspace(1, 0.3, len(ids)).astype(np.float32)
  table = table_lib.DictTable(
    {pre.qid('some cached query'): (ids, scores), pre.qid(brand): (ids, scores)}
  )
  s = parts['searcher'](table)
  answer = s.search('cached query some', K)  # Same words in another order: same qid.
  assert answer.path == 'table' and answer.fallback_reason is None
  assert [r.product_id for r in answer.results] == [3, 10, 11, 12, 13]
  assert 'encode' not in answer.latency_ms
  # The brand filter keeps too few of the table's products: the online path answers.
  answer = s.search(brand, K)
  assert answer.path == 'online' and answer.fallback_reason == 'table_short_after_filter'
  assert all(cat.attributes['brand'][r.product_id] == brand for r in answer.results)
  assert len(answer.results) == K


def test_table_row_shorter_than_k(parts):
  """Strict serves a short table row as it is; backfill answers online, k long."""
  pre = parts['pre']
  table = table_lib.DictTable({pre.qid('short cached query'): (np.arange(3), np.ones(3))})
  strict = parts['searcher'](table, relevance_mode=filters.STRICT).search('short cached query', K)
  assert strict.path == 'table' and strict.filters == {}
  assert [r.product_id for r in strict.results] == [0, 1, 2]
  answer = parts['searcher'](table).search('short cached query', K)
  assert answer.path == 'online' and answer.fallback_reason == 'table_short'
  assert len(answer.results) == K and all(r.satisfies_filter for r in answer.results)


def test_search_batch_equals_one_by_one(parts):
  s = parts['searcher']()
  texts = ['red dress', 'vintage', 'aurora sneakers', 'soft light premium hat']
  batch = s.search_batch(texts, K)
  for text, got in zip(texts, batch, strict=True):
    one = s.search(text, K)
    assert [r.product_id for r in got.results] == [r.product_id for r in one.results]
    np.testing.assert_allclose(
      [r.score for r in got.results], [r.score for r in one.results], atol=1e-5
    )


def test_a_query_is_prepared_once_and_looked_up_once(parts, monkeypatch):
  """The query's words are computed once (`TextPreprocessor.query`) and carried to every
  stage: one normalisation per query, one table lookup per query in a batch too."""
  pre = parts['pre']
  table = table_lib.DictTable({pre.qid('some cached query'): (np.arange(8), np.ones(8))})
  s = parts['searcher'](table)
  texts = ['cached query some', 'vintage red dress', 'soft light premium hat']
  for text in texts:
    q = pre.query(text)
    assert list(q.words) == pre.words(text) and list(q.known_words) == pre.known_words(text)
    assert list(q.encoding_words) == pre.encoding_words(text)
  want = [[r.product_id for r in a.results] for a in s.search_batch(texts, K)]

  from make_jax.text import normalize as normalize_lib

  calls = {'normalize': 0, 'lookup': 0}
  real_normalize, real_lookup = normalize_lib.normalize, table.lookup

  def normalize(text):
    calls['normalize'] += 1
    return real_normalize(text)

  def lookup(words):
    calls['lookup'] += 1
    return real_lookup(words)

  monkeypatch.setattr(normalize_lib, 'normalize', normalize)
  monkeypatch.setattr(table, 'lookup', lookup)
  got = s.search_batch(texts, K)
  assert [[r.product_id for r in a.results] for a in got] == want
  assert [a.path for a in got] == ['table', 'online', 'online']
  assert calls == {'normalize': len(texts), 'lookup': len(texts)}
  calls.update(normalize=0, lookup=0)
  s.search(texts[1], K)
  assert calls == {'normalize': 1, 'lookup': 1}


def test_concurrent_queries_are_batched_and_unchanged(parts):
  enc, ref = parts['enc'], parts['ref']
  texts = [f'{w} dress' for w in ('red', 'blue', 'green', 'aurora', 'bolt', 'new', 'soft', 'x')]
  texts += ['a b c d e f g h i j k l m n']  # Longer than the longest bucket: truncated.
  out = [None] * len(texts)
  barrier = threading.Barrier(len(texts))

  def work(i):
    barrier.wait()
    out[i] = enc.encode(texts[i])

  calls = enc.calls
  threads = [threading.Thread(target=work, args=(i,)) for i in range(len(texts))]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert enc.calls - calls < len(texts)
  for text, got in zip(texts, out, strict=True):
    np.testing.assert_allclose(got, ref(text), atol=1e-5, err_msg=text)


def test_miss_without_encoder_is_a_clear_error(parts):
  s = parts['searcher']()
  s.encoder = None
  with pytest.raises(LookupError, match='not in the table'):
    s.search('anything', K)
  with pytest.raises(ValueError, match='k must be'):
    parts['searcher']().search('anything', 0)


def _serving_files_entered(fn):
  """Runs fn() and counts, per make_jax/serving file, the calls into it from another file
  (on this thread: the batching encoder's worker is not the query's path)."""
  counts: collections.Counter = collections.Counter()

  def profile(frame, event, arg):
    if event != 'call' or frame.f_back is None:
      return
    callee, caller = frame.f_code.co_filename, frame.f_back.f_code.co_filename
    if f'{os.sep}make_jax{os.sep}serving{os.sep}' in callee and callee != caller:
      counts[os.path.basename(callee)] += 1

  sys.setprofile(profile)
  try:
    result = fn()
  finally:
    sys.setprofile(None)
  return result, counts


def test_the_path_of_one_query_enters_each_serving_file_once(parts):
  """Table hit, table miss, filtered online search, a table row the filter leaves short,
  and a query with no known word: each serving module the query passes through is
  entered once (search.py from the caller, the table and relevance control from the
  Searcher, the encoder and the index from relevance control)."""
  pre, cat = parts['pre'], parts['catalogue']
  brand = cat.attributes['brand'][3]
  ids = np.array([3, 10, 11, 12, 13, 14, 15, 16], np.int64)
  table = table_lib.DictTable(
    {pre.qid('some cached query'): (ids, np.linspace(1, 0.3, 8)), pre.qid(brand): (ids, np.ones(8))}
  )
  s = parts['searcher'](table)
  s.search('vintage', K)  # Compiles the encoder's bucket outside the traced calls.
  base = {'search.py', 'filters.py', 'query_understanding.py'}
  online = base | {'table.py', 'encoder.py'}
  cases = [
    ('cached query some', 'table', None, base | {'table.py'}),
    ('vintage', 'online', 'table_miss', online),
    (f'{brand} {cat.attributes["category"][3]}', 'online', 'table_miss', online),
    (brand, 'online', 'table_short_after_filter', online),
    ('\u2603\u2603', 'none', 'no_known_words', base),
  ]
  for text, path, reason, files in cases:
    answer, counts = _serving_files_entered(lambda t=text: s.search(t, K))
    assert (answer.path, answer.fallback_reason) == (path, reason), text
    # The index is asked unless a small filtered subset, scored exactly, fills the list.
    backfilled = not all(r.satisfies_filter for r in answer.results)
    if path == 'online' and (answer.strategy != 'exact_subset' or backfilled):
      files = files | {'ann.py'}
    assert set(counts) == files, (text, dict(counts))
    assert all(n == 1 for n in counts.values()), (text, dict(counts))
