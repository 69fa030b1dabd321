"""Offline query table (DirectRunner): one row per sorted-word sequence, rows equal to the
index's answer for the query tower's embedding, lookups in any word order, real queries."""

import os
import random

import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import tiny
from make_jax.datasets import loading
from make_jax.export import manifest as manifest_lib
from make_jax.export import model_handler, query_table, querylog
from make_jax.export import scann_index as index_lib
from make_jax.models import make_model
from make_jax.text import build_vocab, save_vocab
from make_jax.text import vocab as vocab_lib
from make_jax.text.preprocess import TextPreprocessor
from tests.conftest import SHARED_DATA

TAOBAO = os.path.join(SHARED_DATA, 'multi-cpr-ecom', 'train.query.txt')


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
  """A model of the zh synthetic vocabulary and a brute-force index of 500 products."""
  builder = loading.prepare(
    'synthetic_products', 'zh_small', tmp_path_factory.getbasetemp() / 'tfds'
  )
  source = builder.as_data_source('catalogue', decoders={'image': tfds.decode.SkipDecoding()})
  tmp = tmp_path_factory.mktemp('table')
  vocab = tmp / 'vocab.txt'
  vocab_lib.save_vocab(
    vocab_lib.build_vocab([r['title'] for r in source.__getitems__(range(1000))], 2048), vocab
  )
  config = tiny.get_config()
  fingerprint = manifest_lib.config_fingerprint(config, vocab_lib.load_vocab_file(vocab))
  rng = np.random.default_rng(0)
  emb = rng.normal(size=(500, config.model.embed_dim)).astype(np.float32)
  emb /= np.linalg.norm(emb, axis=1, keepdims=True)
  ids = np.arange(500, dtype=np.int64) * 3 + 11
  export = {'checkpoint_step': None, 'config_fingerprint': fingerprint}
  index_lib.build(emb, ids, export, index_lib.configure(500, k=10)).save(tmp / 'index')
  return config, str(vocab), tmp / 'index'


def _build(setup, tmp_path, lines, **kw):
  config, vocab, index_dir = setup
  log = tmp_path / 'log.txt'
  log.write_text('\n'.join(lines) + '\n', 'utf-8')
  m = query_table.build_query_table(
    config,
    vocab,
    str(log),
    index_dir,
    tmp_path / 'table',
    loader=model_handler.make_loader(config),
    k=10,
    shard_bits=2,
    batch_size=64,
    **kw,
  )
  return m, query_table.QueryTable(tmp_path / 'table')


@pytest.mark.slow
def test_rows_merge_word_orders_and_equal_the_index_answer(setup, tmp_path):
  config, vocab, index_dir = setup
  lines = [
    '红色 连衣裙\t3',
    '连衣裙 红色\t5',
    '连衣裙  红色\t1',
    'nike shoes',
    'shoes nike\t2',
    'bad\tcount',
    '   \t2',
    '手机壳',
  ]
  m, table = _build(setup, tmp_path, lines, max_bad_fraction=0.2)
  text = TextPreprocessor.from_vocab_file(vocab)
  assert len(table) == m['rows'] == 3
  assert m['counters']['skipped_bad_count'] == 1 and m['counters']['empty_queries'] == 1
  assert m['index']['path'] == str(index_dir.absolute())
  assert m['config_fingerprint'] == manifest_lib.read(index_dir)['config_fingerprint']

  dress = table.lookup(list(reversed(text.words('红色连衣裙'))))
  assert dress['surface'] == '连衣裙 红色' and dress['count'] == 9
  assert dress['qid'] == text.qid('连衣裙 红色')
  assert table.lookup(text.words('nike shoes'))['surface'] == 'shoes nike'  # 2 lines > 1
  assert table.lookup(text.words('不在表里')) is None

  # Each row is the index's top-k for the query tower's embedding of the sorted words.
  model = make_model.build_model(config)
  params, _ = model_handler.make_loader(config)()
  index = index_lib.load(index_dir)
  for query in ('红色 连衣裙', 'nike shoes', '手机壳'):
    ids, mask = text.encode_batch([query], config.text.query_len)
    q = np.asarray(model.apply({'params': params}, ids, mask, method=model.encode_query))
    want_ids, want_scores = index.search_batched(q, 10)
    row = table.lookup(text.words(query))
    np.testing.assert_array_equal(row['ids'], want_ids[0])
    np.testing.assert_allclose(row['scores'], want_scores[0], rtol=1e-5, atol=1e-6)


