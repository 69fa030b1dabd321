"""The one catalogue type: rows by product id, row selection, id order, bad input."""

import numpy as np
import pytest

from make_jax.datasets import synthetic, synthetic_configs
from make_jax.retrieval import catalogue as catalogue_lib
from make_jax.serving import query_understanding as qu


def _catalogue() -> catalogue_lib.Catalogue:
  return catalogue_lib.from_products(
    [
      {'id': 30, 'title': 'c', 'brand': 'x'},
      {'id': 10, 'title': 'a', 'brand': 'y'},
      {'id': 20, 'title': 'b'},
    ],
    ('brand',),
    dataset='synthetic_products',
    image_loader=lambda pid: b'img%d' % pid,
  )


def test_rows_of_ids_is_the_row_of_each_id_and_minus_one_elsewhere():
  cat = _catalogue()
  ids = np.array([[20, 31], [30, 10]])
  rows = cat.rows_of_ids(ids)
  assert rows.shape == (2, 2) and rows.dtype == np.int64
  naive = [[cat.ids.tolist().index(i) if i in cat.ids else -1 for i in r] for r in ids.tolist()]
  assert rows.tolist() == naive
  assert catalogue_lib.Catalogue(np.zeros(0, np.int64), []).rows_of_ids(ids).tolist() == [
    [-1, -1],
    [-1, -1],
  ]


def test_take_keeps_rows_together():
  cat = _catalogue()
  assert cat.attributes['brand'].tolist() == ['x', 'y', '']  # Missing fields read ''.
  by_id = cat.take(np.argsort(cat.ids))
  for sub in (cat.take(np.array([2, 0])), by_id):
    for row, pid in enumerate(sub.ids.tolist()):
      src = cat.ids.tolist().index(pid)
      assert sub.titles[row] == cat.titles[src]
      assert sub.attributes['brand'][row] == cat.attributes['brand'][src]
      assert sub.rows_of_ids(np.array([pid]))[0] == row
  assert by_id.ids.tolist() == [10, 20, 30]
  assert cat.take(np.array([2, 0])).image(30) == b'img30'
  assert cat.take(np.array([2])).image(10) is None  # Not among the rows taken.


def test_bad_catalogues_are_refused():
  with pytest.raises(ValueError, match='unique'):
    catalogue_lib.Catalogue(np.array([1, 2, 1]), ['a', 'b', 'c'])
  with pytest.raises(ValueError, match='one entry per row'):
    catalogue_lib.Catalogue(np.array([1, 2]), ['a'])
  with pytest.raises(ValueError, match='one entry per row'):
    catalogue_lib.Catalogue(np.array([1, 2]), ['a', 'b'], {'brand': ['x']})


def test_from_synthetic_is_the_generated_products():
  spec = synthetic.SyntheticSpec(num_products=40, image_size=16)
  generated = synthetic.generate(spec)
  cat = catalogue_lib.from_synthetic(generated)
  assert cat.ids.tolist() == list(range(40))
  assert cat.titles == generated.titles
  for field in synthetic_configs.ATTRIBUTE_FEATURES:
    assert cat.attributes[field].tolist() == [generated.word(field, i) for i in range(40)]
  assert cat.image(3) == synthetic.encode_png(synthetic.draw_image(generated, 3))
  assert qu.restricted_fields(cat.dataset, cat.attributes) == ('brand', 'category')
  assert qu.restricted_fields('unknown', {'brand': 0}) == ('brand',)
