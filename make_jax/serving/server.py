"""The HTTP service: `/search` JSON, the search page, `/healthz` and Prometheus `/metrics`.

FastAPI (run by uvicorn, `tools/serve.py`) around one `search.Searcher`:

  GET /search?q=...&k=...  top-k products as JSON: id, title, score, the product's
      [&relevance_mode=]   title/image Modal Adaptation weights, image URL, whether it
                           satisfies the filter; the filters that applied, the relevance
                           mode (backfill/strict; default the searcher's), the path
                           (table/online), the strategy, latency.
  GET /                    the search page (static/: plain HTML/JS/CSS, no external asset).
  GET /image/{product_id}  the product's image bytes (404 if it has none).
  GET /healthz             liveness and what is loaded.
  GET /metrics             requests by endpoint and status, search latency histogram by
                           path, errors by kind (Prometheus text format).

Every bad input is a 400 with a JSON `{"error": message}` (`params.py` says which); a
search the server cannot serve (a table miss without an encoder) is a 503; anything else
that fails is a 500 and is counted in `make_errors_total{kind="internal"}`. `/search` is
a plain (threaded) endpoint, so concurrent online queries meet in the batching encoder.
"""

import logging
import pathlib
import time
from typing import Any

import prometheus_client
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from make_jax.serving import params as params_lib
from make_jax.serving import search as search_lib

STATIC_DIR = pathlib.Path(__file__).resolve().parent / 'static'
# Request targets (path and query string) longer than this get a 414. `tools.serve` lets
# the HTTP parser read lines up to H11_MAX_BYTES so that such a request reaches the app.
MAX_URL_BYTES = 8192
H11_MAX_BYTES = 1 << 20
_ENDPOINTS = ('/search', '/healthz', '/metrics', '/', '/image', '/favicon.ico')
_LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
_log = logging.getLogger(__name__)


class Metrics:
  """The service's Prometheus metrics, in a registry of its own (one per app)."""

  def __init__(self):
    self.registry = prometheus_client.CollectorRegistry()
    self.requests = prometheus_client.Counter(
      'make_requests',
      'HTTP requests by endpoint and status.',
      ['endpoint', 'status'],
      registry=self.registry,
    )
    self.latency = prometheus_client.Histogram(
      'make_search_latency_seconds',
      'Search latency by path (table or online).',
      ['path'],
      buckets=_LATENCY_BUCKETS,
      registry=self.registry,
    )
    self.errors = prometheus_client.Counter(
      'make_errors',
      'Errors by kind (bad_request, unavailable, damaged_artefact, internal).',
      ['kind'],
      registry=self.registry,
    )
    self.results = prometheus_client.Histogram(
      'make_search_results',
      'Results returned per search.',
      ['path'],
      buckets=(0, 1, 5, 10, 20, 50, 100),
      registry=self.registry,
    )


def _endpoint(path: str) -> str:
  for e in _ENDPOINTS:
    if path == e or (e not in ('/',) and path.startswith(e + '/')):
      return e
  return 'static' if path.startswith('/static/') else 'other'


def _error(status: int, message: str) -> JSONResponse:
  return JSONResponse({'error': message}, status_code=status)


def _image_type(data: bytes) -> str:
  if data.startswith(b'\x89PNG'):
    return 'image/png'
  return 'image/jpeg' if data.startswith(b'\xff\xd8') else 'application/octet-stream'


