"""Serving a real exported workdir: the export's shards, ScaNN index and query table, built by
the offline functions, answer through the same Searcher the server uses.

A tiny random model (`model_handler.random_params`) over the synthetic zh_small catalogue:
the catalogue is exported with the Beam pipeline, indexed, and a small query log is turned
into the query table, all in the fixed workdir layout. Checked: a logged query (in another
word order) is answered by the table path with the table's products; an unlogged one goes
online and its top-k equals exact search over the exported embeddings; the catalogue rows
follow the export's ids; an index or table of another model is refused with the command
that rebuilds it.
"""

import json
import shutil
import urllib.parse
from unittest import mock

import jax
import numpy as np
import pytest

from configs import tiny
from make_jax import rundir
from make_jax.datasets import loading
from make_jax.export import embed, model_handler, query_table, querylog
from make_jax.export import manifest as manifest_lib
from make_jax.export import scann_index as export_index
from make_jax.models import make_model
from make_jax.retrieval import catalogue as catalogue_lib
from make_jax.serving import ann, filters, service
from make_jax.train import inputs

K = 5
EXPORTED = 300  # Catalogue records exported (of 1,000): serving takes the rows it needs.
LOGGED = ['红色 连衣裙\t3', '连衣裙 红色\t2', 'nike shoes', '手机壳\t4']


def _workdir(root, config, text_from=None):
  """A run's text files and config.json (no checkpoint: the model is random)."""
  root.mkdir()
  if text_from is None:
    builder = loading.get_builder(
      config.data.name, config.data.builder_config, config.data.data_dir
    )
    inputs.load_preprocessor(config, builder, root)  # vocab.txt and domain_words.txt, as training.
  else:
    for name in ('vocab.txt', 'domain_words.txt'):
      shutil.copy(text_from / name, root / name)
  (root / 'config.json').write_text(json.dumps(rundir.config_json(config)), 'utf-8')
  return rundir.RunDir(root)


@pytest.fixture(scope='module')
def served(tmp_path_factory):
  # test_export's dataset and config: built once per session, and the random params of
  # `model_handler.random_params` are cached per process by config.
  builder = loading.prepare(
    'synthetic_products', 'zh_small', tmp_path_factory.getbasetemp() / 'tfds'
  )
  config = tiny.get_config()
  config.data.builder_config = 'zh_small'
  config.data.data_dir = str(builder.data_dir_root)
  lay = _workdir(tmp_path_factory.mktemp('served') / 'run', config)
  loader = model_handler.make_loader(config)
  embed.export_catalogue(
    config, str(lay.vocab), lay.products, loader=loader, limit=EXPORTED, batch_size=32
  )
  export_index.build_from_export(lay.products, lay.index, k=20)
  lay.query_log.write_text('\n'.join(LOGGED) + '\n', 'utf-8')
  query_table.build_query_table(
    config,
    str(lay.vocab),
    str(lay.query_log),
    lay.index,
    lay.query_table,
    loader=loader,
    k=20,
    shard_bits=2,
    batch_size=16,
  )
  params, _ = loader()
  searcher = service.searcher_from_workdir(lay.root, params=params, buckets=(8,), max_batch=2)
  model = make_model.build_model(config)
  encode = jax.jit(lambda i, m: model.apply({'params': params}, i, m, method=model.encode_query))
  yield dict(config=config, lay=lay, encode=encode, searcher=searcher, params=params)
  searcher.encoder.close()


def _exact(served, text):
  """Exact top-K (ids, scores) of `text` over the exported embeddings (model applied here)."""
  config, searcher = served['config'], served['searcher']
  ids, mask = searcher.preprocessor.encode_batch([text], config.text.query_len)
  q = np.asarray(served['encode'](ids, mask), np.float32)[0]
  export_ids, emb, _, _ = embed.read_embeddings(served['lay'].products)
  scores = emb @ q
  order = np.argsort(-scores, kind='stable')[:K]
  return export_ids[order], scores[order]


