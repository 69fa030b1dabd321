"""SPEC 9 metrics against hand-computed cases: ties, K beyond the catalogue, no-target queries."""

import numpy as np
import pytest

from make_jax.retrieval import metrics


def test_recall_hand_computed():
  retrieved = np.array([[5, 7, 9], [1, 2, 3], [4, 6, 8]])
  targets = [{9}, {3, 2}, {100}]
  got = metrics.recall_at_k(retrieved, targets, ks=(1, 2, 3))
  np.testing.assert_array_equal(got, [[0, 0, 1], [0, 1, 1], [0, 0, 0]])


def test_query_without_target_is_left_out_of_recall():
  retrieved = np.array([[1, 2], [3, 4]])
  per_query = metrics.recall_at_k(retrieved, [{1}, set()], ks=(1,))
  assert per_query[0, 0] == 1.0 and np.isnan(per_query[1, 0])
  summary = metrics.summarize({'recall': per_query}, ks=(1,))
  assert summary == {'recall@1': 1.0, 'recall_queries': 1.0}


def test_k_larger_than_the_catalogue_means_all_of_it():
  # Catalogue of 3: retrieved has 3 columns; @100 is @3.
  retrieved = np.array([[1, 2, 3]])
  assert metrics.recall_at_k(retrieved, [{3}], ks=(2, 100)).tolist() == [[0.0, 1.0]]
  # A list with no target is a miss at every K, K past its end included.
  assert metrics.recall_at_k(retrieved, [{7}], ks=(2, 3, 100)).tolist() == [[0.0, 0.0, 0.0]]
  cats = np.array([['shoe', 'shirt', 'shoe']])
  got = metrics.p_cate_at_k(cats, ['shoe'], ks=(1, 2, 100))
  np.testing.assert_allclose(got, [[1.0, 0.5, 2 / 3]])


def test_p_rel_shares_of_satisfied_constraints():
  retrieved = {
    'brand': np.array([['nike', 'adidas'], ['puma', 'puma']]),
    'colour': np.array([['Red', 'red'], ['blue', 'green']]),
  }
  # Query 0 asks brand nike + colour red: product 1 satisfies 2/2, product 2 1/2.
  # Query 1 asks only colour blue: 1 then 0. Query 2 asks nothing: not applicable.
  constraints = {'brand': ['nike', '', ''], 'colour': ['red', 'blue', '']}
  retrieved = {k: np.concatenate([v, [['x', 'y']]]) for k, v in retrieved.items()}
  got = metrics.p_rel_at_k(retrieved, constraints, ks=(1, 2))
  np.testing.assert_allclose(got[:2], [[1.0, 0.75], [1.0, 0.5]])
  assert np.isnan(got[2]).all()
  summary = metrics.summarize({'p_rel': got}, ks=(1, 2))
  assert summary['p_rel@2'] == pytest.approx(0.625) and summary['p_rel_queries'] == 2


def test_p_cate_without_category_intent_is_left_out():
  got = metrics.p_cate_at_k(np.array([['a', 'b'], ['a', 'a']]), ['b', ''], ks=(2,))
  assert got[0, 0] == 0.5 and np.isnan(got[1, 0])


def test_bootstrap_interval_is_seeded_and_brackets_the_mean():
  rng = np.random.default_rng(1)
  values = (rng.random(400) < 0.3).astype(float)
  values[:10] = np.nan
  lo, hi = metrics.bootstrap_interval(values, seed=3)
  assert (lo, hi) == metrics.bootstrap_interval(values, seed=3)
  mean = np.nanmean(values)
  assert lo < mean < hi
  # Binomial standard error ~ 0.023: a 95% interval is about +-0.045 wide.
  assert 0.06 < hi - lo < 0.12
  assert np.isnan(metrics.bootstrap_interval(np.full(3, np.nan))).all()
  assert metrics.bootstrap_interval([1.0, 1.0]) == (1.0, 1.0)
  summary = metrics.summarize({'recall': values[:, None]}, ks=(10,), bootstrap_samples=200)
  assert summary['recall@10_lo'] < summary['recall@10'] < summary['recall@10_hi']


def test_bad_input_is_refused():
  with pytest.raises(ValueError, match='ks'):
    metrics.recall_at_k(np.zeros((1, 2), int), [{1}], ks=(0,))
  with pytest.raises(ValueError, match='do not match'):
    metrics.recall_at_k(np.zeros((2, 2), int), [{1}], ks=(1,))
  with pytest.raises(ValueError, match='colour'):
    metrics.p_rel_at_k({'brand': np.zeros((1, 1), str)}, {'colour': ['red']}, ks=(1,))
