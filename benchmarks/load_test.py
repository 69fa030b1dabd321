r"""Load test of the search server: concurrent clients on loopback, table hits and fallbacks.

Run from the repository root (prints figures, asserts nothing):
  python -m benchmarks.load_test --config=configs/tiny.py [--duration_s=60] [--clients=8]

What runs:
* The server, in a process of its own (so the clients' Python does not share its GIL):
  `service.demo_searcher` (the config's catalogue, a randomly initialised model, product
  embeddings computed at start) behind `server.create_app` on uvicorn, 127.0.0.1 only.
* Its qid table is a `DictTable` computed at start: for each real Taobao query of
  `dev.query.txt` (multi-cpr-ecom, beside the project in ../shared/data) the unfiltered
  top `--table_k` of the online path, keyed by the query's qid, as the offline job keys
  its table. So table lookups and their filtering are real; the table is not the
  memory-mapped shards of `tools.build_query_table`, and its answers come from the same
  random model as the online path.
* With `--workdir=W` (a trained run with its export, index and query table built, e.g. by
  `tools.build_query_table --workdir=W --queries=<multi-cpr-ecom>/dev.query.txt
  --query_column=1 --count_column=-1`), the server is `tools.serve --workdir`'s searcher
  instead: the run's newest checkpoint, its ScaNN index and its memory-mapped table; the
  `table` mix is the dev queries the table holds.
* Query mixes, one after the other, each for `--duration_s` after a short warm-up:
  `table` (the dev queries: every one a table hit) and `online` (real queries of
  `train.query.txt` whose qid is not in the table: every one encoded by the model);
  before them `healthz` (GET /healthz, no search): the floor that HTTP, the framework and
  the client add, on this machine, at that moment.
* `--clients` aiohttp clients, each sending its next query as soon as its last answer
  came (closed loop), over keep-alive connections.

Reported per mix: requests, errors (non-200 or failed requests; 5xx counted apart),
throughput, latency p50/p90/p99/max at the client, the searcher's own
`latency_ms.total` and the handler's `latency_ms.server`, and which path answered.
Clients and server share the machine's cores: client-side figures include that.
"""

import asyncio
import collections
import json
import multiprocessing
import pathlib
import queue
import socket
import time

import aiohttp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/tiny.py', 'Model and data config.')
_NUM_PRODUCTS = flags.DEFINE_integer('num_products', 2000, 'Catalogue rows served (0: all).')
_DURATION = flags.DEFINE_float('duration_s', 60.0, 'Seconds of load per mix.')
_WARMUP = flags.DEFINE_float('warmup_s', 3.0, 'Seconds of unrecorded load before each mix.')
_CLIENTS = flags.DEFINE_list('clients', ['1', '8'], 'Concurrent clients (closed loop), each run.')
_K = flags.DEFINE_integer('k', 10, 'Results per query.')
_TABLE_K = flags.DEFINE_integer('table_k', 100, 'Products per table entry.')
_QUERIES_DIR = flags.DEFINE_string(
  'queries_dir',
  '../shared/data/multi-cpr-ecom',
  'Folder of dev.query.txt (table queries) and train.query.txt (online queries); relative to '
  "the working directory, like the configs' data.manual_dir.",
)
_NUM_TABLE = flags.DEFINE_integer('table_queries', 1000, 'Dev queries put in the table.')
_NUM_ONLINE = flags.DEFINE_integer('online_queries', 5000, 'Train queries tried online.')
_WORKDIR = flags.DEFINE_string(
  'workdir', '', "A trained run's workdir to serve (export, index, table; see above)."
)
_MIXES = flags.DEFINE_list(
  'mixes', ['healthz', 'table', 'online'], 'Mixes to run, in order (healthz: the HTTP floor).'
)
_MAX_BATCH = flags.DEFINE_integer('max_batch', 8, 'Encoder: most queries per model call.')
_MAX_WAIT_MS = flags.DEFINE_float('max_wait_ms', 2.0, 'Encoder: wait for a batch to fill.')
_START_TIMEOUT = flags.DEFINE_float('start_timeout_s', 1800.0, 'Longest wait for the server.')
_URL = flags.DEFINE_string(
  'url',
  '',
  'Load a server that is already running at this base URL (e.g. http://host:8000) instead '
  'of starting one: the table mix sends the dev queries, the online mix the train queries, '
  'and the path that answered each is reported.',
)


def read_queries(path: pathlib.Path, limit: int) -> list[str]:
  """The first `limit` distinct non-empty queries of a `qid<TAB>query` file."""
  seen: dict[str, None] = {}
  with open(path, encoding='utf-8') as f:
    for line in f:
      text = line.rstrip('\n').split('\t', 1)[-1].strip()
      if text:
        seen.setdefault(text, None)
      if len(seen) >= limit:
        break
  return list(seen)


