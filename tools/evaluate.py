r"""Scores rankings of a split's queries: Recall@K, P_rel@10, P_cate@10 with 95% intervals.

  # Rankings from the batch search CLI (tools/search.py) or a baseline:
  python -m tools.evaluate --dataset=fashion_products --builder_config=default \
      --data_dir=/tmp/tfds --split=test --ranked=results.jsonl --output=eval.json
  # The split's queries, one a line, as tools/search.py's --queries input:
  python -m tools.evaluate --dataset=fashion_products --split=test --write_queries=q.txt
  # Exact search over exported embeddings (export directories or .npz with ids, embedding):
  python -m tools.evaluate --dataset=fashion_products --split=test \
      --query_embeddings=/tmp/run/export/queries --product_embeddings=/tmp/run/export/catalogue \
      --domain_words=/tmp/run/domain_words.txt --output=eval.json

The split's queries and complete target sets are read from the TFDS builder (built if it
is not yet); the rules are in make_jax/evaluation/evaluate.py. Prints a table; `--output`
gets the overall metrics, the per-query values and the counts as JSON (atomic write).
"""

import json

from absl import app, flags, logging

from make_jax import atomic_file
from make_jax.datasets import loading
from make_jax.evaluation import eval_set, evaluate, sources

_DATASET = flags.DEFINE_string('dataset', 'fashion_products', 'TFDS builder name.')
_CONFIG = flags.DEFINE_string('builder_config', '', "Builder config ('' = the default).")
_DATA_DIR = flags.DEFINE_string('data_dir', '', "TFDS data_dir ('' = TFDS's default).")
_MANUAL_DIR = flags.DEFINE_string('manual_dir', '../shared/data', 'Folder holding the fashion zip.')
_SPLIT = flags.DEFINE_string('split', 'test', 'Split whose queries are evaluated.')
_RANKED = flags.DEFINE_string('ranked', '', 'JSON lines of ranked product ids per query.')
_QUERY_EMB = flags.DEFINE_string('query_embeddings', '', 'Query embeddings (ids = qids).')
_PRODUCT_EMB = flags.DEFINE_string('product_embeddings', '', 'Product embeddings.')
_DOMAIN_WORDS = flags.DEFINE_string(
  'domain_words', '', "The run's domain_words.txt ('' = the dataset's metadata)."
)
_KS = flags.DEFINE_list('ks', ['10', '100', '1000'], 'Recall cut-offs.')
_JUDGED_KS = flags.DEFINE_list('judged_ks', ['10'], 'P_rel / P_cate cut-offs.')
_BOOTSTRAP = flags.DEFINE_integer('bootstrap', 1000, 'Bootstrap resamples (0: no intervals).')
_ALLOW_MISSING = flags.DEFINE_bool('allow_missing', False, 'Score queries without a list as empty.')
_OUTPUT = flags.DEFINE_string('output', '', 'JSON result file.')
_WRITE_QUERIES = flags.DEFINE_string(
  'write_queries', '', "Only write the split's queries (one a line) here, for tools/search.py."
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  builder = loading.prepare(_DATASET.value, _CONFIG.value, _DATA_DIR.value, _MANUAL_DIR.value)
  es = eval_set.from_builder(builder, _SPLIT.value)
  if _WRITE_QUERIES.value:
    sources.write_queries(_WRITE_QUERIES.value, es.queries)
    print(f'wrote {es.num_queries} queries of {_SPLIT.value} to {_WRITE_QUERIES.value}')
    return
  if _DOMAIN_WORDS.value:
    with open(_DOMAIN_WORDS.value, encoding='utf-8') as f:
      domain_words = [w for w in f.read().splitlines() if w]
  else:
    domain_words = list((builder.info.metadata or {}).get('domain_words', ()))
  ks = [int(k) for k in _KS.value]
  rankings, read_counts = sources.rankings_from_files(
    es,
    ranked=_RANKED.value,
    query_embeddings=_QUERY_EMB.value,
    product_embeddings=_PRODUCT_EMB.value,
    domain_words=domain_words,
    k=max(ks),
    allow_missing=_ALLOW_MISSING.value,
  )
  logging.info('read: %s', read_counts)
  result = evaluate.evaluate_rankings(
    es,
    rankings,
    ks=ks,
    judged_ks=[int(k) for k in _JUDGED_KS.value],
    bootstrap_samples=_BOOTSTRAP.value,
    allow_missing=_ALLOW_MISSING.value,
  )
  result['counts'] |= {f'read_{k}': v for k, v in read_counts.items()}
  result['dataset'] = f'{_DATASET.value}/{builder.builder_config.name}:{_SPLIT.value}'
  print(evaluate.format_table(result, result['dataset']))
  if _OUTPUT.value:
    atomic_file.write_text(_OUTPUT.value, json.dumps(result, indent=1, ensure_ascii=False))


if __name__ == '__main__':
  app.run(main)