def test_rows_follow_the_export(served):
  searcher = served['searcher']
  ids, emb, other, _ = embed.read_embeddings(served['lay'].products)
  assert searcher.catalogue.ids.tolist() == ids.tolist() and len(ids) == EXPORTED
  np.testing.assert_array_equal(searcher.filtered.embeddings, emb)
  np.testing.assert_array_equal(searcher.modal_weights, other['modal_weights'])
  full = service.catalogue_for_config(served['config'])
  for row in (0, 150, EXPORTED - 1):
    src = full.rows_of_ids(ids[row : row + 1])[0]
    assert searcher.catalogue.titles[row] == full.titles[src]


def test_logged_query_is_answered_by_the_table(served):
  searcher = served['searcher']
  answer = searcher.search('连衣裙红色', K, use_filters=False)  # Logged in another order.
  assert answer.path == 'table' and answer.fallback_reason is None
  row = query_table.QueryTable(served['lay'].query_table).lookup(
    searcher.preprocessor.words('红色 连衣裙')
  )
  assert [r.product_id for r in answer.results] == row['ids'][:K].tolist()
  np.testing.assert_allclose([r.score for r in answer.results], row['scores'][:K], atol=1e-6)
  # The table's products are the exact top of the query over the export (brute-force index).
  want_ids, want_scores = _exact(served, '红色 连衣裙')
  assert row['ids'][:K].tolist() == want_ids.tolist()
  np.testing.assert_allclose(row['scores'][:K], want_scores, atol=1e-5)
  assert answer.results[0].title_weight is not None


def test_unlogged_query_goes_online_and_equals_exact_search(served):
  text = '蓝色 真皮 钱包'
  answer = served['searcher'].search(text, K, use_filters=False)
  assert answer.path == 'online' and answer.fallback_reason == 'table_miss'
  assert answer.strategy == 'none'
  want_ids, want_scores = _exact(served, text)
  assert [r.product_id for r in answer.results] == want_ids.tolist()
  np.testing.assert_allclose([r.score for r in answer.results], want_scores, atol=1e-5)


def _copy(served, tmp_path):
  src = served['lay']
  lay = _workdir(tmp_path / 'copy', served['config'], text_from=src.root)
  shutil.copytree(src.root / 'export', lay.root / 'export')
  return lay


def _stamp(directory, fingerprint):
  manifest = manifest_lib.read(directory)
  manifest_lib.write(directory, {**manifest, 'config_fingerprint': fingerprint})


def test_artefacts_of_another_model_are_refused(served, tmp_path):
  lay = _copy(served, tmp_path)
  _stamp(lay.index, 'another-model')
  with pytest.raises(manifest_lib.ManifestError, match=r'fingerprint another-model.*build_index'):
    service.searcher_from_workdir(lay.root)
  shutil.rmtree(lay.index)
  shutil.copytree(served['lay'].index, lay.index)
  _stamp(lay.query_table, 'another-model')
  with pytest.raises(manifest_lib.ManifestError, match=r'another-model.*build_query_table'):
    service.searcher_from_workdir(lay.root)
  # A served checkpoint of another step than the export's is refused too.
  with pytest.raises(manifest_lib.ManifestError, match=r'checkpoint step None != .* 7'):
    service.searcher_from_workdir(lay.root, step=7)
  # An index of this model over another export (here: 10 of its products).
  ids, emb, _, exported = embed.read_embeddings(lay.products)
  export_index.build(emb[:10], ids[:10], exported).save(lay.index)
  with pytest.raises(manifest_lib.ManifestError, match=r'holds 10 products, the export 300'):
    service.searcher_from_workdir(lay.root)
  shutil.rmtree(lay.index)
  with pytest.raises(manifest_lib.ManifestError, match=r'no finished index.*tools.build_index'):
    service.searcher_from_workdir(lay.root)


def test_without_a_table_every_query_goes_online(served, tmp_path):
  lay = _copy(served, tmp_path)
  shutil.rmtree(lay.query_table)
  searcher = service.searcher_from_workdir(lay.root)  # No params: misses cannot be served.
  assert searcher.table is None
  with pytest.raises(LookupError, match='not in the table'):
    searcher.search('红色 连衣裙', K)


