"""The HTTP server, started for real (uvicorn on a free loopback port, in a thread).

Every bad input gets its 4xx with a message and never a 500; a good query gets JSON with
product id, title, score, modal weights, whether each product satisfies the filter,
filters, relevance mode, path and latency; /healthz, /metrics and the page answer. The searcher is real (synthetic catalogue, exact index, dict table);
its query encoder is a small hashed bag of words, so no model is compiled here.
"""

import hashlib
import http.client
import json
import socket
import threading
import time
import urllib.parse

import numpy as np
import pytest
import uvicorn

from make_jax.datasets import synthetic
from make_jax.retrieval import catalogue as catalogue_lib
from make_jax.serving import ann, batch, filters, search, server
from make_jax.serving import query_understanding as qu
from make_jax.serving import table as table_lib
from make_jax.text.preprocess import TextPreprocessor

DIM = 16


class HashingEncoder:
  """Sum of per-word pseudo-random unit vectors (seeded by the word), L2-normalised."""

  def encode(self, query) -> np.ndarray:
    text = query if isinstance(query, str) else query.text  # Text or preprocess.Query.
    v = np.zeros(DIM, np.float32)
    for w in qu.words_of(text) or ['']:
      seed = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), 'little')
      v += np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)

  def encode_now(self, texts):
    return np.stack([self.encode(t) for t in texts])


@pytest.fixture(scope='module')
def searcher():
  cat = synthetic.generate(synthetic.SyntheticSpec(num_products=300, num_pairs=300))
  catalogue = catalogue_lib.from_synthetic(cat)
  pre = TextPreprocessor.from_corpus(catalogue.titles, 300)
  rng = np.random.default_rng(0)
  emb = rng.standard_normal((len(catalogue), DIM)).astype(np.float32)
  emb /= np.linalg.norm(emb, axis=1, keepdims=True)
  relevance = filters.RelevanceControl.of_catalogue(catalogue)
  table = table_lib.DictTable({pre.qid('cached query'): (np.arange(20), np.linspace(1, 0, 20))})
  return search.Searcher(
    catalogue,
    pre,
    filters.FilteredSearch(ann.ExactIndex(emb), emb, relevance.inverted),
    relevance,
    encoder=HashingEncoder(),
    table=table,
    modal_weights=rng.dirichlet([1, 1], len(catalogue)).astype(np.float32),
  )


def serve(searcher):
  """Runs the real server over `searcher` on a free loopback port; yields the port."""
  sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
  sock.bind(('127.0.0.1', 0))
  port = sock.getsockname()[1]
  config = uvicorn.Config(
    server.create_app(searcher),
    log_level='warning',
    lifespan='off',
    h11_max_incomplete_event_size=server.H11_MAX_BYTES,  # As tools.serve runs it.
  )
  srv = uvicorn.Server(config)
  thread = threading.Thread(target=srv.run, kwargs={'sockets': [sock]}, daemon=True)
  thread.start()
  deadline = time.monotonic() + 30
  while not srv.started:
    assert time.monotonic() < deadline, 'server did not start'
    time.sleep(0.05)
  yield port
  srv.should_exit = True
  thread.join(timeout=10)
  sock.close()


@pytest.fixture(scope='module')
def service(searcher):
  for port in serve(searcher):
    yield port, searcher.catalogue


def get(port, target, method='GET'):
  conn = http.client.HTTPConnection('127.0.0.1', port, timeout=30)
  conn.request(method, target)
  r = conn.getresponse()
  body = r.read()
  conn.close()
  return r.status, r.getheader('content-type', ''), body


