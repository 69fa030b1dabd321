"""Offline evaluation (SPEC 9) against hand-computed cases: ties, no target, K past the catalogue.

Every expected number below is worked out by hand from the five-product catalogue.
"""

import json

import numpy as np
import pytest

from make_jax.evaluation import eval_set as eval_set_lib
from make_jax.evaluation import evaluate, sources
from make_jax.retrieval import metrics

INTENTS = {'query_brand': 'brand', 'query_category': 'articleType', 'query_colour': 'baseColour'}
CATALOGUE = [
  # id, title, brand, article type, colour
  (50, 'Nike Red Shoes', 'Nike', 'Shoes', 'Red'),
  (10, 'Puma Blue Shirt', 'Puma', 'Shirt', 'Blue'),
  (30, 'Nike Blue Shoes', 'Nike', 'Shoes', 'Blue'),
  (20, 'Puma Red Shoes', 'Puma', 'Shoes', 'Red'),
  (40, 'Adidas Black Watch', 'Adidas', 'Watch', 'Black'),
]


def _product(pid, title, brand, article, colour):
  return {
    'product_id': pid,
    'title': title,
    'brand': brand,
    'articleType': article,
    'baseColour': colour,
  }


def _query(text, pid, **intents):
  return {'query': text, 'product_id': pid} | {f: intents.get(f, '') for f in INTENTS}


def _eval_set():
  catalogue = [_product(*p) for p in CATALOGUE]
  records = [
    # 'nike shoes': brand + category; targets 50 and 30.
    _query('nike shoes', 50, query_brand='Nike', query_category='Shoes'),
    _query('nike shoes', 30, query_brand='Nike', query_category='Shoes'),
    # 'red shoes': colour + category; target 99 is not in the catalogue: no target.
    _query('red shoes', 99, query_colour='Red', query_category='Shoes'),
    # 'puma': brand only (no category intent: left out of P_cate).
    _query('puma', 10, query_brand='Puma'),
    _query('puma', 20, query_brand='Puma'),
  ]
  return eval_set_lib.from_records(catalogue, records, INTENTS)


def test_eval_set_groups_queries_and_keeps_catalogue_targets():
  es = _eval_set()
  assert es.catalogue.ids.tolist() == [10, 20, 30, 40, 50]
  assert es.catalogue.titles[0] == 'Puma Blue Shirt'
  assert es.queries == ['nike shoes', 'red shoes', 'puma']
  assert [t.tolist() for t in es.targets] == [[30, 50], [], [10, 20]]
  assert es.counts['targets_not_in_catalogue'] == 1 and es.counts['queries_without_target'] == 1
  assert es.query_categories() == ['Shoes', 'Shoes', '']
  assert es.catalogue.rows_of_ids(np.array([40, 41, 10])).tolist() == [3, -1, 0]


def test_hand_computed_recall_p_rel_p_cate_with_k_past_the_catalogue():
  es = _eval_set()
  rankings = {
    'nike shoes': [20, 30, 50, 10, 40],  # First target at place 2.
    'red shoes': [50, 20, 30, 10, 40],
    'puma': [40, 50, 30, 10, 20],  # First target at place 4.
  }
  r = evaluate.evaluate_rankings(
    es, rankings, ks=(1, 2, 10), judged_ks=(2, 10), bootstrap_samples=200
  )
  o = r['overall']
  # Recall: 'red shoes' has no target and is left out; K=10 > 5 products means all 5.
  assert o['recall_queries'] == 2
  assert (o['recall@1'], o['recall@2'], o['recall@10']) == (0.0, 0.5, 1.0)
  q = {row['query']: row for row in r['per_query']}
  assert q['red shoes']['recall@10'] is None and q['puma']['recall@2'] == 0.0
  # P_rel@2 of 'nike shoes': 20 (Puma Shoes) satisfies 1/2, 30 (Nike Shoes) 2/2 -> 0.75.
  # 'red shoes': 50 (Red Shoes) 1, 20 (Red Shoes) 1 -> 1. 'puma': 40 0, 50 0 -> 0.
  assert q['nike shoes']['p_rel@2'] == 0.75 and q['red shoes']['p_rel@2'] == 1.0
  assert q['puma']['p_rel@2'] == 0.0
  # @10 over all 5: nike shoes: .5+1+1+0+0 = 2.5/5; red shoes: 1+1+.5+0+0 = 2.5/5;
  # puma: 0+0+0+1+1 = 2/5.
  assert q['nike shoes']['p_rel@10'] == pytest.approx(0.5)
  assert q['red shoes']['p_rel@10'] == pytest.approx(0.5)
  assert q['puma']['p_rel@10'] == pytest.approx(0.4)
  assert o['p_rel@10'] == pytest.approx((0.5 + 0.5 + 0.4) / 3)
  # P_cate: 'puma' has no category intent. nike shoes @2: Shoes, Shoes -> 1; @10: 3/5.
  assert q['puma']['p_cate@10'] is None and o['p_cate_queries'] == 2
  assert q['nike shoes']['p_cate@10'] == pytest.approx(0.6)
  assert o['p_cate@2'] == 1.0
  # Bootstrap intervals bracket the mean.
  assert o['p_rel@10_lo'] <= o['p_rel@10'] <= o['p_rel@10_hi']
  assert r['unscored_ks'] == []