def _serve(config, num_products, table_queries, online_queries, table_k, enc_kwargs, reply):
  """Server process: builds the searcher and its table, reports, then serves until SIGTERM."""
  import uvicorn

  from make_jax.serving import server, service

  start = time.perf_counter()
  workdir = enc_kwargs.pop('workdir', '')
  if workdir:
    from make_jax import rundir

    params, step = rundir.latest_params(workdir)
    searcher = service.searcher_from_workdir(workdir, params=params, step=step, **enc_kwargs)
    built = time.perf_counter() - start
    if searcher.table is None:
      raise ValueError(f'{workdir} has no query table: build it (see the module docstring)')
    hits = lambda q: searcher.table.lookup(searcher.preprocessor.words(q)) is not None
    entries = dict.fromkeys(q for q in table_queries if hits(q))
    table_queries[:] = list(entries)
    online = [q for q in online_queries if not hits(q)]
  else:
    searcher, entries, online, built = _demo(
      config, num_products, table_queries, online_queries, table_k, enc_kwargs, start
    )
  sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
  sock.bind(('127.0.0.1', 0))
  reply.put(
    {
      'port': sock.getsockname()[1],
      'table': table_queries,
      'online': online,
      'table_entries': len(entries),
      'products': len(searcher.catalogue),
      'build_s': built,
      'setup_s': time.perf_counter() - start,
    }
  )
  app_ = server.create_app(searcher)
  uvicorn.Server(uvicorn.Config(app_, log_level='warning', access_log=False, lifespan='off')).run(
    sockets=[sock]
  )


def _demo(config, num_products, table_queries, online_queries, table_k, enc_kwargs, start):
  """(demo searcher with a DictTable of the table queries, entries, online queries, build s)."""
  from make_jax.serving import search, service, table

  demo = service.demo_searcher(config, num_products, **enc_kwargs)
  built = time.perf_counter() - start
  answers = demo.search_batch(table_queries, table_k, use_filters=False)
  entries = {}
  for q, a in zip(table_queries, answers, strict=True):
    ids = np.array([r.product_id for r in a.results], np.int64)
    entries[demo.preprocessor.qid(q)] = (ids, np.array([r.score for r in a.results], np.float32))
  searcher = search.Searcher(
    demo.catalogue,
    demo.preprocessor,
    demo.filtered,
    demo.relevance,
    encoder=demo.encoder,
    table=table.DictTable(entries),
    modal_weights=demo.modal_weights,
  )
  online = [q for q in online_queries if demo.preprocessor.qid(q) not in entries]
  return searcher, entries, online, built


async def _client(session, url, queries, first, step, k, stop_at, out, errors):
  i = first
  while time.perf_counter() < stop_at:
    q = queries[i % len(queries)]
    i += step
    t0 = time.perf_counter()
    params = None if url.endswith('/healthz') else {'q': q, 'k': str(k)}
    try:
      async with session.get(url, params=params) as r:
        body, status = await r.read(), r.status
    except (TimeoutError, aiohttp.ClientError) as e:
      errors[f'request failed: {type(e).__name__}'] += 1
      continue
    elapsed_ms = 1e3 * (time.perf_counter() - t0)
    if status != 200:
      errors[f'HTTP {status}'] += 1
      if status >= 500:
        errors['5xx'] += 1
      continue
    if params is None:  # The floor: a request that does no search.
      out.append(('healthz', elapsed_ms, np.nan, np.nan))
      continue
    a = json.loads(body)
    out.append((a['path'], elapsed_ms, a['latency_ms']['total'], a['latency_ms']['server']))


async def _load(base, queries, clients, k, seconds, endpoint='/search'):
  """Records (path, client ms, searcher ms, handler ms) of each answer, and error counts."""
  out: list = []
  errors: collections.Counter = collections.Counter()
  timeout = aiohttp.ClientTimeout(total=30)
  connector = aiohttp.TCPConnector(limit=clients)
  async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
    stop_at = time.perf_counter() + seconds
    await asyncio.gather(
      *(
        _client(session, base + endpoint, queries, c, clients, k, stop_at, out, errors)
        for c in range(clients)
      )
    )
  return out, errors


def _percentiles(values) -> str:
  if len(values) == 0:
    return 'n/a'
  p50, p90, p99 = np.percentile(values, [50, 90, 99])
  return f'{p50:7.2f} {p90:7.2f} {p99:7.2f} {np.max(values):8.2f}'


def report(mix: str, records: list, errors: collections.Counter, seconds: float) -> None:
  """Prints one mix's figures (ms), overall and per answering path."""
  paths = collections.Counter(r[0] for r in records)
  n = len(records) + sum(v for key, v in errors.items() if key != '5xx')
  print(
    f'\nmix {mix}: {n} requests in {seconds:.1f} s = {n / seconds:.1f} req/s; '
    f'errors {sum(v for key, v in errors.items() if key != "5xx")} {dict(errors) or ""}; '
    f'answered by {dict(paths)}'
  )
  print(f'  {"latency ms":<26} {"p50":>7} {"p90":>7} {"p99":>7} {"max":>8}')
  for path in sorted(paths):
    rows = np.array([r[1:] for r in records if r[0] == path], np.float64)
    print(f'  {path + " client":<26} {_percentiles(rows[:, 0])}')
    if path != 'healthz':
      print(f'  {path + " server total":<26} {_percentiles(rows[:, 1])}')
      print(f'  {path + " server handler":<26} {_percentiles(rows[:, 2])}')


