r"""Batch search: queries from a file, one per line, to JSON lines of top-K ids and scores.

  python -m tools.search --workdir=/tmp/make_fashion --queries=queries.txt \
    --output=results.jsonl --k=100

The searcher is the served one (same flags as tools/serve.py: `--workdir`, or `--demo`
with `--config`, and `--relevance_mode=backfill|strict`), so what is evaluated is what is
served: table hits first, online encoding of the misses in batches, relevance control
unless `--nofilter`.

Output, one line per input line, in input order (written atomically at the end):
  {"line": 1, "query": "...", "product_ids": [...], "scores": [...],
   "satisfies_filter": [...], "path": "table"|"online"|"none", "relevance_mode": "backfill",
   "filters": {"brand": ["Nike"]}}
(`satisfies_filter`: False for the products backfilled after those that satisfy it.)
A line the server would reject (empty, whitespace only, control characters, over
`--max_query_chars`, not UTF-8) becomes {"line": n, "query": "...", "error": "<why>"}; a
query with no word the model knows gets no product, "path": "none", "no_known_words": true.
"""

from absl import app, flags, logging

from make_jax import atomic_file
from make_jax.serving import batch
from tools import serve

_QUERIES = flags.DEFINE_string('queries', None, 'Text file, one query per line.', required=True)
_OUTPUT = flags.DEFINE_string('output', None, 'JSON lines written here.', required=True)
_K = flags.DEFINE_integer('k', 100, 'Results per query.')
_FILTER = flags.DEFINE_bool('filter', True, 'Apply relevance control (attribute filters).')
_CHUNK = flags.DEFINE_integer('chunk', 256, 'Queries searched per batch.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  entries, counts = batch.read_queries(_QUERIES.value, serve.MAX_CHARS.value)
  logging.info('queries: %s', counts)
  searcher = serve.searcher_or_exit('tools.search')
  lines, paths = batch.search_lines(
    searcher, entries, _K.value, use_filters=_FILTER.value, chunk=_CHUNK.value
  )
  atomic_file.write_text(_OUTPUT.value, ''.join(line + '\n' for line in lines))
  logging.info('wrote %d results to %s (paths %s)', len(lines), _OUTPUT.value, paths)
  if searcher.encoder is not None:
    searcher.encoder.close()


if __name__ == '__main__':
  app.run(main)