def test_short_lists_pad_as_misses_and_unscorable_ks_are_named():
  es = _eval_set()
  # Lists of 2 in a catalogue of 5: K=10 cannot be scored; K=1, 2 can.
  r = evaluate.evaluate_rankings(
    es,
    {'nike shoes': [30], 'red shoes': [50, 20], 'puma': [40, 50]},
    ks=(1, 2, 10),
    judged_ks=(2,),
    bootstrap_samples=0,
  )
  assert r['ks'] == [1, 2] and r['unscored_ks'] == [10]
  q = {row['query']: row for row in r['per_query']}
  # 'nike shoes' returned one product: P_rel@2 = (1 + 0) / 2.
  assert q['nike shoes']['recall@1'] == 1.0 and q['nike shoes']['p_rel@2'] == 0.5
  # A full-catalogue list and a short one without a target: the short one is a miss at
  # every K, also at K past the catalogue (not a hit because its list ended).
  r = evaluate.evaluate_rankings(
    es,
    {'nike shoes': [10, 20, 30, 40, 50], 'red shoes': [], 'puma': [40]},
    ks=(10,),
    judged_ks=(10,),
    bootstrap_samples=0,
  )
  q = {row['query']: row for row in r['per_query']}
  assert q['puma']['recall@10'] == 0.0 and q['nike shoes']['recall@10'] == 1.0
  assert q['puma']['p_rel@10'] == 0.0


def test_unknown_repeated_and_missing():
  es = _eval_set()
  with pytest.raises(ValueError, match='1 of 3 queries have no ranked list'):
    evaluate.evaluate_rankings(es, {'nike shoes': [30], 'puma': [10]}, ks=(1,))
  r = evaluate.evaluate_rankings(
    es,
    {'nike shoes': [77, 30, 30], 'puma': [10], 'other': [1]},
    ks=(1, 2),
    judged_ks=(2,),
    allow_missing=True,
    bootstrap_samples=0,
  )
  c = r['counts']
  assert (c['missing_queries'], c['unknown_product_ids'], c['repeated_product_ids']) == (1, 1, 1)
  assert c['ignored_queries'] == 1
  q = {row['query']: row for row in r['per_query']}
  # 77 holds place 1 (never relevant); 30 is at place 2.
  assert q['nike shoes']['recall@1'] == 0.0 and q['nike shoes']['recall@2'] == 1.0
  assert q['nike shoes']['p_rel@2'] == 0.5


def test_p_rel_takes_the_best_generation():
  # 'sports shoes' made two ways: category Sports Shoes, or usage Sports + category Shoes.
  intents = {'query_category': 'articleType', 'query_usage': 'usage'}
  catalogue = [
    {'product_id': 1, 'title': 'a', 'articleType': 'Sports Shoes', 'usage': 'Casual'},
    {'product_id': 2, 'title': 'b', 'articleType': 'Shoes', 'usage': 'Sports'},
    {'product_id': 3, 'title': 'c', 'articleType': 'Shoes', 'usage': 'Casual'},
  ]
  records = [
    {'query': 'sports shoes', 'product_id': 1, 'query_category': 'Sports Shoes', 'query_usage': ''},
    {'query': 'sports shoes', 'product_id': 2, 'query_category': 'Shoes', 'query_usage': 'Sports'},
  ]
  es = eval_set_lib.from_records(catalogue, records, intents)
  assert len(es.generations[0]) == 2 and es.query_categories() == ['']
  rel = evaluate.relevance(es, np.array([[0, 1, 2, -1]]))
  # 1: generation 1 fully; 2: generation 2 fully; 3: Shoes of generation 2 only; -1: none.
  np.testing.assert_allclose(rel, [[1.0, 1.0, 0.5, 0.0]])


