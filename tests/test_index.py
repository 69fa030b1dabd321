"""ScaNN index: exact when brute force, tuned recall, movable, refuses other models, atomic,
upsert and delete by product id."""

import os
import pathlib

import numpy as np
import pytest

from make_jax.export import manifest as manifest_lib
from make_jax.export import scann_index as index_lib
from make_jax.retrieval import topk

EXPORT = {'checkpoint_step': 7, 'config_fingerprint': 'abc123', 'source': {'split': 'x'}}


def clustered(n: int, d: int, seed: int = 0, clusters: int = 50) -> np.ndarray:
  """Unit vectors from a normalised Gaussian mixture (random unit vectors have no
  neighbourhood structure)."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(clusters, d))
  x = centres[rng.integers(clusters, size=n)] + 0.5 * rng.normal(size=(n, d))
  return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope='module')
def data():
  emb = clustered(3000, 16)
  ids = np.arange(3000, dtype=np.int64) * 7 + 1000  # Ids are not row numbers.
  return ids, emb, clustered(200, 16, seed=1)


def test_configuration_follows_catalogue_size():
  assert index_lib.configure(10_000).brute_force
  big = index_lib.configure(1_000_000)
  assert not big.brute_force and big.num_leaves == 2000 and big.reorder >= 2 * big.k
  # Leaves searched hold ~100 k candidates: 20 leaves of 500 products at 1M, 82 of ~122 at 60k.
  assert big.leaves_to_search == 20
  small = index_lib.configure(60_000)
  assert (small.num_leaves, small.leaves_to_search) == (490, 82)
  assert index_lib.configure(10**8).leaves_to_search == 8  # Never fewer than 8.


def test_brute_force_equals_numpy_top_k(data):
  ids, emb, queries = data
  index = index_lib.build(emb, ids, EXPORT, index_lib.configure(len(ids), k=10))
  found, scores = index.search_batched(queries, 10)
  rows, want_scores = topk.exact_top_k(queries, emb, 10)
  np.testing.assert_array_equal(found, ids[rows])
  np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)
  one, _ = index.search(queries[3], 10)
  np.testing.assert_array_equal(one, ids[rows[3]])


def test_tree_index_tuned_reaches_target_recall(data):
  ids, emb, queries = data
  cfg = index_lib.configure(len(ids), k=20, brute_force_below=1000)
  assert not cfg.brute_force
  index = index_lib.build(emb, ids, EXPORT, cfg)
  result = index_lib.tune(index, ids, emb, queries, k=20, target_recall=0.95)
  assert result['recall'] >= 0.95 and index.manifest['search']['reached_target']
  found, _ = index.search_batched(queries, 20)
  truth = ids[topk.exact_top_k(queries, emb, 20)[0]]
  assert index_lib.recall(found, truth) == pytest.approx(result['recall'])


def test_moved_index_loads_and_answers_identically(data, tmp_path):
  ids, emb, queries = data
  cfg = index_lib.configure(len(ids), k=10, brute_force_below=1000)
  index = index_lib.build(emb, ids, EXPORT, cfg)
  index.save(tmp_path / 'a' / 'idx')
  os.rename(tmp_path / 'a', tmp_path / 'b')
  loaded = index_lib.load(tmp_path / 'b' / 'idx', fingerprint='abc123', dim=16)
  for got, want in zip(loaded.search_batched(queries), index.search_batched(queries), strict=True):
    np.testing.assert_array_equal(got, want)
  assert loaded.manifest['checkpoint_step'] == 7 and loaded.manifest['count'] == len(ids)


def test_a_mismatched_model_is_refused_with_what_to_rebuild(data, tmp_path):
  ids, emb, _ = data
  index_lib.build(emb[:100], ids[:100], EXPORT).save(tmp_path / 'idx')
  with pytest.raises(manifest_lib.ManifestError, match='fingerprint abc123 != .*tools.build_index'):
    index_lib.load(tmp_path / 'idx', fingerprint='other')
  with pytest.raises(manifest_lib.ManifestError, match='dimension 16 != the model.s 32'):
    index_lib.load(tmp_path / 'idx', dim=32)


def test_an_interrupted_build_leaves_no_index_that_loads(data, tmp_path, monkeypatch):
  ids, emb, _ = data
  index = index_lib.build(emb[:100], ids[:100], EXPORT)

  def crash(directory, relative_path=False):
    pathlib.Path(directory, 'scann_assets.pbtxt').write_text('partial')
    raise KeyboardInterrupt

  monkeypatch.setattr(index.searcher, 'serialize', crash)
  with pytest.raises(KeyboardInterrupt):
    index.save(tmp_path / 'idx')
  assert list(tmp_path.iterdir()) == []
  # A killed process leaves a staging directory with no manifest: it does not load.
  (tmp_path / 'killed').mkdir()
  (tmp_path / 'killed' / 'scann_assets.pbtxt').write_text('partial')
  with pytest.raises(manifest_lib.ManifestError, match='not a finished artefact'):
    index_lib.load(tmp_path / 'killed')


@pytest.mark.parametrize('brute_force_below', [50_000, 1000])
def test_deleted_never_returned_and_upserted_found(data, tmp_path, brute_force_below):
  ids, emb, queries = data
  cfg = index_lib.configure(len(ids), k=10, brute_force_below=brute_force_below)
  index = index_lib.build(emb, ids, EXPORT, cfg)
  gone = ids[:50]
  index.delete(gone)
  # Each deleted product's own vector is its best query: it must still not come back.
  found, _ = index.search_batched(np.concatenate([emb[:50], queries]), 10)
  assert not np.isin(found, gone).any()
  new_id, moved_id = 10**9, int(ids[100])
  new_vec, moved_vec = clustered(2, 16, seed=5)
  index.upsert(np.array([new_id, moved_id]), np.stack([new_vec, moved_vec]))
  assert index.size == len(ids) - 50 + 1
  assert index.search(new_vec, 10)[0][0] == new_id
  assert index.search(moved_vec, 10)[0][0] == moved_id
  index.save(tmp_path / 'idx')
  loaded = index_lib.load(tmp_path / 'idx')
  assert loaded.search(new_vec, 10)[0][0] == new_id
  assert not np.isin(loaded.search_batched(emb[:50], 10)[0], gone).any()
  with pytest.raises(KeyError):
    loaded.delete(gone[:1])
