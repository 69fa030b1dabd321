"""The results table's served row ranks as exact search does, and its filters hold.

A tiny run on synthetic en_small (trainer_testlib's config) is served through
`evaluation.served.rank_served`: its checkpoint exported by the Beam pipeline, indexed
(brute force) and searched by the served Searcher. The run's checkpoint is its step 0,
written by the trainer's own pieces (`load_preprocessor`, the layout's init, the Checkpointer):
a training step would cost ~30 s of compilation and change nothing checked here.
Checked against the exact search of `results.rank_trained` (the table's trained rows'
ranking) over the whole catalogue:
- filters off: the same top-k of every test query (ties aside);
- filters on: every product satisfies the filter that applied, read from the TFDS
  catalogue's attributes (not the serving catalogue), filters do apply to many queries,
  and each filtered list is the exact ranking restricted to the matching products;
- backfill (the default relevance mode): every list K long, the strict list first, the
  rest marked as outside the filter; the results driver's two served rows (strict and
  backfill) score P_rel and P_cate from one served view;
- a second catalogue (en_n200) gets its own served view, ranks over that catalogue, and
  leaves the first view as it was; a current view is reused, not rebuilt.
"""

import json
import os

import jax
import pytest

from make_jax import atomic_file, rundir
from make_jax.datasets import loading
from make_jax.evaluation import eval_set, results, served, sources
from make_jax.export import manifest as manifest_lib
from make_jax.models import make_model
from make_jax.train import checkpoint, inputs, layouts, optimizer
from tests import trainer_testlib

K = 10


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  data_dir, vocab = trainer_testlib.prepare(tmp_path_factory)
  config = trainer_testlib.tiny_config(data_dir, vocab)
  builder = loading.get_builder('synthetic_products', 'en_small', data_dir)
  workdir = tmp_path_factory.mktemp('served_run')
  atomic_file.write_text(workdir / 'config.json', json.dumps(rundir.config_json(config)))
  text = inputs.load_preprocessor(config, builder, workdir)  # vocab.txt, domain_words.txt.
  model = make_model.build_model(config)
  tx = optimizer.make_optimizer(config.optim, config.train.num_steps)
  layout = layouts.make_layout(config, model, tx, text)
  ckpt = checkpoint.Checkpointer(workdir, keep=1)
  ckpt.save(0, layout.canonical(layout.init(jax.random.key(0))), [], config)
  ckpt.close()
  n = builder.info.splits['catalogue'].num_examples
  queries, ids, _ = results.rank_trained(workdir, builder, 'test', (n,))
  full = sources.rankings_of(queries, ids)  # Every product, exact order.
  return dict(workdir=workdir, builder=builder, data_dir=data_dir, full=full)


def _lines(path):
  return {r['query']: r for r in map(json.loads, path.read_text('utf-8').splitlines())}


def _assert_same_ranking(got, want, scores, query):
  """Equal lists of ids, except where neighbouring scores tie within float rounding."""
  assert len(got) == len(want), query
  for i, (a, b) in enumerate(zip(got, want, strict=True)):
    if a != b:  # Only a near-tie (ScaNN vs the evaluator's top_k rounding) may swap.
      near = [abs(scores[i] - scores[j]) < 1e-5 for j in (i - 1, i + 1) if 0 <= j < len(scores)]
      assert any(near), (query, got, want, scores)


@pytest.mark.slow  # With the module's set-up (data, checkpoint, exact ranking): ~40 s.
def test_unfiltered_served_path_equals_exact_search(run, tmp_path):
  full = run['full']
  ranked = tmp_path / 'off.jsonl'
  got = served.rank_served(
    run['workdir'], run['builder'], list(full), K, use_filters=False, ranked_path=ranked
  )
  lines = _lines(ranked)
  assert set(got) == set(full) and len(full) > 100
  for q, ids in got.items():
    assert lines[q]['path'] == 'online' and not lines[q]['filters']
    _assert_same_ranking(ids, full[q][:K], lines[q]['scores'], q)
  view = served.view_dir(run['workdir'], 'en_small') / 'export'
  m = manifest_lib.read(view / 'index', 'scann_index')
  assert m['checkpoint_step'] == 0 and m['config']['brute_force'] and m['count'] == 1000
  assert not (run['workdir'] / 'export').exists()  # The run's own serving layout: untouched.


def test_filtered_results_satisfy_the_filter_and_rank_exactly(run, tmp_path):
  full, builder = run['full'], run['builder']
  ranked = tmp_path / 'on.jsonl'
  got = served.rank_served(
    run['workdir'], builder, list(full), K, relevance_mode='strict', ranked_path=ranked
  )
  lines = _lines(ranked)
  source = builder.as_data_source('catalogue')
  attrs = {
    int(r['product_id']): {f: r[f].decode() for f in ('brand', 'category')}
    for r in source.__getitems__(list(range(len(source))))
  }

  def ok(product, filt):
    return all(attrs[product][f] in values for f, values in filt.items())

  filtered = 0
  for q, ids in got.items():
    filt = lines[q]['filters']
    assert all(ok(p, filt) for p in ids), (q, filt, ids)
    filtered += bool(filt)
    want = [p for p in full[q] if ok(p, filt)][:K]
    _assert_same_ranking(ids, want, lines[q]['scores'], q)
  assert filtered >= len(got) // 4, (filtered, len(got))


