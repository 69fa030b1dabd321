"""The baseline rows (BM25, untrained MiniLM) and the results driver on a tiny catalogue."""

import functools
import json
import math

import numpy as np
import pytest

from make_jax.evaluation import baselines, evaluate, results, sources
from make_jax.evaluation import eval_set as eval_set_lib

INTENTS = {'query_brand': 'brand', 'query_category': 'articleType', 'query_colour': 'baseColour'}
PRODUCTS = [
  (1, 'Nike Navy Blue Running Shoes', 'Nike', 'Shoes', 'Navy Blue'),
  (2, 'Puma Blue Shirt', 'Puma', 'Shirts', 'Blue'),
  (3, 'Nike Red Shoes', 'Nike', 'Shoes', 'Red'),
  (4, 'Titan Black Analog Watch', 'Titan', 'Watches', 'Black'),
  (5, 'Puma Navy Blue Shirt', 'Puma', 'Shirts', 'Navy Blue'),
  (6, 'Red Chief Brown Leather Shoes', 'Red Chief', 'Shoes', 'Brown'),
  (7, 'Nike Red Shoes', 'Nike', 'Shoes', 'Red'),  # Same title as 3: a BM25 tie.
]
QUERIES = [
  ('navy blue shirts', [5], {'query_colour': 'Navy Blue', 'query_category': 'Shirts'}),
  (
    'nike red shoes',
    [3, 7],
    {'query_brand': 'Nike', 'query_colour': 'Red', 'query_category': 'Shoes'},
  ),
  ('black watches', [4], {'query_colour': 'Black', 'query_category': 'Watches'}),
  ('red chief shoes', [6], {'query_brand': 'Red Chief', 'query_category': 'Shoes'}),
]
DOMAIN_WORDS = ['Navy Blue', 'Red Chief', 'Nike', 'Puma', 'Titan']


def _eval_set():
  catalogue = [
    {'product_id': p, 'title': t, 'brand': b, 'articleType': a, 'baseColour': c}
    for p, t, b, a, c in PRODUCTS
  ]
  records = [
    {'query': q, 'product_id': pid} | {f: intents.get(f, '') for f in INTENTS}
    for q, pids, intents in QUERIES
    for pid in pids
  ]
  return eval_set_lib.from_records(catalogue, records, INTENTS)


def _naive_bm25(query, titles, words, k1=1.5, b=0.75):
  """Lucene's BM25 written out: idf = ln(1 + (N - df + .5) / (df + .5)), and the term
  frequency part tf / (tf + k1 (1 - b + b |d| / avgdl)) (Lucene drops the constant k1 + 1)."""
  docs = [words(t) for t in titles]
  avg = sum(map(len, docs)) / len(docs)
  out = []
  for d in docs:
    s = 0.0
    for term in set(words(query)):
      df = sum(term in x for x in docs)
      tf = d.count(term)
      if df and tf:
        idf = math.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
        s += idf * tf / (tf + k1 * (1 - b + b * len(d) / avg))
    out.append(s)
  return np.asarray(out)


def test_bm25_equals_the_formula_with_domain_words_and_ties():
  es = _eval_set()
  words = baselines.word_splitter(DOMAIN_WORDS)
  assert words('Nike Navy Blue Running Shoes') == ['nike', 'navy blue', 'running', 'shoes']
  ids, scores = baselines.bm25_rankings(es, 100, domain_words=DOMAIN_WORDS)
  assert ids.shape == (4, 7)  # K past the catalogue: all of it.
  for q, query in enumerate(es.queries):
    ref = _naive_bm25(query, es.catalogue.titles, words)
    np.testing.assert_allclose(scores[q], np.sort(ref)[::-1], rtol=1e-5, atol=1e-6)
  # Products 3 and 7 share a title: equal scores, the lower id first.
  assert ids[1, :2].tolist() == [3, 7] and scores[1, 0] == scores[1, 1]
  # 'navy blue' is one term: product 2 (blue, not navy blue) gets nothing from it.
  assert ids[0, 0] == 5
  r = evaluate.evaluate_rankings(
    es, sources.rankings_of(es.queries, ids), ks=(1, 10), bootstrap_samples=0
  )
  assert r['overall']['recall@1'] == 1.0


@pytest.fixture(scope='module')
def minilm():
  from make_jax.models import bert_import

  if not (bert_import.default_checkpoint_dir() / 'model.safetensors').is_file():
    pytest.skip('all-MiniLM-L6-v2 is not installed')
  return baselines.MiniLM(batch_size=8, cache_size=0)


