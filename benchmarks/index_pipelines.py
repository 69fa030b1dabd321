"""The pipelines half of benchmarks/bench_index.py: export and query-table throughput.

On the DirectRunner with the tiny config's random model: the export of the `zh_small`
synthetic catalogue (products/s), then the offline query table over the ~101k real Taobao
queries of `../shared/data/multi-cpr-ecom` (queries/s), checked (one row per distinct
sorted-word sequence, every query found with its words shuffled) and timed per lookup.
"""

import os
import time

import numpy as np

TAOBAO = [  # All ~101k real queries: `qid<TAB>query` lines.
  os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    '..',
    'shared',
    'data',
    'multi-cpr-ecom',
    f'{split}.query.txt',
  )
  for split in ('train', 'dev')
]


def bench_pipelines(work: str, table_queries: int) -> dict:
  """Export (zh_small catalogue, tiny random model) and the query table over real queries."""
  import random

  import tensorflow_datasets as tfds

  from configs import tiny
  from make_jax.datasets import loading
  from make_jax.export import embed, model_handler, query_table, querylog
  from make_jax.export import scann_index as index_lib
  from make_jax.text import vocab as vocab_lib
  from make_jax.text.preprocess import TextPreprocessor

  builder = loading.prepare('synthetic_products', 'zh_small', os.path.join(work, 'tfds'))
  vocab = os.path.join(work, 'vocab.txt')
  if not os.path.exists(vocab):
    src = builder.as_data_source('catalogue', decoders={'image': tfds.decode.SkipDecoding()})
    titles = [r['title'] for r in src.__getitems__(range(len(src)))]
    vocab_lib.save_vocab(vocab_lib.build_vocab(titles, 2048), vocab)
  config = tiny.get_config()
  config.data.builder_config, config.data.data_dir = 'zh_small', str(builder.data_dir_root)
  loader = model_handler.make_loader(config)
  loader()  # Initialise once (cached), outside the timings.
  out = {}
  start = time.perf_counter()
  m = embed.export_catalogue(config, vocab, os.path.join(work, 'emb'), loader=loader)
  sec = time.perf_counter() - start
  out['export'] = {'products': m['count'], 'seconds': sec, 'products_per_s': m['count'] / sec}
  print('export', out['export'], flush=True)
  index_lib.build_from_export(os.path.join(work, 'emb'), os.path.join(work, 'index'))
  lines = []
  for path in TAOBAO:
    with open(path, encoding='utf-8') as f:
      lines += [line.rstrip('\n') for line in f]
  lines = lines[:table_queries] if table_queries else lines
  log = os.path.join(work, 'queries.txt')
  with open(log, 'w', encoding='utf-8') as f:
    f.write('\n'.join(lines) + '\n')
  start = time.perf_counter()
  m = query_table.build_query_table(
    config,
    vocab,
    log,
    os.path.join(work, 'index'),
    os.path.join(work, 'table'),
    loader=loader,
    query_column=1,
    count_column=-1,
  )
  sec = time.perf_counter() - start
  out['table'] = {
    'lines': len(lines),
    'rows': m['rows'],
    'seconds': sec,
    'queries_per_s': len(lines) / sec,
    'counters': m['counters'],
  }
  print('table', out['table'], flush=True)
  # Check: one row per distinct sorted-word sequence; every query found in shuffled order.
  text = TextPreprocessor.from_vocab_file(vocab)
  words = [text.words(line.split('\t')[1]) for line in lines]
  keys = {querylog.words_key(w) for w in words if w}
  table = query_table.QueryTable(os.path.join(work, 'table'))
  rnd, lat, missing = random.Random(0), [], 0
  for w in words:
    if not w:
      continue
    shuffled = rnd.sample(w, len(w))
    t = time.perf_counter()
    row = table.lookup(shuffled)
    lat.append(time.perf_counter() - t)
    missing += row is None or row['qid'] != querylog.key_qid(querylog.words_key(w))
  full = []
  for line in lines[:5000]:
    t = time.perf_counter()
    table.lookup(text.words(line.split('\t')[1]))
    full.append(time.perf_counter() - t)
  qids = {querylog.key_qid(k) for k in keys}
  out['table_check'] = {
    'distinct_word_sequences': len(keys),
    'rows': len(table),
    'rows_equal_distinct': len(table) == len(keys),
    'qid_collisions': len(keys) - len(qids),
    'queries_looked_up': len(lat),
    'not_found': missing,
    'lookup_us_p50': 1e6 * float(np.percentile(lat, 50)),
    'lookup_us_p99': 1e6 * float(np.percentile(lat, 99)),
    'with_segmentation_us_p50': 1e6 * float(np.percentile(full, 50)),
    'with_segmentation_us_p99': 1e6 * float(np.percentile(full, 99)),
  }
  print('table_check', out['table_check'], flush=True)
  return out
