"""Normalisation and segmentation (SPEC 2 steps 1-2): the defined result for bad input."""

import pytest

from make_jax.text import normalize as normalize_lib
from make_jax.text import segment as segment_lib


def _words(text):
  return segment_lib.segment(normalize_lib.normalize(text))


@pytest.mark.parametrize(
  'raw, expected',
  [
    ('', ''),
    ('   \t\n  ', ''),
    ('  Red   DRESS ', 'red dress'),
    ('red\tdress\r\nsale', 'red dress sale'),  # Whitespace controls split words.
    ('red\x00dr\x07ess', 'reddress'),  # Other controls are dropped.
    ('zero\u200bwidth\ufeff', 'zerowidth'),  # Format characters are dropped.
    ('ＩＰＨＯＮＥ１５，　手机壳！', 'iphone15, 手机壳!'),  # Full width -> ASCII (NFKC).
    ('ﬁne ①', 'fine 1'),  # Compatibility characters unfold.
    (b'red \xff\xfedress', 'red dress'),  # Invalid UTF-8 bytes are dropped.
    ('红色\u3000连衣裙', '红色 连衣裙'),  # Ideographic space.
    ('new\u2028line\xa0nbsp', 'new line nbsp'),
  ],
)
def test_normalize_policy(raw, expected):
  assert normalize_lib.normalize(raw) == expected


def test_normalize_is_idempotent():
  for text in ['İstanbul ÀÉ', 'Straße ǅ', 'ＡＢＣ１２３', '红色\tＴ恤 😀', b'\xc3\x28ok']:
    once = normalize_lib.normalize(text)
    assert normalize_lib.normalize(once) == once


def test_normalize_rejects_non_text():
  with pytest.raises(TypeError, match='str or bytes'):
    normalize_lib.normalize(12)


@pytest.mark.parametrize(
  'text, expected',
  [
    ('iPhone15 128GB', ['iphone15', '128gb']),  # Letter/digit runs are one word.
    ("T-shirt 2.5mm men's wi-fi", ['t-shirt', '2.5mm', "men's", 'wi-fi']),  # Connectors.
    ('end. -dash- a--b', ['end', 'dash', 'a', 'b']),  # Dangling/doubled connectors split.
    ('iphone15手机壳', ['iphone15', '手机', '壳']),  # Script boundary splits mixed runs.
    ('2024新款T恤', ['2024', '新款', 't', '恤']),
    ('连衣裙😀红色🍑', ['连衣裙', '红色']),  # Emoji are dropped (and split words).
    ('❤️💄', []),  # Emoji only: no words.
    ('【包邮】（正品）', ['包邮', '正品']),  # CJK punctuation dropped.
    ('snake_case #tag @x', ['snake', 'case', 'tag', 'x']),
    ('', []),
    ('...!!!', []),
    ('платье красное', ['платье', 'красное']),  # Other alphabets: letter runs.
  ],
)
def test_segment_rules(text, expected):
  assert _words(text) == expected


def test_segment_never_yields_empty_or_spaced_words():
  text = '中文ＡＢＣ 𠀀𠀁 \u9fd6\u9fd7 한국어 ｶﾀｶﾅ 🙂 a_b-c.d e' * 3
  words = _words(text)
  assert words
  assert all(w and not any(ch.isspace() for ch in w) for w in words)


def test_long_cjk_and_latin_runs_segment_fast_enough_and_completely():
  title = ('红色连衣裙夏季新款' * 1000)[:9000] + ' abc' * 250
  words = _words(title)
  # Every non-space character survives into exactly one word, in order.
  assert ''.join(words) == normalize_lib.normalize(title).replace(' ', '')
