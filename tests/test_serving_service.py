"""Assembling a Searcher from exported arrays: rows follow the export's order.

The export writes product ids in its own order; serving must take the catalogue's rows in
that order, so that an index row, an embedding row and a catalogue row are one product.
"""

import numpy as np
import pytest

from configs import tiny
from make_jax.serving import index, service
from make_jax.text.preprocess import TextPreprocessor


@pytest.fixture(scope='module')
def catalogue():
  return service.catalogue_for_config(tiny.get_config(), limit=200)


def _export(tmp_path, ids, dim=8):
  rng = np.random.default_rng(0)
  emb = rng.standard_normal((len(ids), dim)).astype(np.float32)
  emb /= np.linalg.norm(emb, axis=1, keepdims=True)
  np.save(tmp_path / 'ids.npy', np.asarray(ids, np.int64))
  np.save(tmp_path / 'embeddings.npy', emb)
  np.save(tmp_path / 'modal_weights.npy', rng.dirichlet([1, 1], len(ids)).astype(np.float32))
  return emb


def test_export_order_is_the_row_order(tmp_path, catalogue):
  ids = np.random.default_rng(1).permutation(catalogue.ids)[:150]
  emb = _export(tmp_path, ids)
  cat, loaded, weights, ann = service.load_export(tmp_path, catalogue)
  assert cat.ids.tolist() == ids.tolist()
  assert isinstance(ann, index.ExactIndex) and ann.size == 150
  np.testing.assert_array_equal(loaded, emb)
  for row in (0, 77, 149):
    src = catalogue.rows_of_ids(ids[row : row + 1])[0]
    assert cat.titles[row] == catalogue.titles[src]
    assert cat.attributes['brand'][row] == catalogue.attributes['brand'][src]
  pre = TextPreprocessor.from_corpus(cat.titles, 200)
  table = index.DictTable({pre.qid('x y'): (ids[[5, 3]], np.array([0.9, 0.8]))})
  searcher = service.build_searcher(
    tiny.get_config(), cat, pre, loaded, index=ann, table=table, modal_weights=weights
  )
  answer = searcher.search('y x', 2)
  assert answer.path == 'table'
  assert [r.product_id for r in answer.results] == ids[[5, 3]].tolist()
  assert answer.results[0].title_weight == pytest.approx(float(weights[5, 0]))
  with pytest.raises(LookupError):  # No parameters: no online encoder for a miss.
    searcher.search('not in the table', 2)


def test_unknown_exported_id_is_an_error(tmp_path, catalogue):
  _export(tmp_path, [int(catalogue.ids[0]), 10**9])
  with pytest.raises(ValueError, match='not in the catalogue'):
    service.load_export(tmp_path, catalogue)