def create_app(
  searcher: search_lib.Searcher,
  *,
  max_query_chars: int = params_lib.MAX_QUERY_CHARS,
  max_k: int = params_lib.MAX_K,
  default_k: int = params_lib.DEFAULT_K,
) -> FastAPI:
  """The FastAPI app serving `searcher` (see the module docstring)."""
  app = FastAPI(title='make_jax search', docs_url=None, redoc_url=None, openapi_url=None)
  metrics = Metrics()
  app.state.metrics = metrics

  def table_health() -> dict[str, Any]:
    """Damaged query-table shards (their queries go online) and the lookups they turned
    away; empty without a table (or with one that cannot be damaged: in memory)."""
    health = getattr(searcher.table, 'health', None)
    return health() if health is not None else {'bad_shards': {}, 'degraded_lookups': 0}

  prometheus_client.Gauge(
    'make_table_bad_shards',
    'Query-table shards found damaged (their queries are answered online).',
    registry=metrics.registry,
  ).set_function(lambda: len(table_health()['bad_shards']))
  prometheus_client.Gauge(
    'make_table_degraded_lookups',
    'Table lookups sent online because their shard is damaged (since start).',
    registry=metrics.registry,
  ).set_function(lambda: table_health()['degraded_lookups'])
  app.state.searcher = searcher

  # The segmenter loads its dictionary on first use (~1 s for jieba): before the first query.
  searcher.preprocessor.words('预热 warm up')

  @app.exception_handler(StarletteHTTPException)
  async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """404 / 405 (and any framework error) in the one error shape: {"error": ...}."""
    return _error(exc.status_code, f'{exc.detail}: {request.method} {request.url.path[:200]}')

  @app.middleware('http')
  async def count_requests(request: Request, call_next):
    target = len(request.scope.get('raw_path', b'')) + len(request.scope.get('query_string', b''))
    if target > MAX_URL_BYTES:
      metrics.errors.labels('bad_request').inc()
      metrics.requests.labels(_endpoint(request.url.path), '414').inc()
      return _error(414, f'the URL has {target} bytes; the limit is {MAX_URL_BYTES}')
    try:
      response = await call_next(request)
    except Exception:  # Reached only if a handler's error escaped the handlers below.
      _log.exception('unhandled error on %s', request.url.path)
      metrics.errors.labels('internal').inc()
      response = _error(500, 'internal error')
    metrics.requests.labels(_endpoint(request.url.path), str(response.status_code)).inc()
    return response

  @app.get('/search')
  def search(request: Request) -> Response:
    start = time.perf_counter()
    try:
      p = params_lib.parse_search(
        request.scope.get('query_string', b''),
        max_query_chars=max_query_chars,
        max_k=max_k,
        default_k=default_k,
      )
    except params_lib.BadRequest as e:
      metrics.errors.labels('bad_request').inc()
      return _error(400, str(e))
    try:
      answer = searcher.search(p.q, p.k, relevance_mode=p.relevance_mode)
    except LookupError as e:
      metrics.errors.labels('unavailable').inc()
      return _error(503, str(e))
    except Exception:
      _log.exception('search failed for %r', p.q)
      metrics.errors.labels('internal').inc()
      return _error(500, 'internal error while searching')
    seconds = time.perf_counter() - start
    metrics.latency.labels(answer.path).observe(seconds)
    metrics.results.labels(answer.path).observe(len(answer.results))
    body = answer.as_json()
    body['latency_ms']['server'] = round(1e3 * seconds, 3)
    for r in body['results']:
      r['image_url'] = f'/image/{r["product_id"]}'
    return JSONResponse(body)

  @app.get('/healthz')
  def healthz() -> dict[str, object]:
    table = table_health()
    return {
      # 'degraded': part of the query table is damaged; its queries are answered online.
      'status': 'degraded' if table['bad_shards'] else 'ok',
      'table_bad_shards': table['bad_shards'],
      'products': len(searcher.catalogue),
      'dataset': searcher.catalogue.dataset,
      'restricted_fields': list(searcher.relevance.fields),
      'table': searcher.table is not None,
      'online_encoder': searcher.encoder is not None,
      'relevance_mode': searcher.relevance_mode,
    }

  @app.get('/metrics')
  def metrics_endpoint() -> Response:
    return Response(
      prometheus_client.generate_latest(metrics.registry),
      media_type=prometheus_client.CONTENT_TYPE_LATEST,
    )

  @app.get('/image/{product_id}')
  def image(product_id: str) -> Response:
    if not (product_id.isascii() and product_id.isdigit() and len(product_id) <= 18):
      return _error(400, f'product id must be a non-negative integer; got {product_id[:30]!r}')
    try:
      data = searcher.catalogue.image(int(product_id))
    except Exception:  # A damaged image store: this image is missing, the server is not down.
      _log.exception('image of product %s unreadable', product_id)
      metrics.errors.labels('damaged_artefact').inc()
      return _error(404, f'the image of product {product_id} cannot be read')
    if data is None:
      return _error(404, f'no image for product {product_id}')
    return Response(data, media_type=_image_type(data), headers={'Cache-Control': 'max-age=86400'})

  @app.get('/')
  def page() -> FileResponse:
    return FileResponse(STATIC_DIR / 'index.html')

  @app.get('/favicon.ico')
  def favicon() -> FileResponse:
    return FileResponse(STATIC_DIR / 'favicon.svg', media_type='image/svg+xml')

  app.mount('/static', StaticFiles(directory=STATIC_DIR), name='static')
  return app