def _raw_get(port, target: bytes):
  """A GET with a request target of arbitrary bytes (http.client refuses non-ASCII)."""
  with socket.create_connection(('127.0.0.1', port), timeout=30) as s:
    s.sendall(b'GET ' + target + b' HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
    data = b''
    while chunk := s.recv(65536):
      data += chunk
  return int(data.split(b' ', 2)[1]), data.split(b'\r\n\r\n', 1)[1]


BAD = {
  'missing q': ('/search', 'missing'),
  'missing q, other params': ('/search?k=5&x=1', 'missing'),
  'empty q': ('/search?q=', 'empty'),
  'whitespace q': ('/search?q=+++%20', 'whitespace'),
  'k not an integer': ('/search?q=shirt&k=abc', "'k'"),
  'k a float': ('/search?q=shirt&k=1.5', "'k'"),
  'k negative': ('/search?q=shirt&k=-3', "'k'"),
  'k zero': ('/search?q=shirt&k=0', "'k'"),
  'k too large': ('/search?q=shirt&k=101', "'k'"),
  'k huge': ('/search?q=shirt&k=' + '9' * 5000, "'k'"),
  'k empty': ('/search?q=shirt&k=', "'k'"),
  'k twice': ('/search?q=shirt&k=1&k=2', 'times'),
  'q twice': ('/search?q=a&q=b', 'times'),
  'q too long': ('/search?q=' + 'a' * 257, 'limit'),
  'invalid utf-8': ('/search?q=%FF%FEshirt', 'UTF-8'),
  'truncated utf-8': ('/search?q=%E4%BD', 'UTF-8'),
  'invalid utf-8 in a name': ('/search?q=shirt&%FF=1', 'UTF-8'),
  'NUL': ('/search?q=a%00b', 'control'),
  'escape': ('/search?q=a%1Bb', 'control'),
  'newline': ('/search?q=red%0Ashirt', 'control'),
  'tab': ('/search?q=red%09shirt', 'control'),
  'DEL': ('/search?q=a%7F', 'control'),
  'C1 control': ('/search?q=a%C2%85b', 'control'),
  'unknown relevance_mode': ('/search?q=shirt&relevance_mode=loose', 'backfill, strict'),
  'empty relevance_mode': ('/search?q=shirt&relevance_mode=', 'relevance_mode'),
  'relevance_mode twice': ('/search?q=shirt&relevance_mode=strict&relevance_mode=strict', 'times'),
}


@pytest.mark.parametrize('case', sorted(BAD))
def test_bad_input_is_a_400_with_a_message(service, case):
  port, _ = service
  target, words = BAD[case]
  status, ctype, body = get(port, target)
  assert status == 400, (case, status, body[:200])
  assert 'application/json' in ctype
  assert words in json.loads(body)['error']


def test_raw_bytes_and_huge_queries_are_4xx(service):
  port, _ = service
  status, _ = _raw_get(port, b'/search?q=\xff\xfe')
  assert status == 400
  status, _, _ = get(port, '/search?q=' + 'a' * 20_000)
  assert 400 <= status < 500
  assert get(port, '/search?q=shirt', method='POST')[0] == 405
  assert get(port, '/image/abc')[0] == 400
  assert get(port, '/image/99999999')[0] == 404
  assert get(port, '/nowhere')[0] == 404


def test_good_query_answers_json(service):
  port, catalogue = service
  brand = catalogue.attributes['brand'][0]
  status, ctype, body = get(port, f'/search?q={brand}+shirts&k=7&relevance_mode=strict&unknown=1')
  assert status == 200 and 'application/json' in ctype
  answer = json.loads(body)
  assert answer['path'] == 'online' and answer['k'] == 7
  assert answer['relevance_mode'] == 'strict'
  assert answer['filters'] == {'brand': [brand], 'category': ['shirt']}
  assert answer['latency_ms']['server'] >= answer['latency_ms']['total'] > 0
  assert 0 < len(answer['results']) <= 7
  for r in answer['results']:
    assert set(r) >= {'product_id', 'title', 'score', 'title_weight', 'image_weight', 'image_url'}
    assert r['satisfies_filter'] is True
    assert catalogue.attributes['brand'][r['product_id']] == brand
    assert catalogue.attributes['category'][r['product_id']] == 'shirt'
    assert r['title'] == catalogue.titles[r['product_id']]
  scores = [r['score'] for r in answer['results']]
  assert scores == sorted(scores, reverse=True)
  # Unicode queries are fine (words outside the vocabulary are [UNK]); k defaults to 10.
  status, _, body = get(port, '/search?q=%E7%BA%A2%E8%89%B2+%F0%9F%91%97+shirt')
  assert status == 200 and len(json.loads(body)['results']) == 10


def test_backfill_answers_k_products_and_marks_those_outside_the_filter(service):
  """The default mode: the strict answer first, then other products, each one marked."""
  port, catalogue = service
  brand = catalogue.attributes['brand'][0]
  strict = json.loads(get(port, f'/search?q={brand}+shirts&k=7&relevance_mode=strict')[2])
  status, _, body = get(port, f'/search?q={brand}+shirts&k=7')
  answer = json.loads(body)
  assert status == 200 and answer['relevance_mode'] == 'backfill'
  assert answer['filters'] == strict['filters'] == {'brand': [brand], 'category': ['shirt']}
  ids = [r['product_id'] for r in answer['results']]
  m = len(strict['results'])
  assert len(ids) == 7 == len(set(ids)) and m < 7
  assert ids[:m] == [r['product_id'] for r in strict['results']]
  for r in answer['results']:
    ok = (
      catalogue.attributes['brand'][r['product_id']],
      catalogue.attributes['category'][r['product_id']],
    ) == (brand, 'shirt')
    assert r['satisfies_filter'] is ok
  assert [r['satisfies_filter'] for r in answer['results']] == [True] * m + [False] * (7 - m)
  assert json.loads(get(port, '/healthz')[2])['relevance_mode'] == 'backfill'


def test_table_hit_says_its_path(service):
  port, _ = service
  status, _, body = get(port, '/search?q=query+cached&k=5')
  answer = json.loads(body)
  assert status == 200 and answer['path'] == 'table'
  assert [r['product_id'] for r in answer['results']] == [0, 1, 2, 3, 4]


def test_image_healthz_page_and_metrics(service):
  port, catalogue = service
  status, ctype, body = get(port, f'/image/{int(catalogue.ids[3])}')
  assert status == 200 and ctype == 'image/png' and body.startswith(b'\x89PNG')
  status, _, body = get(port, '/healthz')
  assert status == 200 and json.loads(body)['products'] == len(catalogue)
  status, ctype, body = get(port, '/')
  assert status == 200 and 'text/html' in ctype and b'search-form' in body
  for asset in ('app.js', 'style.css'):
    status, _, body = get(port, f'/static/{asset}')
    assert status == 200
    assert b'http://' not in body and b'https://' not in body  # No external assets.
  get(port, '/search?q=')
  get(port, '/search?q=query+cached')
  status, _, body = get(port, '/metrics')
  text = body.decode()
  assert status == 200
  assert 'make_requests_total{endpoint="/search",status="400"}' in text
  assert 'make_search_latency_seconds_bucket{le="0.001",path="table"}' in text
  assert 'make_errors_total{kind="bad_request"}' in text
  assert 'status="500"' not in text


def test_batch_cli_writes_one_line_per_input_line_with_the_servers_rules(searcher, tmp_path):
  """tools.search's library half: every input line gets its output line, in order and
  numbered; the lines the server would refuse get the server's reason instead of a search."""
  path = tmp_path / 'queries.txt'
  brand = searcher.catalogue.attributes['brand'][0].encode()
  path.write_bytes(
    b'cached query\n\n   \nbad \xff line\n%s shirts\nvintage\nred\x00shirt\n%s\n\U0001f600\n'
    % (brand, b'a' * 300)
  )
  entries, counts = batch.read_queries(str(path))
  assert counts == {'lines': 9, 'kept': 4, 'invalid_utf8': 1, 'rejected': 5}
  lines, paths = batch.search_lines(searcher, entries, 4, chunk=2)
  assert paths == {'table': 1, 'online': 2, 'none': 1, 'rejected': 5}
  records = [json.loads(line) for line in lines]
  assert [r['line'] for r in records] == list(range(1, 10))
  errors = {r['line']: r['error'] for r in records if 'error' in r}
  assert set(errors) == {2, 3, 4, 7, 8}
  assert 'empty' in errors[2] and 'whitespace' in errors[3] and 'UTF-8' in errors[4]
  assert 'control' in errors[7] and 'limit' in errors[8]
  emoji = records[8]
  assert emoji['path'] == 'none' and emoji['no_known_words'] and emoji['product_ids'] == []
  for record in (records[0], records[4], records[5]):
    want = searcher.search(record['query'], 4)
    assert record['product_ids'] == [r.product_id for r in want.results]
    assert record['scores'] == pytest.approx([r.score for r in want.results], abs=1e-5)
    assert record['filters'] == want.filters and record['path'] == want.path
    assert record['satisfies_filter'] == [r.satisfies_filter for r in want.results]
    assert record['relevance_mode'] == 'backfill'
  unfiltered, _ = batch.search_lines(searcher, entries[4:5], 4, use_filters=False)
  assert json.loads(unfiltered[0])['filters'] == {}


def test_a_query_with_no_known_word_gets_no_products(service):
  port, _ = service
  status, _, body = get(port, '/search?q=' + urllib.parse.quote('\U0001f600 \u2603'))
  answer = json.loads(body)
  assert status == 200 and answer['results'] == []
  assert answer['path'] == 'none' and answer['fallback_reason'] == 'no_known_words'
  status, _, body = get(port, '/search?q=' + urllib.parse.quote('!!!'))
  assert status == 200 and json.loads(body)['path'] == 'none'


def test_random_unicode_queries_never_get_a_500(service):
  """Any string is answered 200 or 400, never 500 (random code points of every plane)."""
  port, _ = service
  rng = np.random.default_rng(0)
  statuses = set()
  for _ in range(150):
    n = int(rng.integers(1, 40))
    cps = rng.integers(0, 0x30000, n)
    text = ''.join(chr(c) for c in cps if not 0xD800 <= c <= 0xDFFF)
    target = '/search?q=' + urllib.parse.quote(text, safe='') + f'&k={int(rng.integers(1, 30))}'
    status, _, body = get(port, target)
    assert status in (200, 400), (text, status, body[:200])
    statuses.add(status)
  assert statuses == {200, 400}


def test_long_urls_are_414_and_unknown_routes_use_the_error_shape(service):
  port, _ = service
  status, _, body = get(port, '/search?q=' + 'a' * 20_000)
  assert status == 414 and 'limit is 8192' in json.loads(body)['error']
  status, _, body = get(port, '/no/such/page')
  assert status == 404 and set(json.loads(body)) == {'error'}
  status, _, body = get(port, '/search', method='DELETE')
  assert status == 405 and set(json.loads(body)) == {'error'}
  status, ctype, body = get(port, '/favicon.ico')
  assert status == 200 and ctype.startswith('image/svg+xml') and body.startswith(b'<svg')


def test_an_unreadable_image_is_a_404_not_a_500(service, monkeypatch):
  port, catalogue = service

  def damaged(product_id):
    raise OSError(f'image store truncated at product {product_id}')

  monkeypatch.setattr(catalogue, 'image_loader', damaged)
  status, _, body = get(port, f'/image/{int(catalogue.ids[3])}')
  assert status == 404 and 'cannot be read' in json.loads(body)['error']
  text = get(port, '/metrics')[2].decode()
  assert 'make_errors_total{kind="damaged_artefact"} 1.0' in text
  assert 'status="500"' not in text