def test_row_index_maps_product_ids_to_rows():
  rng = np.random.default_rng(0)
  emb = rng.standard_normal((50, 8)).astype(np.float32)
  emb /= np.linalg.norm(emb, axis=1, keepdims=True)
  ids = rng.permutation(1000)[:50].astype(np.int64)  # Rows in no id order.
  built = export_index.build(emb, ids, {}, export_index.configure(50, k=10))
  rows = ann.RowIndex(built, ids)
  queries = rng.standard_normal((3, 8)).astype(np.float32)
  got_rows, got_scores = rows.search(queries, 60)  # k > size: all 50.
  want_rows, want_scores = ann.ExactIndex(emb).search(queries, 60)
  assert got_rows.shape == (3, 50)
  np.testing.assert_array_equal(got_rows, want_rows)
  np.testing.assert_allclose(got_scores, want_scores, atol=1e-5)
  with pytest.raises(ValueError, match='holds 50 products, the rows 49'):
    ann.RowIndex(built, ids[:49])
  # An id the index answers that is no row (upserted, not exported) is dropped.
  built.upsert(np.array([5000]), queries[:1])
  r, _ = ann.RowIndex(built, np.append(ids, 7)).search(queries[:1], 3)
  assert r.tolist() == [want_rows[0, :2].tolist()]


def test_filtered_overfetch_through_a_tree_index_keeps_recall():
  """Over-fetching asks the export index for many neighbours; `RowIndex` asks 4x as many so
  they are re-ranked deeper than k (with a factor of 1 this measured recall@10 0.92)."""
  rng = np.random.default_rng(0)
  n = 5000
  emb = rng.standard_normal((n, 32)).astype(np.float32)
  emb /= np.linalg.norm(emb, axis=1, keepdims=True)
  cfg = export_index.IndexConfig(
    k=10, brute_force=False, num_leaves=50, leaves_to_search=50, reorder=100
  )
  rows = ann.RowIndex(export_index.build(emb, np.arange(n), {}, cfg), np.arange(n))
  inverted = catalogue_lib.InvertedIndex({'brand': [f'b{i}' for i in rng.integers(0, 20, n)]})
  search = filters.FilteredSearch(rows, emb, inverted, exact_max_rows=0)
  hits = 0
  for j in range(30):
    q = rng.standard_normal(32).astype(np.float32)
    q /= np.linalg.norm(q)
    filt = filters.Filter.from_pairs([('brand', f'b{j % 20}')])
    got = search.search(q, filt, 10)
    assert got.strategy == 'overfetch'
    want, _ = search.exact(q, inverted.rows(filt.clauses), 10)
    hits += len(set(got.rows.tolist()) & set(want.tolist()))
  assert hits / 300 >= 0.99, hits / 300


# --- Damaged artefacts: found, named, survived ------------------------------------------


def _largest(directory):
  files = [p for p in directory.rglob('*') if p.is_file() and p.name != 'manifest.json']
  return max(files, key=lambda p: p.stat().st_size)


def _delete(path):
  path.unlink()


def _truncate(path):
  path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip(path):
  data = bytearray(path.read_bytes())
  at = len(data) // 2
  data[at : at + 8] = bytes(b ^ 0xFF for b in data[at : at + 8])
  path.write_bytes(bytes(data))


FAULTS = {'deleted': _delete, 'truncated': _truncate, 'bytes_flipped': _flip}


@pytest.mark.parametrize('fault', sorted(FAULTS))
@pytest.mark.parametrize('artefact', ['products', 'index'])
def test_a_damaged_export_or_index_is_named_with_its_rebuild(served, tmp_path, artefact, fault):
  """Sizes are checked at every start (deleted, truncated); flipped bytes by the checksums
  of `--verify` (`verify='checksums'`)."""
  lay = _copy(served, tmp_path)
  damaged = _largest(getattr(lay, artefact))
  FAULTS[fault](damaged)
  command = {'products': 'tools.export', 'index': 'tools.build_index'}[artefact]
  verify = 'checksums' if fault == 'bytes_flipped' else 'sizes'
  with pytest.raises(manifest_lib.ManifestError) as e:
    service.searcher_from_workdir(lay.root, verify=verify)
  assert str(damaged) in str(e.value) and command in str(e.value), str(e.value)


