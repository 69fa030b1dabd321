"""synthetic_products: builds, decodes as promised, is deterministic, and has Zipf log p."""

import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from etils import epath

from make_jax.datasets import clicks, loading, synthetic
from make_jax.text.preprocess import TextPreprocessor

SPLITS = ('catalogue', 'train', 'validation', 'test')


def _s(v):
  return v.decode('utf-8') if isinstance(v, bytes) else v


@pytest.fixture(scope='session')
def tfds_dir(tmp_path_factory):
  """One data_dir per session, shared by the dataset and pipeline test modules."""
  return tmp_path_factory.getbasetemp() / 'tfds'


@pytest.fixture(scope='session')
def en_small(tfds_dir):
  return loading.prepare('synthetic_products', 'en_small', tfds_dir)


@pytest.fixture(scope='session')
def zh_small(tfds_dir):
  return loading.prepare('synthetic_products', 'zh_small', tfds_dir)


def _records(builder, split, decode=True):
  method = (
    tfds.decode.DeserializeMethod.DESERIALIZE_AND_DECODE
    if decode
    else tfds.decode.DeserializeMethod.RAW_BYTES
  )
  source = builder.as_data_source(split, deserialize_method=method)
  return source.__getitems__(list(range(len(source))))


def test_examples_decode_as_the_metadata_promises(en_small):
  features = en_small.info.features
  assert features['product_id'].np_dtype == np.int32
  assert features['log_p'].np_dtype == np.float32
  assert features['image_missing'].np_dtype == np.bool_
  for split in SPLITS:
    records = _records(en_small, split)[:50]
    assert len(records) == 50
    for r in records:
      assert set(r) == set(features)
      assert r['image'].shape == features['image'].shape == (32, 32, 3)
      assert r['image'].dtype == np.uint8
      # Scalars come back as Python numbers; their declared dtypes are int32/float32.
      assert isinstance(r['product_id'], int | np.integer) and 0 <= r['product_id'] < 1000
      assert np.isfinite(r['log_p']) and r['log_p'] < 0
      assert _s(r['title'])
      assert bool(_s(r['query'])) == (split != 'catalogue')
  assert en_small.info.splits['catalogue'].num_examples == 1000
  meta = en_small.info.metadata
  assert sum(meta['pairs'].values()) == 5000
  assert {s: en_small.info.splits[s].num_examples for s in clicks.SPLITS} == meta['pairs']


def test_two_builds_are_identical(en_small, tmp_path):
  again = loading.prepare('synthetic_products', 'en_small', tmp_path)
  for split in SPLITS:
    assert _records(again, split, decode=False) == _records(en_small, split, decode=False)


def test_a_different_seed_gives_different_data():
  a = synthetic.generate(synthetic.SyntheticSpec(num_products=200, num_pairs=500, seed=0))
  b = synthetic.generate(synthetic.SyntheticSpec(num_products=200, num_pairs=500, seed=1))
  assert a.titles != b.titles


def test_log_p_is_the_train_click_share_and_zipf_skewed(en_small):
  train = _records(en_small, 'train')
  ids = np.array([r['product_id'] for r in train])
  n = len(ids)
  counts = np.bincount(ids, minlength=1000)
  for r in train:
    assert r['log_p'] == pytest.approx(np.log(counts[r['product_id']] / n), abs=1e-5)
  # Orders of magnitude between the head and the tail of the clicked products.
  clicked = counts[counts > 0]
  assert clicked.max() / clicked.min() >= 100
  # Validation, test and catalogue carry the product's train value; unclicked get half a click.
  expected = np.where(counts > 0, np.log(np.maximum(counts, 1) / n), np.log(0.5 / n))
  for split in ('validation', 'test', 'catalogue'):
    for r in _records(en_small, split):
      assert r['log_p'] == pytest.approx(expected[r['product_id']], abs=1e-5)


def test_evaluation_queries_are_not_train_queries(en_small):
  def keys(split):
    return {clicks.query_key(_s(r['query']).split()) for r in _records(en_small, split)}

  train = keys('train')
  assert keys('test') and keys('validation')
  assert not train & keys('test')
  assert not train & keys('validation')


def test_split_of_query_ignores_word_order_and_case():
  for words in (['red', 'dress'], ['aurora', 'blue', 'hat']):
    assert clicks.split_of_query(words, 0.3, 0.3) == clicks.split_of_query(
      [w.upper() for w in reversed(words)], 0.3, 0.3
    )
  with pytest.raises(ValueError, match='sum to less than 1'):
    clicks.split_of_query(['x'], 0.6, 0.5)


def test_colour_hidden_from_the_configured_share_of_titles_but_not_from_images(en_small):
  share = synthetic.SyntheticSpec().hide_colour_share
  records = _records(en_small, 'catalogue')
  colour_rgb = {name: rgb for name, _, rgb in synthetic.COLOURS}
  hidden = 0
  for r in records:
    title, colour = _s(r['title']), _s(r['colour'])
    hidden += colour not in title.split()
    # The image always shows the colour: many pixels of exactly its RGB value.
    exact = np.all(r['image'] == np.array(colour_rgb[colour], np.uint8), axis=-1).sum()
    assert exact >= 40, (title, colour, exact)
    for word in (_s(r['shape']), _s(r['pattern']), _s(r['category']), _s(r['brand'])):
      assert word in title.split()
  assert hidden == round(share * len(records))


def test_zh_titles_need_segmentation(zh_small):
  records = _records(zh_small, 'catalogue')
  titles = [_s(r['title']) for r in records]
  assert all(' ' not in t and not any(c.isascii() for c in t) for t in titles)
  text = TextPreprocessor.from_corpus(titles, 2000)
  for r in records[:200]:
    words = text.words(r['title'])
    assert len(words) >= 3
    assert _s(r['category']) in words
  queries = [_s(r['query']) for r in _records(zh_small, 'train')[:200]]
  assert all(' ' not in q for q in queries)


def test_config_names_and_bad_specs():
  config = loading.get_builder('synthetic_products', 'zh_n1234').builder_config
  assert config.spec.num_products == 1234 and config.spec.language == 'zh'
  with pytest.raises(ValueError, match='Unknown synthetic_products config'):
    loading.get_builder('synthetic_products', 'fr')
  with pytest.raises(ValueError, match='Unknown dataset'):
    loading.get_builder('imagenet')
  with pytest.raises(ValueError, match='hide_colour_share'):
    synthetic.generate(synthetic.SyntheticSpec(hide_colour_share=1.5))


@pytest.mark.parametrize('name', ['synthetic_products', 'fashion_products'])
def test_tfds_cli_shims_load_the_package_builders(name):
  # The same loading path as `tfds build data/<name>` (tfds scripts/cli/build.py).
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  path = epath.Path(root) / 'data' / name / f'{name}_dataset_builder.py'
  with tfds.core.utils.add_sys_path(path.parent.parent):
    cls = tfds.core.community.builder_cls_from_module(f'{path.parent.stem}.{path.stem}')
  assert cls.name == name
  assert issubclass(cls, loading.BUILDERS[name])