def test_minilm_ranks_the_tiny_catalogue(minilm):
  # The encoder's parity with transformers.BertModel is tests/test_bert_import.py's; here:
  # unit norm, and padding (a 16- vs a 32-token batch) does not move an embedding.
  es = _eval_set()
  alone = minilm(['red shoes'])
  emb = minilm(['red shoes', 'a somewhat longer product title ' * 4])
  np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(emb[0], alone[0], atol=1e-5)
  ids, scores = baselines.minilm_rankings(es, 3, model=minilm)
  assert ids.shape == (4, 3) and (np.diff(scores, axis=1) <= 1e-7).all()
  r = evaluate.evaluate_rankings(
    es, sources.rankings_of(es.queries, ids), ks=(3,), bootstrap_samples=0
  )
  assert r['overall']['recall@3'] >= 0.75, r['per_query']
  # The text cache gives what encoding gives, in the caller's order, repeats included.
  minilm.cache_size = 2
  try:
    cached = minilm(['red shoes', 'watch', 'red shoes', 'belt'])
  finally:
    minilm.cache_size, minilm._cache = 0, {}
  np.testing.assert_allclose(cached[[0, 2]], np.concatenate([alone, alone]), atol=1e-5)
  np.testing.assert_allclose(cached[[1, 3]], minilm(['watch', 'belt']), atol=1e-5)


def test_results_driver_writes_scored_rows(tmp_path):
  es = _eval_set()
  run = functools.partial(
    results.run_results,
    out_dir=tmp_path,
    load_split=lambda config, split: (None, es, DOMAIN_WORDS),
    splits=[('default', 'test')],
    ks=(1, 10),
    bootstrap_samples=10,
  )
  lines = []
  out = run(['bm25', 'make', 'two_tower_text'], progress=lines.append)
  assert lines[0] == 'bm25: BM25 (titles)' and lines[1].startswith('bm25: run in ')
  assert lines[1].endswith('recall@1 1.0000, recall@10 1.0000')
  assert lines[3].startswith('two_tower_text: not trained') and len(lines) == 6
  bm25 = out['rows']['bm25']['splits']['default/test']
  assert bm25['overall']['recall@1'] == 1.0
  assert out['rows']['make']['status'].startswith('not trained')
  assert out['rows']['two_tower_text']['status'].startswith('not trained')
  # The ranked lists score the same through the file, as tools/evaluate.py reads them.
  ranked, counts = sources.read_ranked_lines(tmp_path / 'bm25' / 'default_test.jsonl')
  assert counts['bad_lines'] == 0
  again = evaluate.evaluate_rankings(es, ranked, ks=(1, 10), bootstrap_samples=10)
  assert again['overall'] == bm25['overall']
  saved = json.loads((tmp_path / 'results.json').read_text())
  assert saved['rows']['bm25']['splits']['default/test']['overall'] == bm25['overall']
  table = (tmp_path / 'results.md').read_text()
  assert '| BM25 (titles) | default/test | 1.0000' in table and 'MAKE | not run' in table
  assert table.splitlines()[0].endswith('| training (min) |')
  assert table.splitlines()[2].endswith('| - |')  # BM25 is not trained.
  # A later run of one row in the same directory keeps the other rows, in table order.
  again = run(['make'])
  assert list(again['rows']) == ['bm25', 'two_tower_text', 'make']
  assert again['rows']['bm25'] == saved['rows']['bm25']
  assert '| BM25 (titles) | default/test | 1.0000' in (tmp_path / 'results.md').read_text()
  # The served row needs a scored trained row to serve: none here, so it says so.
  served_row = run(['best_relevance_control'])['rows']['best_relevance_control']
  assert 'no trained row' in served_row['status'] and not served_row['splits']


def test_overrides_name_real_config_fields():
  from configs import results as results_config

  config = results_config.get_config()
  for row in results.ROWS:
    results.apply_overrides(config, row.overrides)
  with pytest.raises(KeyError, match='loss.cdns'):
    results.apply_overrides(config, {'loss.cdns': 1.0})


def test_table_gives_each_trained_row_its_training_minutes():
  overall = {'recall@10': 0.5, 'recall@10_lo': 0.4, 'recall@10_hi': 0.6}
  rows = {
    'make': {
      'label': 'MAKE',
      'status': 'run',
      'train_seconds': 90.0,
      'splits': {'d/t': {'overall': overall}},
    },
    'bm25': {'label': 'BM25', 'status': 'run', 'splits': {'d/t': {'overall': overall}}},
  }
  lines = results.markdown_table({'rows': rows}, ks=[10], judged_ks=[]).splitlines()
  assert lines[0] == '| row | split | recall@10 | training (min) |'
  assert lines[2] == '| MAKE | d/t | 0.5000 [0.400, 0.600] | 1.5 |'
  assert lines[3] == '| BM25 | d/t | 0.5000 [0.400, 0.600] | - |'
