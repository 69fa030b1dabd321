"""Export pipeline (DirectRunner): embeddings equal `encode_product`, on 8 devices as on one
and in Beam's multi-process mode; query export; manifest; atomic output."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import tiny
from make_jax.datasets import loading
from make_jax.export import embed, model_handler
from make_jax.export import manifest as manifest_lib
from make_jax.input import featurize
from make_jax.models import make_model
from make_jax.retrieval import tower as tower_lib
from make_jax.text import vocab as vocab_lib
from make_jax.text.preprocess import TextPreprocessor

N = 96  # Catalogue records exported (not a multiple of the batch: the last batch is padded).


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
  # Same data_dir as test_datasets_synthetic: built once per session.
  builder = loading.prepare(
    'synthetic_products', 'zh_small', tmp_path_factory.getbasetemp() / 'tfds'
  )
  source = builder.as_data_source('catalogue', decoders={'image': tfds.decode.SkipDecoding()})
  vocab = tmp_path_factory.mktemp('vocab') / 'vocab.txt'
  titles = [r['title'] for r in source.__getitems__(range(1000))]
  vocab_lib.save_vocab(vocab_lib.build_vocab(titles, 2048), vocab)
  config = tiny.get_config()
  config.data.builder_config = 'zh_small'
  config.data.data_dir = str(builder.data_dir_root)
  return config, str(vocab), source


@pytest.mark.slow
def test_export_equals_encode_product_on_one_and_eight_devices(setup, tmp_path):
  config, vocab, source = setup
  loader = model_handler.make_loader(config)
  kw = {'loader': loader, 'batch_size': 32, 'limit': N, 'read_chunk': 40, 'num_shards': 3}
  m8 = embed.export_catalogue(config, vocab, tmp_path / 'e8', num_devices=8, **kw)
  m1 = embed.export_catalogue(config, vocab, tmp_path / 'e1', num_devices=1, **kw)
  ids8, emb8, other8, _ = embed.read_embeddings(tmp_path / 'e8')
  ids1, emb1, other1, _ = embed.read_embeddings(tmp_path / 'e1')
  np.testing.assert_array_equal(ids8, ids1)
  np.testing.assert_allclose(emb8, emb1, atol=1e-6)
  np.testing.assert_allclose(other8['modal_weights'], other1['modal_weights'], atol=1e-6)
  # Beam's multi-process mode (every DoFn pickled into worker processes, nothing shared, as
  # on a cluster) exports the same.
  multi = ['--direct_running_mode=multi_processing', '--direct_num_workers=2']
  embed.export_catalogue(config, vocab, tmp_path / 'mp', pipeline_args=multi, **kw)
  ids_mp, emb_mp, _, _ = embed.read_embeddings(tmp_path / 'mp')
  np.testing.assert_array_equal(ids_mp, ids1)
  np.testing.assert_allclose(emb_mp, emb1, atol=1e-6)

  # The model's own encode_product on the same featurised records, in one batch.
  text = TextPreprocessor.from_vocab_file(vocab)
  feat = featurize.make_featurizer(
    text, image_size=32, query_len=12, title_len=24, require_query=False
  )
  examples = [feat(r) for r in source.__getitems__(range(N))]
  batch = {k: np.stack([e[k] for e in examples]) for k in examples[0]}
  order = np.argsort(batch['product_id'])
  model = make_model.build_model(config)
  params, _ = loader()
  want_emb, want_w = model.apply(
    {'params': params},
    *(batch[k] for k in tower_lib.TOWER_INPUTS['product']),
    method=model.encode_product,
  )
  np.testing.assert_array_equal(ids1, batch['product_id'][order])
  np.testing.assert_allclose(emb1, np.asarray(want_emb)[order], atol=1e-5)
  np.testing.assert_allclose(other1['modal_weights'], np.asarray(want_w)[order], atol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(emb1, axis=1), 1.0, atol=1e-5)

  want_fp = manifest_lib.config_fingerprint(config, vocab_lib.load_vocab_file(vocab))
  for m in (m1, m8):
    assert (m['count'], m['dim'], m['dtype'], m['checkpoint_step']) == (N, 32, 'float32', None)
    assert m['config_fingerprint'] == want_fp and m['counters']['products_encoded'] == N
  assert len(m1['shards']) == 3


@pytest.mark.slow
def test_query_export_merges_word_orders_and_counts(setup, tmp_path):
  config, vocab, _ = setup
  log = tmp_path / 'log.txt'
  log.write_text('red shoes\t3\nshoes red\t2\nblue hat\nnot-a-count\tx\n\t4\n', 'utf-8')
  m = embed.export_queries(
    config,
    vocab,
    str(log),
    tmp_path / 'q',
    loader=model_handler.make_loader(config),
    batch_size=8,
    num_shards=2,
    max_bad_fraction=0.25,
  )
  qids, emb, other, _ = embed.read_embeddings(tmp_path / 'q')
  text = TextPreprocessor.from_vocab_file(vocab)
  want = sorted([(text.qid('red shoes'), 5), (text.qid('blue hat'), 1)])
  assert [(int(q), int(c)) for q, c in zip(qids, other['count'], strict=True)] == want
  assert m['count'] == 2 and m['counters']['skipped_bad_count'] == 1
  assert m['counters']['empty_queries'] == 1
  # Rows are the query tower's embeddings of the sorted words.
  model = make_model.build_model(config)
  params, _ = model_handler.make_loader(config)()
  ids, mask = text.encode_batch(['red shoes', 'blue hat'], config.text.query_len)
  direct = np.asarray(model.apply({'params': params}, ids, mask, method=model.encode_query))
  by_qid = {int(q): e for q, e in zip(qids, emb, strict=True)}
  np.testing.assert_allclose(by_qid[text.qid('red shoes')], direct[0], atol=1e-5)
  np.testing.assert_allclose(by_qid[text.qid('blue hat')], direct[1], atol=1e-5)


def test_a_failed_export_leaves_the_previous_one(setup, tmp_path):
  config, vocab, _ = setup
  (tmp_path / 'out').mkdir()
  manifest_lib.write(tmp_path / 'out', {'kind': 'product_embeddings', 'shards': []})

  def broken():
    raise RuntimeError('no checkpoint')

  with pytest.raises(RuntimeError, match='no checkpoint'):
    embed.export_catalogue(config, vocab, tmp_path / 'out', loader=broken, limit=8)
  assert manifest_lib.read(tmp_path / 'out')['kind'] == 'product_embeddings'
  assert sorted(p.name for p in tmp_path.iterdir()) == ['out']