def test_ranked_lines_round_trip_and_bad_lines_are_counted(tmp_path):
  path = tmp_path / 'r.jsonl'
  sources.write_ranked_lines(
    path, ['a b', 'c'], np.array([[3, 1], [2, 4]]), np.array([[0.5, 0.25], [1.0, 0.0]])
  )
  with open(path, 'ab') as f:
    f.write(b'not json\n{"query": "d", "product_ids": [1.5]}\n\xff\xfe\n')
    f.write(json.dumps({'query': 'c', 'product_ids': [9]}).encode() + b'\n')
  got, counts = sources.read_ranked_lines(path)
  assert got == {'a b': [3, 1], 'c': [2, 4]}
  assert counts == {'lines': 6, 'bad_lines': 3, 'duplicate_queries': 1}


def test_search_embeddings_and_query_alignment_by_qid(tmp_path):
  es = _eval_set()
  # Products 10..50 on a line; product 99 is not in the catalogue; 40 has no embedding.
  pids = np.array([50, 10, 30, 20, 99])
  pemb = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [9.0, 9.0]])
  ids, scores, counts = sources.search_embeddings(es, np.array([[1.0, 0.0]]), pids, pemb, 10)
  # 30 and 50 tie at 1.0: 30 first; 40 cannot be retrieved.
  assert ids.tolist() == [[30, 50, 20, 10]] and scores[0, 0] == 1.0
  assert counts == {
    'embedded_products_not_in_catalogue': 1,
    'catalogue_products_without_embedding': 1,
  }
  # Query embeddings keyed by qid, in another order and word order.
  qids = sources.query_qids(['shoes nike', 'puma'])
  np.savez(tmp_path / 'q.npz', ids=qids, embedding=np.eye(2, dtype=np.float32))
  q_ids, q_emb = sources.load_embeddings(tmp_path / 'q.npz')
  with pytest.raises(ValueError, match='1 of 3 queries have no embedding'):
    sources.align_queries(es, q_ids, q_emb)
  rows, emb = sources.align_queries(es, q_ids, q_emb, allow_missing=True)
  assert rows.tolist() == [0, 2] and emb.tolist() == [[1.0, 0.0], [0.0, 1.0]]


def test_single_generation_p_rel_and_p_cate_equal_the_in_training_metrics():
  # The in-training evaluator (retrieval/evaluator.py) scores with metrics.p_rel_at_k /
  # p_cate_at_k; with one generation per query the offline judge must agree with them.
  es = _eval_set()
  rows = np.array([[1, 4, 2, 0, 3], [4, 1, 2, 3, 0], [3, 2, 1, 0, 4]])
  rankings = sources.rankings_of(es.queries, es.catalogue.ids[rows])
  r = evaluate.evaluate_rankings(es, rankings, ks=(1,), judged_ks=(1, 3, 10), bootstrap_samples=0)
  names = sorted({a for g in es.generations for a, _ in g[0]})
  constraints = {a: [dict(g[0]).get(a, '') for g in es.generations] for a in names}
  retrieved = {a: es.catalogue.attributes[a][rows] for a in names}
  want_rel = metrics.p_rel_at_k(retrieved, constraints, (1, 3, 10))
  cats = es.query_categories()
  want_cate = metrics.p_cate_at_k(es.catalogue.attributes['articleType'][rows], cats, (1, 3, 10))
  for q, row in enumerate(r['per_query']):
    for j, k in enumerate((1, 3, 10)):
      assert row[f'p_rel@{k}'] == pytest.approx(want_rel[q, j])
      want = want_cate[q, j]
      assert (row[f'p_cate@{k}'] is None) if np.isnan(want) else row[f'p_cate@{k}'] == want


def test_written_queries_read_back_as_the_batch_search_cli_reads_them(tmp_path):
  from make_jax.serving import batch

  queries = ['nike shoes', '红色 连衣裙', ' puma  ']
  sources.write_queries(tmp_path / 'q.txt', queries)
  got, counts = batch.read_queries(str(tmp_path / 'q.txt'))
  assert got == [(i + 1, q, None) for i, q in enumerate(queries)]
  assert counts == {'lines': 3, 'kept': 3, 'invalid_utf8': 0, 'rejected': 0}
  with pytest.raises(ValueError, match='line breaks'):
    sources.write_queries(tmp_path / 'bad.txt', ['a\nb'])
