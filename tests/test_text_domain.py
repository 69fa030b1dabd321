"""Domain dictionary: catalogue words stay one word, and the words stay stable with it."""

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from make_jax.text import TextPreprocessor, qid_of_words
from make_jax.text import domain as domain_lib
from make_jax.text import normalize as normalize_lib
from make_jax.text import segment as segment_lib

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_ENTRIES = [
  'Red Chief',
  'United Colors of Benetton',
  'U.S. Polo Assn.',
  'Tommy Hilfiger',
  '红隼',
  '西风',
  '格子',
  '方形',
  'T恤',
  'Red Chief',  # Duplicates and empty entries carry nothing.
  ' ',
  '!!',
]


@pytest.fixture(scope='module')
def seg():
  return segment_lib.Segmenter(_ENTRIES)


def _words(seg, text):
  return seg.segment(normalize_lib.normalize(text))


def test_entries_are_normalised_sorted_unique():
  entries = domain_lib.normalize_entries(_ENTRIES)
  assert entries == tuple(sorted(set(entries)))
  assert 'red chief' in entries and 'u.s. polo assn.' in entries and 't恤' in entries
  assert len(entries) == 9
  assert segment_lib.Segmenter(_ENTRIES[::-1]).domain_words == entries
  with pytest.raises(TypeError, match='not one string'):
    segment_lib.Segmenter('Red Chief')
  with pytest.raises(TypeError, match='entry 1 is int'):
    segment_lib.Segmenter(['red', 7])


@pytest.mark.parametrize(
  'text, expected',
  [
    ('Red Chief shoes', ['red chief', 'shoes']),  # Several words -> one, with its space.
    ('RED, chief!', ['red chief']),  # Whatever punctuation is between the parts.
    ('chief red', ['chief', 'red']),  # Not in the entry's order: not the entry.
    ('united colors of benetton tshirt', ['united colors of benetton', 'tshirt']),
    ('U.S. Polo Assn. Men', ['u.s polo assn', 'men']),
    ('红隼运动鞋', ['红隼', '运动鞋']),  # jieba alone: 红, 隼, 运动鞋.
    ('大红隼', ['大', '红隼']),  # jieba alone: 大红, 隼.
    ('西风格子衬衫', ['西风', '格子', '衬衫']),
    ('东西风格', ['东', '西风', '格']),  # The entry wins over jieba's 东西, 风格.
    ('长方形模具', ['长方形', '模具']),  # Inside one jieba word: not cut, left alone.
    ('t恤男', ['t 恤', '男']),  # A mixed-script entry is one word too.
    ('汤米tommy hilfiger男装', ['汤米', 'tommy hilfiger', '男装']),
  ],
)
def test_domain_words_stay_whole(seg, text, expected):
  assert _words(seg, text) == expected


def test_without_dictionary_they_are_cut():
  assert segment_lib.segment('red chief') == ['red', 'chief']
  assert segment_lib.segment('红隼运动鞋') == ['红', '隼', '运动鞋']


@pytest.mark.parametrize(
  'text',
  [
    'Red Chief shoes 红隼运动鞋',
    '大红隼 东西风格 t恤男',
    'tommy hilfiger eau de toilette',
    '小众西风',
  ],
)
def test_words_stay_stable_with_dictionary(seg, text):
  words = _words(seg, text)
  assert all(seg.segment(w) == [w] for w in words)  # Each word alone is itself...
  for order in (words, words[::-1], sorted(words)):  # ...so any order keeps the words.
    assert sorted(seg.segment(' '.join(order))) == sorted(words)


def test_reordering_can_only_join_an_entry(seg):
  # The documented exception: parts of an entry brought together by a new order join.
  words = _words(seg, 'chief and red')
  assert words == ['chief', 'and', 'red']
  assert seg.segment(' '.join(['red', 'chief', 'and'])) == ['red chief', 'and']


def test_preprocessor_with_domain_words():
  corpus = ['Red Chief Men Brown Casual Shoes', 'red chief shoes', '红隼 运动鞋 红色'] * 3
  pre = TextPreprocessor.from_corpus(corpus, 300, domain_words=_ENTRIES)
  plain = TextPreprocessor(pre.tokenizer)
  assert pre.domain_words == domain_lib.normalize_entries(_ENTRIES)
  assert plain.domain_words == ()
  assert pre.words('shoes Red Chief') == ['red chief', 'shoes']  # Sorted as one unit.
  assert pre.qid('shoes red chief') == qid_of_words(['red chief', 'shoes'])
  assert pre.qid('red chief') != plain.qid('red chief')
  reordered = TextPreprocessor(pre.tokenizer, domain_words=list(reversed(_ENTRIES)))
  assert reordered.qid('红隼运动鞋 red chief') == pre.qid('红隼运动鞋 red chief')
  # WordPiece: the entry's parts are pieces of ONE word, so they stay together and in order.
  ids, word_index = pre.tokenizer.tokenize_words(pre.words('shoes red chief'))
  assert [pre.tokenizer.id_to_token(i) for i in ids] == ['red', 'chief', 'shoes']
  assert word_index == [0, 0, 1]
  np.testing.assert_array_equal(pre.encode('Chief Red', 8)[0], plain.encode('chief red', 8)[0])
  # Keyword Enhancement: both pieces of the brand are flagged, in query and title.
  out = pre.encode_pair('red chief shoes', 'Red Chief Men Brown Casual Shoes', [], 8, 12)
  assert out['query_keyword'].tolist()[:5] == [0, 1, 1, 1, 0]
  clone = pickle.loads(pickle.dumps(pre))
  assert clone.domain_words == pre.domain_words
  assert clone.words('红隼运动鞋') == ['红隼', '运动鞋']


def test_qid_with_domain_words_is_stable_across_processes(seg):
  texts = ['Red Chief shoes', '红隼运动鞋', '东西风格 t恤']
  expected = [qid_of_words(_words(seg, t)) for t in texts]
  code = (
    'import json, sys\n'
    'from make_jax.text import normalize, segment, qid\n'
    'entries, texts = json.loads(sys.argv[1])\n'
    's = segment.Segmenter(entries)\n'
    'print(json.dumps([qid.qid_of_words(s.segment(normalize.normalize(t))) for t in texts]))\n'
  )
  env = dict(os.environ, PYTHONHASHSEED='123', PYTHONPATH=_ROOT)
  out = subprocess.run(
    [sys.executable, '-c', code, json.dumps([_ENTRIES, texts])],
    env=env,
    cwd=_ROOT,
    capture_output=True,
    text=True,
    check=True,
    timeout=120,
  )
  assert json.loads(out.stdout) == expected, out.stderr
