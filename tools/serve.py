r"""Starts the search server (FastAPI on uvicorn): /search, the page at /, /healthz, /metrics.

From a training workdir (config.json, vocab.txt, checkpoints/ and the offline artefacts
in their fixed places: export/products from tools.export, export/index from
tools.build_index, export/query_table from tools.build_query_table, optional):
  python -m tools.serve --workdir=/tmp/make_fashion --port=8000

A demo without a trained run (random model, embeddings computed at start; `--config`
picks the catalogue, here the real fashion one, the first 2,000 products):
  python -m tools.serve --demo --config=configs/tiny.py \
    --config.data.name=fashion_products --num_products=2000 --port=8000

Then open http://127.0.0.1:8000/ or `curl '127.0.0.1:8000/search?q=nike+tees&k=5'`.

Relevance control puts the products that satisfy the query's attribute filter first and
backfills the list to k with the best of the rest (`--relevance_mode=backfill`, each
result marked); `--relevance_mode=strict` is the paper's filter (lists may be shorter).
A request may ask for the other with `&relevance_mode=`.
"""

import sys
import time

import uvicorn
from absl import app, flags, logging
from ml_collections import config_flags

from make_jax import rundir
from make_jax.serving import filters, server, service
from make_jax.serving import params as params_lib

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/tiny.py', 'Config (--demo only).')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Training workdir to serve.')
_DEMO = flags.DEFINE_bool('demo', False, 'Serve a random model over the config catalogue.')
_NUM_PRODUCTS = flags.DEFINE_integer('num_products', 2000, 'Demo: products (0: all).')
_HOST = flags.DEFINE_string('host', '127.0.0.1', 'Address to listen on.')
_PORT = flags.DEFINE_integer('port', 8000, 'Port to listen on.')
_BUCKETS = flags.DEFINE_list('buckets', ['8'], 'Query length buckets (query_len is added).')
_MAX_BATCH = flags.DEFINE_integer('max_batch', 8, 'Most queries encoded in one call.')
_MAX_WAIT_MS = flags.DEFINE_float('max_wait_ms', 2.0, 'Wait for a batch to fill (ms).')
_MAX_K = flags.DEFINE_integer('max_k', params_lib.MAX_K, 'Largest k accepted.')
MAX_CHARS = flags.DEFINE_integer('max_query_chars', params_lib.MAX_QUERY_CHARS, 'Query limit.')
_RELEVANCE_MODE = flags.DEFINE_enum(
  'relevance_mode',
  filters.DEFAULT_MODE,
  filters.MODES,
  'Relevance control: backfill (satisfying products first, then the best of the rest, '
  'k long) or strict (satisfying products only).',
)
_VERIFY = flags.DEFINE_bool(
  'verify',
  False,
  "Check every artefact file's SHA-256 against its manifest at start-up (sizes are always "
  'checked); the time it took is logged.',
)


def _from_workdir(workdir: str, **kwargs):
  params, step = rundir.latest_params(workdir)
  logging.info('serving %s at step %d', workdir, step)
  start = time.perf_counter()
  verify = 'checksums' if _VERIFY.value else 'sizes'
  searcher = service.searcher_from_workdir(
    workdir, params=params, step=step, verify=verify, **kwargs
  )
  logging.info('artefacts opened (%s checked) in %.2f s', verify, time.perf_counter() - start)
  return searcher


def searcher_from_flags():
  """The Searcher that --workdir or --demo (and the batching and relevance flags) name."""
  if _DEMO.value == bool(_WORKDIR.value):
    raise app.UsageError('give exactly one of --workdir and --demo')
  kwargs = dict(
    buckets=[int(b) for b in _BUCKETS.value],
    max_batch=_MAX_BATCH.value,
    max_wait_ms=_MAX_WAIT_MS.value,
    relevance_mode=_RELEVANCE_MODE.value,
  )
  if _DEMO.value:
    return service.demo_searcher(_CONFIG.value, _NUM_PRODUCTS.value or None, **kwargs)
  return _from_workdir(_WORKDIR.value, **kwargs)


def searcher_or_exit(tool: str):
  """`searcher_from_flags()`, or exit with one line naming a missing or damaged artefact
  (file and rebuild command) instead of a traceback."""
  damaged = (rundir.ArtefactError, FileNotFoundError)
  try:
    return searcher_from_flags()
  except damaged as e:
    sys.exit(f'{tool}: {e}')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  searcher = searcher_or_exit('tools.serve')
  logging.info(
    'serving %d products on http://%s:%d/', len(searcher.catalogue), _HOST.value, _PORT.value
  )
  uvicorn.run(
    server.create_app(searcher, max_query_chars=MAX_CHARS.value, max_k=_MAX_K.value),
    host=_HOST.value,
    port=_PORT.value,
    log_level='warning',
    # Long request lines reach the app, which answers 414 past server.MAX_URL_BYTES
    # (h11's default of 16 KiB resets the connection instead).
    h11_max_incomplete_event_size=server.H11_MAX_BYTES,
  )


if __name__ == '__main__':
  app.run(main)
