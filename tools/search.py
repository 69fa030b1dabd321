r"""Batch search: queries from a file, one per line, to JSON lines of top-K ids and scores.

  python -m tools.search --workdir=/tmp/make_fashion --queries=queries.txt \
    --output=results.jsonl --k=100

The searcher is the served one (same flags as tools/serve.py: `--workdir`, or `--demo`
with `--config`), so what is evaluated is what is served: table hits first, online
encoding of the misses in batches, relevance control unless `--nofilter`.

Output, one line per query in input order (written atomically at the end):
  {"query": "...", "product_ids": [...], "scores": [...], "path": "table"|"online",
   "filters": {"brand": ["Nike"]}}
Empty lines and lines that are not valid UTF-8 are skipped and counted (log).
"""

import json

from absl import app, flags, logging

from make_jax import atomic_file
from tools import serve

_QUERIES = flags.DEFINE_string('queries', None, 'Text file, one query per line.', required=True)
_OUTPUT = flags.DEFINE_string('output', None, 'JSON lines written here.', required=True)
_K = flags.DEFINE_integer('k', 100, 'Results per query.')
_FILTER = flags.DEFINE_bool('filter', True, 'Apply relevance control (attribute filters).')
_CHUNK = flags.DEFINE_integer('chunk', 256, 'Queries searched per batch.')


def read_queries(path: str) -> tuple[list[str], dict[str, int]]:
  """Lines of `path` as queries; empty and non-UTF-8 lines skipped and counted."""
  counts = {'lines': 0, 'empty': 0, 'invalid_utf8': 0}
  queries = []
  with open(path, 'rb') as f:
    for raw in f:
      counts['lines'] += 1
      try:
        text = raw.rstrip(b'\r\n').decode('utf-8')
      except UnicodeDecodeError:
        counts['invalid_utf8'] += 1
        continue
      if not text.strip():
        counts['empty'] += 1
        continue
      queries.append(text)
  return queries, counts


def search_lines(
  searcher, queries: list[str], k: int, *, use_filters: bool = True, chunk: int = 256
) -> tuple[list[str], dict[str, int]]:
  """JSON lines (module docstring) of each query's answer, and the count per path."""
  lines, paths = [], {'table': 0, 'online': 0}
  for start in range(0, len(queries), chunk):
    for answer in searcher.search_batch(queries[start : start + chunk], k, use_filters=use_filters):
      paths[answer.path] += 1
      record = {
        'query': answer.query,
        'product_ids': [r.product_id for r in answer.results],
        'scores': [round(r.score, 6) for r in answer.results],
        'path': answer.path,
        'filters': answer.filters,
      }
      lines.append(json.dumps(record, ensure_ascii=False))
  return lines, paths


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  queries, counts = read_queries(_QUERIES.value)
  logging.info('queries: %d kept of %s', len(queries), counts)
  searcher = serve.searcher_from_flags()
  lines, paths = search_lines(
    searcher, queries, _K.value, use_filters=_FILTER.value, chunk=_CHUNK.value
  )
  atomic_file.write_text(_OUTPUT.value, ''.join(line + '\n' for line in lines))
  logging.info('wrote %d results to %s (paths %s)', len(lines), _OUTPUT.value, paths)
  if searcher.encoder is not None:
    searcher.encoder.close()


if __name__ == '__main__':
  app.run(main)
