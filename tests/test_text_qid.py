"""qid (SPEC 2 step 4): order-free, separating, and stable across processes."""

import hashlib
import os
import subprocess
import sys

from make_jax.text import EMPTY_QID, qid_of_words
from make_jax.text import normalize as normalize_lib
from make_jax.text import segment as segment_lib

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _qid(text):
  return qid_of_words(segment_lib.segment(normalize_lib.normalize(text)))


def test_golden_values():
  # Computed once with the documented definition (blake2b-32 of NUL-joined sorted words);
  # a change here invalidates every stored qid -> products table.
  assert EMPTY_QID == 0x1271CF25
  assert _qid('') == EMPTY_QID
  assert _qid('red dress') == 2690022091
  assert _qid('红色 连衣裙') == 3080068630
  assert _qid('iPhone15 手机壳 128GB') == 932008874


def test_matches_documented_formula():
  words = ['红色', 'red', '128gb', 'a']
  data = b'\x00'.join(w.encode('utf-8') for w in sorted(words))
  expected = int.from_bytes(hashlib.blake2b(data, digest_size=4).digest(), 'big')
  assert qid_of_words(words) == expected
  assert 0 <= expected < 2**32


def test_word_order_is_irrelevant():
  assert _qid('red dress') == _qid('dress red') == _qid('DRESS, red!')
  assert _qid('红色 连衣裙') == _qid('连衣裙 红色') == _qid('连衣裙红色') == _qid('红色连衣裙')


def test_segmentation_dependent_cases():
  # A space is always a word boundary; without it jieba decides. `牛仔裤` is one word,
  # `牛仔 裤` two, so they differ; `和服装` is cut `和`+`服装`, unlike `和服 装`.
  assert _qid('牛仔 裤') == _qid('裤 牛仔')
  assert _qid('牛仔裤') != _qid('牛仔 裤')
  assert _qid('和服装') == _qid('和 服装') != _qid('和服 装')


def test_different_queries_stay_apart():
  qids = {
    _qid(t)
    for t in ['red dress', 'red shoes', 'red red dress', 'reddress', 'red-dress', 'dress', '']
  }
  assert len(qids) == 7
  assert qid_of_words(['ab']) != qid_of_words(['a', 'b'])


def test_stable_across_processes_and_hash_seeds():
  texts = ['', 'red dress', '红色 连衣裙', 'iPhone15 手机壳 128GB', 'Ｔ恤 男 2024新款 😀']
  expected = [str(_qid(t)) for t in texts]
  code = (
    'import sys\n'
    'from make_jax.text import normalize, segment, qid\n'
    'for t in sys.argv[1:]:\n'
    '  print(qid.qid_of_words(segment.segment(normalize.normalize(t))))\n'
  )
  for seed in ('0', '4242'):
    env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=_ROOT)
    out = subprocess.run(
      [sys.executable, '-c', code, *texts],
      env=env,
      cwd=_ROOT,
      capture_output=True,
      text=True,
      check=True,
      timeout=120,
    )
    assert out.stdout.split('\n')[: len(texts)] == expected, out.stderr
