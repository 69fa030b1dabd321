"""The one exact top-k (retrieval/topk.py) against a naive full sort: ties, precision, chunks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from make_jax.retrieval import topk


def naive(scores, k, ids=None):
  """Sort each row in full: highest score first, equal scores to the lower id."""
  ids = np.arange(scores.shape[1]) if ids is None else np.asarray(ids)
  rows = [sorted(range(len(r)), key=lambda j: (-r[j], ids[j]))[:k] for r in scores]
  return np.asarray(rows, np.int64).reshape(len(scores), min(k, scores.shape[1]))


def test_exact_top_k_breaks_ties_by_lower_product_id():
  # Products 30 and 10 score 1.0, 20 scores 0.5, 40 scores -1.
  products = np.array([[1.0, 0.0], [0.5, 0.0], [1.0, 0.0], [-1.0, 0.0]])
  ids = np.array([30, 20, 10, 40])
  rows, _ = topk.exact_top_k(np.array([[1.0, 0.0]]), products, 3, ids, dtype=np.float64)
  assert ids[rows].tolist() == [[10, 30, 20]]
  # Without ids the row index breaks the tie; K beyond the catalogue gives all rows.
  rows, _ = topk.exact_top_k(np.array([[1.0, 0.0]]), products, 10, dtype=np.float64)
  assert rows.tolist() == [[0, 2, 1, 3]]


def test_top_k_breaks_ties_by_lower_product_id():
  ids = np.array([30, 10, 20])
  rows, _ = topk.top_k(np.array([[1.0, 1.0, 2.0], [0.0, 0.0, 0.0]]), 5, ids)
  assert ids[rows].tolist() == [[20, 10, 30], [10, 20, 30]]


@pytest.mark.parametrize('k', [1, 3, 7, 20, 50])
def test_ties_across_the_kth_place_go_to_the_lower_id(k):
  # Few distinct values, so many ties straddle the k-th place (where argpartition alone
  # would choose arbitrarily among them).
  rng = np.random.default_rng(k)
  scores = rng.integers(0, 4, size=(64, 40)).astype(np.float32)
  ids = rng.permutation(1000)[:40]
  rows, values = topk.top_k(scores, k, ids)
  np.testing.assert_array_equal(rows, naive(scores, k, ids))
  np.testing.assert_array_equal(values, np.take_along_axis(scores, rows, axis=1))
  assert values.dtype == np.float32


def test_exact_top_k_precision_and_chunks_match_the_naive_ranking():
  rng = np.random.default_rng(0)
  products = rng.normal(size=(300, 16))
  queries = rng.normal(size=(50, 16))
  ids = rng.permutation(300) * 7
  want = naive(queries @ products.T, 25, ids)
  for chunk in (1, 7, 1024):
    rows, scores = topk.exact_top_k(queries, products, 25, ids, dtype=np.float64, chunk=chunk)
    np.testing.assert_array_equal(rows, want)
    assert scores.dtype == np.float64
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ products.T, rows, 1))
  rows32, scores32 = topk.exact_top_k(queries, products, 25, ids)
  assert scores32.dtype == np.float32
  # float32 may swap only near-ties: the same score to float32 rounding.
  np.testing.assert_allclose(scores32, np.take_along_axis(queries @ products.T, want, 1), atol=1e-5)


def test_empty_and_bad_shapes():
  rows, values = topk.top_k(np.zeros((2, 0), np.float32), 5)
  assert rows.shape == (2, 0) and values.shape == (2, 0)
  rows, _ = topk.exact_top_k(np.zeros((0, 4)), np.ones((3, 4)), 2)
  assert rows.shape == (0, 2)
  with pytest.raises(ValueError, match='ids has shape'):
    topk.top_k(np.zeros((1, 3)), 2, np.arange(4))
  with pytest.raises(ValueError, match=r'\[Q, d\]'):
    topk.exact_top_k(np.zeros((1, 3)), np.ones((5, 4)), 2)


def test_running_top_k_equals_the_numpy_rule():
  rng = np.random.default_rng(1)
  n, chunk, k = 70, 16, 12
  products = rng.integers(0, 5, size=(n, 8)).astype(np.float32)  # many ties
  queries = rng.integers(0, 3, size=(9, 8)).astype(np.float32)
  padded = np.zeros((80, 8), np.float32)
  padded[:n] = products
  got = jax.jit(topk.running_top_k, static_argnums=(2, 3, 4))(
    jnp.asarray(queries), jnp.asarray(padded), k, n, chunk
  )
  np.testing.assert_array_equal(np.asarray(got), naive(queries @ products.T, k))
