"""The README's quickstart end to end on configs/tiny.py: the first thing a new user runs.

It must build the synthetic data, learn and save a vocabulary, train through the same
`train_and_evaluate` as `tools.train` with every configured loss, log finite metrics, write
a checkpoint and print the held-out Recall@10 before and after training; then export,
index and build the query table into the served layout and answer example searches through
the served Searcher (a logged query from the table, an unlogged one online, a filtered one)
and print the serve command; a later run in the same workdir must reuse the saved vocabulary
(loaded, not learned again), resume rather than start again and reuse the artefacts; and a
model too small for the tokenizer must be refused with a message that says which setting
to change.
"""

import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from configs import tiny
from make_jax import quickstart, rundir
from make_jax.datasets import loading
from make_jax.export import embed, query_table
from make_jax.models import make_model
from make_jax.serving import service
from make_jax.train import optimizer
from make_jax.train import step as train_step
from tests import trainer_testlib

ROOT = trainer_testlib.ROOT


def text_words(workdir, query):
  """The query's words as the run's preprocessor (with its domain dictionary) gives them."""
  from make_jax.export import querylog

  return querylog.text_preprocessor(_config(), str(workdir / 'vocab.txt')).words(query)


def _config():
  config = tiny.get_config()
  config.train.num_steps = 4
  config.train.log_every = 2
  config.train.eval_every = 4
  config.train.eval_max_queries = 20
  return config


@pytest.mark.slow
def test_quickstart_trains_evaluates_and_reuses_its_workdir(tmp_path, capsys):
  config = _config()
  out = quickstart.run(config, tmp_path, show=1)
  metrics = out['metrics']
  for k in ('loss', 'qpm', 'qpc', 'mlm', 'mpm_r', 'grad_norm', 'learning_rate'):
    assert math.isfinite(metrics[k]) and metrics[k] > 0, (k, metrics)
  assert metrics['qpm_negatives_bank'] > 0  # The queue filled and fed QPM.
  assert 0 < metrics['modal_weight_image'] < 1
  assert [e['step'] for e in out['evals']] == [0, 4]
  for e in out['evals']:
    assert 0 <= e['recall@10'] <= 1 and e['num_queries'] == 20
  printed = capsys.readouterr().out
  assert '== 4. Training 4 steps' in printed and 'Held-out Recall@10' in printed
  assert f'step    4: {out["evals"][-1]["recall@10"]:.4f}' in printed
  logged = trainer_testlib.read_metrics(tmp_path)
  assert sorted(logged) == [2, 4]
  assert logged[4]['loss'] == pytest.approx(metrics['loss'])
  assert logged[4]['recall@10'] == out['evals'][-1]['recall@10']
  assert rundir.find_checkpoint(tmp_path)[1] == 4
  assert (tmp_path / 'config.json').exists() and (tmp_path / 'domain_words.txt').exists()

  # Served from the workdir's export: the logged query by the table (its products in the
  # table's order, filtered), the unlogged one online, the filtered one within its filter
  # (backfilled, if fewer than 5 products satisfy it, by products marked as outside it).
  serving = out['serving']
  for stage in ('== 6. Export', '== 7. Index', '== 8. Query log', '== 9. Searches'):
    assert stage in printed, stage
  assert f'== Serve it: python -m tools.serve --workdir={tmp_path}' in printed
  answers, lay = serving['answers'], rundir.RunDir(tmp_path)
  logged = answers['logged']
  assert logged.path == 'table' and len(logged.results) == 5
  row = query_table.QueryTable(lay.query_table).lookup(text_words(tmp_path, logged.query))
  table_ids = row['ids'].tolist()
  got = [r.product_id for r in logged.results]
  assert got == sorted(got, key=table_ids.index)  # In the table's order.
  assert (
    answers['unlogged'].path == 'online' and answers['unlogged'].fallback_reason == 'table_miss'
  )
  filtered = answers['filtered']
  assert filtered.filters and len(filtered.results) == 5
  cat = service.catalogue_for_config(config)
  marks = [r.satisfies_filter for r in filtered.results]
  assert marks[0] and marks == sorted(marks, reverse=True)  # Satisfying products first.
  for r in filtered.results:
    row = cat.rows_of_ids(np.array([r.product_id]))[0]
    ok = all(cat.attributes[f][row] in values for f, values in filtered.filters.items())
    assert ok == r.satisfies_filter
  assert embed.read_embeddings(lay.products)[3]['count'] == len(cat)

  # A later run finds <workdir>/vocab.txt and loads it instead of learning a new one, and
  # finds the finished checkpoint instead of training again.
  vocab_path = tmp_path / 'vocab.txt'
  saved, mtime = vocab_path.read_bytes(), vocab_path.stat().st_mtime_ns
  assert len(saved.splitlines()) <= config.text.vocab_size
  builder = loading.prepare(
    config.data.name, config.data.builder_config, str(tmp_path / 'tensorflow_datasets')
  )
  text = quickstart.load_or_learn_vocab(config, builder, tmp_path)
  assert vocab_path.read_bytes() == saved and vocab_path.stat().st_mtime_ns == mtime
  assert text.vocab_size == len(saved.splitlines())
  capsys.readouterr()
  again = quickstart.run(config, tmp_path, show=0)
  assert again['history'] == [] and again['evals'][0]['recall@10'] == out['evals'][-1]['recall@10']
  assert capsys.readouterr().out.count('is up to date (same checkpoint and model): reused') == 3
  assert [r.product_id for r in again['serving']['answers']['logged'].results] == got

  # Damaged artefacts through the real batch-search CLI: a truncated index stops it with one
  # line naming the file and the rebuild; a truncated table shard only sends its queries
  # online (one output line per input line still).
  _cli_faults(tmp_path, logged.query)

  # The model's embedding table must cover the tokenizer's vocabulary.
  config.model.vocab_size = text.vocab_size - 1
  tx = optimizer.make_optimizer(config.optim, config.train.num_steps)
  with pytest.raises(ValueError, match=r'model\.vocab_size'):
    train_step.make_train_step(make_model.build_model(config), tx, config, text)