def _server_errors(base: str) -> str:
  """The server's own count of 5xx answers and internal errors, from /metrics."""

  async def fetch():
    async with aiohttp.ClientSession() as s, s.get(base + '/metrics') as r:
      return await r.text()

  lines = asyncio.run(fetch()).splitlines()
  bad = [
    line
    for line in lines
    if (line.startswith('make_requests_total{') and 'status="5' in line)
    or line.startswith('make_errors_total{kind="internal"}')
  ]
  return '; '.join(bad) or 'none'


def _wait_for_server(proc, reply, timeout_s: float) -> dict:
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    try:
      return reply.get(timeout=1.0)
    except queue.Empty:
      if not proc.is_alive():
        raise RuntimeError(f'server process exited with {proc.exitcode} before serving') from None
  raise TimeoutError(f'server not ready after {timeout_s:.0f} s')


def _wait_for_health(base: str, proc, timeout_s: float) -> None:
  async def ok() -> bool:
    try:
      async with aiohttp.ClientSession() as s, s.get(base + '/healthz') as r:
        return r.status == 200
    except aiohttp.ClientError:
      return False

  deadline = time.monotonic() + timeout_s
  while not asyncio.run(ok()):
    if not proc.is_alive() or time.monotonic() > deadline:
      raise RuntimeError(f'server at {base} never answered /healthz')
    time.sleep(0.2)


def _run_mixes(base: str, mixes: dict[str, list[str]]) -> None:
  """Every mix for each client count, then the server's own error count."""
  print(f'load: k={_K.value}, {_DURATION.value:.0f} s per mix after {_WARMUP.value:.0f} s warm-up')
  for clients in (int(c) for c in _CLIENTS.value):
    for mix in _MIXES.value:
      if not mixes[mix]:
        print(f'\nmix {mix}: skipped, no query of the sample belongs to it')
        continue
      endpoint = '/healthz' if mix == 'healthz' else '/search'
      warm = _load(base, mixes[mix], clients, _K.value, _WARMUP.value, endpoint)
      _, warm_errors = asyncio.run(warm)
      if warm_errors:
        print(f'mix {mix}: errors during warm-up: {dict(warm_errors)}')
      start = time.perf_counter()
      load = _load(base, mixes[mix], clients, _K.value, _DURATION.value, endpoint)
      records, errors = asyncio.run(load)
      report(f'{mix}, {clients} clients', records, errors, time.perf_counter() - start)
  print(f'\nserver-side 5xx / internal errors: {_server_errors(base)}')


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = _CONFIG.value
  queries_dir = pathlib.Path(_QUERIES_DIR.value)
  if not (queries_dir / 'dev.query.txt').is_file():
    raise app.UsageError(
      f'{queries_dir}/dev.query.txt not found: point --queries_dir at multi-cpr-ecom'
    )
  if unknown := set(_MIXES.value) - {'healthz', 'table', 'online'}:
    raise app.UsageError(f'unknown mixes {sorted(unknown)}: give healthz, table, online')
  table_queries = read_queries(queries_dir / 'dev.query.txt', _NUM_TABLE.value)
  online_queries = read_queries(queries_dir / 'train.query.txt', _NUM_ONLINE.value)
  if _URL.value:
    base = _URL.value.rstrip('/')
    print(
      f'server: {base} (already running); {len(table_queries)} dev, '
      f'{len(online_queries)} train queries'
    )
    _run_mixes(base, {'healthz': [''], 'table': table_queries, 'online': online_queries})
    return
  ctx = multiprocessing.get_context('spawn')
  reply = ctx.Queue()
  enc_kwargs = dict(
    max_batch=_MAX_BATCH.value, max_wait_ms=_MAX_WAIT_MS.value, workdir=_WORKDIR.value
  )
  args = (config, _NUM_PRODUCTS.value or None, table_queries, online_queries, _TABLE_K.value)
  proc = ctx.Process(target=_serve, args=(*args, enc_kwargs, reply), daemon=True)
  proc.start()
  try:
    info = _wait_for_server(proc, reply, _START_TIMEOUT.value)
    base = f'http://127.0.0.1:{info["port"]}'
    print(
      f'server: {info["products"]} products, model {config.model.hidden_size} wide x '
      f'{config.model.num_layers} layers, query_len {config.text.query_len}; '
      f'{"workdir " + _WORKDIR.value if _WORKDIR.value else "demo"} searcher built in {info["build_s"]:.1f} s, table of {info["table_entries"]} real queries in '
      f'{info["setup_s"] - info["build_s"]:.1f} s; {len(info["online"])} online queries'
    )
    _wait_for_health(base, proc, _START_TIMEOUT.value)
    _run_mixes(base, {'healthz': [''], 'table': info['table'], 'online': info['online']})
  finally:
    proc.terminate()
    proc.join(timeout=30)
    if proc.is_alive():
      proc.kill()
      proc.join()


if __name__ == '__main__':
  app.run(main)
