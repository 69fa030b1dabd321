"""synthetic_products: builds, decodes as promised, is deterministic, has Zipf log p and
complete evaluation target sets; both builders build through the TFDS CLI."""

import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import tensorflow_datasets as tfds
from etils import epath

from make_jax.datasets import clicks, fashion, loading, synthetic
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
  assert meta['pairs']['train'] == 5000
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


@pytest.mark.parametrize('language', ['en', 'zh'])
def test_evaluation_splits_hold_every_product_that_satisfies_each_query(language):
  spec = synthetic.SyntheticSpec(language=language, num_products=600, num_pairs=2000, seed=3)
  cat = synthetic.generate(spec)
  lang = 0 if language == 'en' else 1
  # Naive reference: a product satisfies a query when some template's words, read off
  # its attributes, are the query's words (en: as a set; zh: the written query).
  made = []
  for i in range(spec.num_products):
    words = {f: synthetic._TABLES[f][cat.attributes[f][i]][lang] for f in synthetic._TABLES}
    for fields in synthetic.QUERY_TEMPLATES:
      if language == 'en':
        made.append((frozenset(words[f] for f in fields), i))
      else:
        made.append((''.join(words[f] for f in synthetic._ZH_ORDER if f in fields), i))
  satisfied = {}
  for key, i in made:
    satisfied.setdefault(key, set()).add(i)

  def key_of(query):
    return frozenset(query.split()) if language == 'en' else query

  assert len(cat.pairs['train']['query']) == 2000
  train = {key_of(q) for q in cat.pairs['train']['query']}
  for split in ('validation', 'test'):
    targets = {}
    for q, pid in zip(cat.pairs[split]['query'], cat.pairs[split]['product_id'], strict=True):
      targets.setdefault(key_of(q), set()).add(int(pid))
    assert len(targets) >= 20
    for key, pids in targets.items():
      assert pids == satisfied[key] and len(pids) <= spec.max_targets
    assert not train & set(targets)
  # Every query of the catalogue that is narrow enough and hashes to test is there.
  test = {k for k, v in satisfied.items() if len(v) <= spec.max_targets}
  test = {
    k
    for k in test
    if clicks.split_of_query(
      sorted(k) if language == 'en' else [k], spec.validation_share, spec.test_share, '3'
    )
    == 'test'
  }
  if language == 'en':  # zh keys hash the attribute words, not the written query.
    assert test == {key_of(q) for q in cat.pairs['test']['query']}


def test_metadata_counts_queries_and_lists_domain_words(en_small, zh_small):
  meta = en_small.info.metadata
  for split in clicks.SPLITS:
    source = en_small.as_data_source(split, decoders={'image': tfds.decode.SkipDecoding()})
    queries = {_s(r['query']) for r in source.__getitems__(list(range(len(source))))}
    assert meta['num_queries'][split] == len({clicks.query_key(q.split()) for q in queries})
  assert meta['num_queries']['test'] >= 100
  assert meta['query_splits']['test']['largest_query_records'] <= 100
  assert meta['domain_words'] == sorted(set(meta['domain_words']))
  assert {'aurora', 'dress', 'red', 'striped', 'diamond'} <= set(meta['domain_words'])
  assert {'极光', '连衣裙', '红色', '条纹'} <= set(zh_small.info.metadata['domain_words'])


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


def _tfds_build(*args):
  """Runs the `tfds build` command line (a fresh process, as a user would)."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  cmd = [os.path.join(os.path.dirname(sys.executable), 'tfds'), 'build', *args]
  done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_tfds_cli_builds_synthetic_products(en_small, tmp_path):
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  _tfds_build(
    os.path.join(root, 'data', 'synthetic_products'), '--config=en_small', f'--data_dir={tmp_path}'
  )
  built = loading.get_builder('synthetic_products', 'en_small', tmp_path)
  assert built.is_prepared()
  assert built.info.metadata['num_queries'] == en_small.info.metadata['num_queries']
  for split in SPLITS:
    # Decoded, images as bytes: the proto's field order may differ between processes.
    cli, lib = (
      b.as_data_source(split, decoders={'image': tfds.decode.SkipDecoding()})
      for b in (built, en_small)
    )
    assert cli.__getitems__(range(len(cli))) == lib.__getitems__(range(len(lib)))


@pytest.mark.slow
def test_tfds_cli_builds_fashion_products(tmp_path):
  archive = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    'shared',
    'data',
    'fashion-product-images-small.zip',
  )
  if not os.path.exists(archive):
    pytest.skip(f'{archive} not present')
  # A manual_dir with the first 400 products of the real archive (same layout).
  manual = tmp_path / 'manual'
  manual.mkdir()
  with (
    zipfile.ZipFile(archive) as src,
    zipfile.ZipFile(manual / os.path.basename(archive), 'w') as dst,
  ):
    lines = src.read(fashion.STYLES_PATH).decode('utf-8').splitlines()[:401]
    dst.writestr(fashion.STYLES_PATH, '\n'.join(lines) + '\n')
    names = set(src.namelist())
    for line in lines[1:]:
      name = fashion.IMAGE_PATH.format(line.split(',')[0])
      if name in names:
        dst.writestr(name, src.read(name))
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  _tfds_build(
    os.path.join(root, 'data', 'fashion_products'),
    f'--manual_dir={manual}',
    f'--data_dir={tmp_path / "tfds"}',
    '--max_examples_per_split=50',  # All queries are mocked; fewer records written.
  )
  built = loading.get_builder('fashion_products', 'default', tmp_path / 'tfds')
  meta = built.info.metadata
  assert meta['num_products'] == 400 and meta['num_queries']['test'] > 0
  assert {s: built.info.splits[s].num_examples for s in SPLITS} == dict.fromkeys(SPLITS, 50)
  assert built.as_data_source('catalogue')[0]['image'].shape == (80, 60, 3)