def _search_cli(workdir, queries_file, output):
  cmd = [sys.executable, '-m', 'tools.search', f'--workdir={workdir}']
  cmd += [f'--queries={queries_file}', f'--output={output}', '--k=5']
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _cli_faults(workdir, logged_query):
  base = workdir.parent / f'{workdir.name}-faults'
  base.mkdir()
  queries = base / 'queries.txt'
  queries.write_text(f'{logged_query}\nsome unlogged words\n   \n', 'utf-8')
  index_copy = base / 'damaged_index'
  shutil.copytree(workdir, index_copy, ignore=shutil.ignore_patterns('tensorflow_datasets'))
  victim = max((index_copy / 'export' / 'index').glob('*'), key=lambda p: p.stat().st_size)
  victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
  done = _search_cli(index_copy, queries, base / 'out1.jsonl')
  last = done.stderr.strip().splitlines()[-1]
  assert done.returncode == 1 and 'Traceback' not in done.stderr, done.stderr[-2000:]
  assert last.startswith('tools.search:') and str(victim) in last and 'tools.build_index' in last

  table_copy = base / 'damaged_table'
  shutil.copytree(workdir, table_copy, ignore=shutil.ignore_patterns('tensorflow_datasets'))
  for shard in (table_copy / 'export' / 'query_table').glob('shard-*'):
    ids = shard / 'ids.npy'
    ids.write_bytes(ids.read_bytes()[:100])
  out = base / 'out2.jsonl'
  done = _search_cli(table_copy, queries, out)
  assert done.returncode == 0, done.stderr[-2000:]
  lines = [json.loads(line) for line in out.read_text('utf-8').splitlines()]
  assert [r['line'] for r in lines] == [1, 2, 3]
  assert lines[0]['path'] == 'online' and len(lines[0]['product_ids']) == 5
  assert 'whitespace' in lines[2]['error']
