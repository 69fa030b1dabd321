"""Batch search: a file of queries to JSON lines of top-K product ids and scores.

The library half of `tools/search.py` (the evaluation reads its output): queries go
through the served `Searcher` in chunks (table hits first, misses encoded together), so
what is evaluated is what is served. Output, one line per query, in input order:

  {"query": "...", "product_ids": [...], "scores": [...], "satisfies_filter": [...],
   "path": "table"|"online", "relevance_mode": "backfill"|"strict",
   "filters": {"brand": ["Nike"]}}

`satisfies_filter[i]` is False for a product backfilled after the ones that satisfy the
filter (`filters.BACKFILL`); all True when no filter applied.
"""

import json

from make_jax.serving import search


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
  searcher: search.Searcher,
  queries: list[str],
  k: int,
  *,
  use_filters: bool = True,
  chunk: int = 256,
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
        'satisfies_filter': [r.satisfies_filter for r in answer.results],
        'path': answer.path,
        'relevance_mode': answer.relevance_mode,
        'filters': answer.filters,
      }
      lines.append(json.dumps(record, ensure_ascii=False))
  return lines, paths