@pytest.mark.parametrize('artefact', ['products', 'index', 'query_table'])
def test_a_damaged_manifest_is_named_with_its_rebuild(served, tmp_path, artefact):
  lay = _copy(served, tmp_path)
  manifest = getattr(lay, artefact) / 'manifest.json'
  _truncate(manifest)
  with pytest.raises(manifest_lib.ManifestError, match='build|export') as e:
    service.searcher_from_workdir(lay.root)
  assert str(manifest) in str(e.value) and 'damaged' in str(e.value)


def _logged_shard(served, text):
  words = served['searcher'].preprocessor.words(text)
  return querylog.key_qid(querylog.words_key(words)) >> 30  # shard_bits=2.


@pytest.mark.parametrize('fault', sorted(FAULTS))
def test_a_damaged_table_shard_degrades_to_online_never_a_500(served, tmp_path, fault):
  """Through the real server: the damaged shard's queries go online (exact search over the
  export), the others stay on the table; /healthz says degraded and names the shard;
  /metrics counts the lookups sent online; no request gets a 5xx."""
  from tests.test_server import get, serve

  lay = _copy(served, tmp_path)
  shard = _logged_shard(served, '红色 连衣裙')
  victim = lay.query_table / f'shard-{shard:05d}' / 'ids.npy'
  FAULTS[fault](victim)
  verify = 'checksums' if fault == 'bytes_flipped' else 'sizes'
  searcher = service.searcher_from_workdir(
    lay.root, params=served['params'], verify=verify, buckets=(8,), max_batch=2
  )
  try:
    assert searcher.table.health()['bad_shards'] == {str(shard): mock.ANY}
    assert str(victim) in searcher.table.health()['bad_shards'][str(shard)]
    answer = searcher.search('红色 连衣裙', K, use_filters=False)
    assert answer.path == 'online'
    want_ids, _ = _exact(served, '红色 连衣裙')
    assert [r.product_id for r in answer.results] == want_ids.tolist()
    other = [q.split('\t')[0] for q in LOGGED if _logged_shard(served, q.split('\t')[0]) != shard]
    for q in other:
      assert searcher.search(q, K, use_filters=False).path == 'table', q
    for port in serve(searcher):
      statuses = [
        get(port, '/search?q=' + urllib.parse.quote(q.split('\t')[0]))[0] for q in LOGGED * 3
      ]
      assert statuses == [200] * len(statuses)
      health = json.loads(get(port, '/healthz')[2])
      assert health['status'] == 'degraded' and str(shard) in health['table_bad_shards']
      metrics = get(port, '/metrics')[2].decode()
      line = next(m for m in metrics.splitlines() if m.startswith('make_table_degraded_lookups'))
      assert float(line.split()[-1]) >= 3
  finally:
    searcher.encoder.close()


def test_a_shard_garbled_after_start_is_marked_bad_at_its_first_lookup(served, tmp_path):
  """Without checksums a same-size overwrite of the keys is caught when a lookup reads it:
  that shard turns bad and the query goes online."""
  lay = _copy(served, tmp_path)
  shard = _logged_shard(served, '红色 连衣裙')
  keys = lay.query_table / f'shard-{shard:05d}' / 'keys.bin'
  keys.write_bytes(b'\xff' * keys.stat().st_size)
  table = query_table.QueryTable(lay.query_table)
  assert table.bad_shards == {}
  words = served['searcher'].preprocessor.words('红色 连衣裙')
  assert table.lookup(words) is None
  assert shard in table.bad_shards and table.degraded_lookups == 1


def test_a_damaged_run_config_is_named(served, tmp_path):
  lay = _copy(served, tmp_path)
  (lay.root / 'config.json').write_bytes(b'{"model": {"embed_dim": 1')
  with pytest.raises(rundir.ArtefactError, match=r'config\.json is damaged'):
    service.searcher_from_workdir(lay.root)