def test_served_rows_score_both_relevance_modes(run, tmp_path):
  """The driver's served rows: strict and backfill lists of one run, each scored with
  P_rel and P_cate; a backfilled list is K long and starts with the strict list."""
  builder = run['builder']
  es = eval_set.from_builder(builder, 'test')
  (tmp_path / 'runs').mkdir()
  (tmp_path / 'runs' / 'make').symlink_to(run['workdir'])  # The trained row to serve.
  scored = {'splits': {'en_small/test': {'overall': {'recall@100': 0.5}}}}
  (tmp_path / 'results.json').write_text(
    json.dumps({'ks': [K], 'judged_ks': [K], 'rows': {'make': {'label': 'MAKE', **scored}}})
  )
  names = {'strict': 'best_relevance_control', 'backfill': 'best_relevance_backfill'}
  out = results.run_results(
    list(names.values()),
    tmp_path,
    load_split=lambda config, split: (builder, es, []),
    splits=[('en_small', 'test')],
    ks=(K,),
    judged_ks=(K,),
    bootstrap_samples=0,
  )
  lines = {}
  for mode, name in names.items():
    row = out['rows'][name]
    assert row['source_row'] == 'make' and mode in row['label'], row
    overall = row['splits']['en_small/test']['overall']
    assert 0 < overall[f'p_rel@{K}'] <= 1 and 0 < overall[f'p_cate@{K}'] <= 1, overall
    lines[mode] = _lines(tmp_path / name / 'en_small_test.jsonl')
  short = 0
  for q, strict in lines['strict'].items():
    backfill, m = lines['backfill'][q], len(strict['product_ids'])
    assert strict['relevance_mode'] == 'strict' and backfill['relevance_mode'] == 'backfill'
    assert len(backfill['product_ids']) == K == len(set(backfill['product_ids'])), q
    assert backfill['product_ids'][:m] == strict['product_ids'], q
    assert backfill['satisfies_filter'] == [True] * m + [False] * (K - m), q
    short += m < K
  assert short > 0  # Strict lists that backfill completes.
  table = (tmp_path / 'results.md').read_text()
  assert '(strict) | en_small/test' in table and '(backfill) | en_small/test' in table


def test_second_catalogue_has_its_own_view(run):
  first = served.view_dir(run['workdir'], 'en_small') / 'export'
  served.prepare_view(run['workdir'], run['builder'])
  stamp = lambda: [os.stat(first / p / 'manifest.json').st_ino for p in ('products', 'index')]  # noqa: E731
  before = stamp()
  served.prepare_view(run['workdir'], run['builder'])
  assert stamp() == before  # A current view is reused.
  other = loading.prepare('synthetic_products', 'en_n200', run['data_dir'])
  queries = list(run['full'])[:20]
  got = served.rank_served(run['workdir'], other, queries, K, use_filters=False)
  assert set(got) == set(queries) and all(len(v) == K for v in got.values())
  assert max(max(v) for v in got.values()) < 200  # en_n200's products (ids 0..199) only.
  m = manifest_lib.read(served.view_dir(run['workdir'], 'en_n200') / 'export' / 'products')
  assert m['source']['builder_config'] == 'en_n200' and m['count'] == 200
  assert stamp() == before  # The first catalogue's view is not clobbered.


def test_best_trained_row_by_default_test_recall():
  def row(recall):
    return {'splits': {'default/test': {'overall': {'recall@100': recall}}}}

  res = {'rows': {'bm25': row(0.9), 'make': row(0.5), 'make_cdns': row(0.6)}}
  res['rows'] |= {'make_mbns': row(0.6), 'make_all': row(float('nan'))}
  assert (
    served.best_trained_row(res, results.TRAINED_ROWS) == 'make_cdns'
  )  # BM25 is no trained row; ties: first.
  with pytest.raises(ValueError, match='no trained row'):
    served.best_trained_row(
      {'rows': {'bm25': row(0.9), 'make': {'splits': {}}}}, results.TRAINED_ROWS
    )


def test_pretrained_rows_train_once_per_scored_builder_config(tmp_path):
  """A per-config row trains on each scored config's own train split, into its own workdir,
  with that config's overrides; a from-scratch row trains once, on default; the validation
  split that picks the served row is scored too. (No checkpoint is written here, so every
  row ends 'not trained' and nothing is scored.)"""
  calls = []
  loaded = []

  def load_split(config, split):
    loaded.append((config, split))
    return None, None, []

  def train(row, workdir, builder_config):
    calls.append((row.name, workdir.relative_to(tmp_path).as_posix(), builder_config))

  out = results.run_results(
    ['minilm_make', 'make'],
    tmp_path,
    load_split=load_split,
    splits=[('default', 'test'), ('hide_colour', 'test')],
    select_on=('default', 'validation'),
    train=train,
  )
  assert loaded == [('default', 'test'), ('hide_colour', 'test'), ('default', 'validation')]
  assert calls == [
    ('minilm_make', 'runs/minilm_make', 'default'),
    ('minilm_make', 'runs/minilm_make@hide_colour', 'hide_colour'),
    ('make', 'runs/make', 'default'),
  ]
  assert set(out['rows']['minilm_make']['train_seconds_by_config']) == {'default', 'hide_colour'}
  assert out['rows']['make']['status'].startswith('not trained')
  row = results.Row('r', 'R', 'trained', {'a': 1, 'b': 2}, config_overrides={'x': {'b': 3}})
  assert row.overrides_for('x') == {'a': 1, 'b': 3} and row.overrides_for('y') == {'a': 1, 'b': 2}
