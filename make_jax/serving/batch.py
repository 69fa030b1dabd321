"""Batch search: a file of queries to JSON lines of top-K product ids and scores.

The library half of `tools/search.py` (the evaluation reads its output): queries go
through the served `Searcher` in chunks (table hits first, misses encoded together), so
what is evaluated is what is served. Each input line is checked by the server's rule
(`params.query_problem`). Output, one line per input line, in input order:

  {"line": 3, "query": "...", "product_ids": [...], "scores": [...],
   "satisfies_filter": [...], "path": "table"|"online"|"none", "relevance_mode":
   "backfill"|"strict", "filters": {"brand": ["Nike"]}}
  {"line": 4, "query": "...", "error": "the query is whitespace only"}

A query with no word the model knows is answered with no product, `"path": "none"` and
`"no_known_words": true`.

`satisfies_filter[i]` is False for a product backfilled after the ones that satisfy the
filter (`filters.BACKFILL`); all True when no filter applied.
"""

import json

from make_jax.serving import params as params_lib
from make_jax.serving import search


def read_queries(
  path: str, max_query_chars: int = params_lib.MAX_QUERY_CHARS
) -> tuple[list[tuple[int, str, str | None]], dict[str, int]]:
  """Every line of `path` as (line number from 1, text, why it is rejected or None), and
  the count of lines by outcome.

  A line is rejected by the server's rule (`params.query_problem`: empty, whitespace only,
  control characters, too long) or for not being UTF-8 (its text is then the line with
  the bad bytes replaced by U+FFFD, for the output only).
  """
  counts = {'lines': 0, 'kept': 0, 'invalid_utf8': 0, 'rejected': 0}
  entries = []
  with open(path, 'rb') as f:
    for number, raw in enumerate(f, start=1):
      counts['lines'] += 1
      raw = raw.rstrip(b'\r\n')
      try:
        text = raw.decode('utf-8')
        problem = params_lib.query_problem(text, max_query_chars)
        why = None if problem is None else f'the query {problem}'
      except UnicodeDecodeError as e:
        text, why = raw.decode('utf-8', 'replace'), f'not valid UTF-8 (byte {e.start})'
        counts['invalid_utf8'] += 1
      if why is not None:
        counts['rejected'] += 1
      else:
        counts['kept'] += 1
      entries.append((number, text, why))
  return entries, counts


def search_lines(
  searcher: search.Searcher,
  entries: list[tuple[int, str, str | None]],
  k: int,
  *,
  use_filters: bool = True,
  chunk: int = 256,
) -> tuple[list[str], dict[str, int]]:
  """One JSON line per entry of `read_queries`, in input order (module docstring): the
  answer of each searchable line, `{"line", "query", "error"}` for a rejected one; and the
  count of lines per path ('table', 'online', 'none', 'rejected')."""
  paths = {'table': 0, 'online': 0, 'none': 0, 'rejected': 0}
  lines: dict[int, str] = {}
  todo = []
  for number, text, why in entries:
    if why is None:
      todo.append((number, text))
    else:
      paths['rejected'] += 1
      record = {'line': number, 'query': text, 'error': why}
      lines[number] = json.dumps(record, ensure_ascii=False)
  for start in range(0, len(todo), chunk):
    part = todo[start : start + chunk]
    answers = searcher.search_batch([t for _, t in part], k, use_filters=use_filters)
    for (number, _), answer in zip(part, answers, strict=True):
      paths[answer.path] += 1
      record = {
        'line': number,
        'query': answer.query,
        'product_ids': [r.product_id for r in answer.results],
        'scores': [round(r.score, 6) for r in answer.results],
        'satisfies_filter': [r.satisfies_filter for r in answer.results],
        'path': answer.path,
        'relevance_mode': answer.relevance_mode,
        'filters': answer.filters,
      }
      if answer.fallback_reason == search.NO_KNOWN_WORDS:
        record['no_known_words'] = True
      lines[number] = json.dumps(record, ensure_ascii=False)
  return [lines[number] for number, _, _ in entries], paths