def test_an_index_of_another_model_is_refused(setup, tmp_path):
  config, vocab, index_dir = setup
  other = config.copy_and_resolve_references()
  other.model.embed_dim = 16
  with pytest.raises(manifest_lib.ManifestError, match='dimension 32 != the model.s 16'):
    query_table.build_query_table(
      other, vocab, 'unused.txt', index_dir, tmp_path / 't', loader=lambda: (None, None)
    )
  assert not (tmp_path / 't').exists()


@pytest.mark.skipif(not os.path.exists(TAOBAO), reason='shared Taobao queries not present')
def test_real_taobao_queries_one_row_per_word_sequence_found_in_any_order(setup, tmp_path):
  _, vocab, _ = setup
  with open(TAOBAO, encoding='utf-8') as f:
    lines = [next(f).rstrip('\n') for _ in range(1500)]
  m, table = _build(setup, tmp_path, lines, query_column=1, count_column=-1)
  text = TextPreprocessor.from_vocab_file(vocab)
  words = [text.words(line.split('\t')[1]) for line in lines]
  keys = {querylog.words_key(w) for w in words if w}
  assert len(table) == len(keys) and sorted(k for k, _ in table.rows()) == sorted(keys)
  rnd = random.Random(0)
  for w in words:
    shuffled = rnd.sample(w, len(w))
    row = table.lookup(shuffled)
    assert row is not None and row['qid'] == querylog.key_qid(querylog.words_key(w))
    assert text.words(row['surface']) == sorted(w)


def test_query_keys_use_the_runs_domain_dictionary(tmp_path):
  """With the trainer's domain_words.txt beside the vocabulary, a brand stays one word."""
  vocab = tmp_path / 'vocab.txt'
  save_vocab(build_vocab(['red chief shoes', 'nike tee'], 64), vocab)
  config = tiny.get_config()
  assert querylog.text_preprocessor(config, str(vocab)).words('Red Chief shoes') == [
    'chief',
    'red',
    'shoes',
  ]
  (tmp_path / 'domain_words.txt').write_text('red chief\n', encoding='utf-8')
  text = querylog.text_preprocessor(config, str(vocab))
  assert text.words('Red Chief shoes') == ['red chief', 'shoes']


@pytest.mark.slow
def test_a_dirty_log_is_skipped_and_counted_under_multiprocess_beam(setup, tmp_path):
  """Invalid UTF-8, counts that are not integers or too large for Beam's coder, control
  characters and over-long lines are skipped and counted by reason, with the pipeline in
  Beam's multi-process mode (every DoFn pickled, nothing shared, as on a cluster); over
  the threshold the job fails and the previous table stays."""
  good = [f'红色 连衣裙 {i}\t{i + 1}'.encode() for i in range(40)]
  bad = [
    b'bad \xff\xfe utf8\t2',
    b'huge count\t' + b'9' * 40,
    b'negative count\t-3',
    b'red\x01dress\t1',
    b'a' * 300 + b'\t1',
  ]
  log = tmp_path / 'log.txt'
  log.write_bytes(b'\n'.join(good[:20] + bad + good[20:]) + b'\n')
  config, vocab, index_dir = setup
  build = lambda out, fraction, args=(): query_table.build_query_table(  # noqa: E731
    config,
    vocab,
    str(log),
    index_dir,
    out,
    loader=model_handler.make_loader(config),
    k=10,
    shard_bits=2,
    batch_size=64,
    pipeline_args=args,
    max_bad_fraction=fraction,
  )
  multi = ['--direct_running_mode=multi_processing', '--direct_num_workers=2']
  m = build(tmp_path / 'table', 0.2, multi)
  counters = m['counters']
  assert counters['lines'] == 40 and m['rows'] == len(query_table.QueryTable(tmp_path / 'table'))
  assert {k: v for k, v in counters.items() if k.startswith('skipped_')} == {
    'skipped_bad_utf8': 1,
    'skipped_bad_count': 2,
    'skipped_control_characters': 1,
    'skipped_too_long': 1,
  }
  before = manifest_lib.read(tmp_path / 'table')['created']
  with pytest.raises(ValueError, match=r'5 of 45 unreadable .*max_bad_fraction'):
    build(tmp_path / 'table', 0.05)
  assert manifest_lib.read(tmp_path / 'table')['created'] == before  # The old table stays.
