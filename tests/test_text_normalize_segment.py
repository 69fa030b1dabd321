"""Normalisation and segmentation (SPEC 2 steps 1-2): the defined result for bad input,
and words that segment back to themselves."""

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
    ('red\x00dr\x07ess', 'red dr ess'),  # Other controls separate words too.
    ('zero\u200bwidth\ufeff', 'zero width'),  # So do zero-width spaces and the BOM.
    ('red\u202edress\ue000x', 'red dress x'),  # Bidi controls, private use.
    ('dre\u00adss wo\u200dman', 'dress woman'),  # Soft hyphen, joiners: inside a word.
    ('e\u200d\u0301', '\u00e9'),  # A dropped joiner lets NFKC compose.
    ('❤\ufe0f', '❤'),  # Variation selectors are dropped.
    ('ＩＰＨＯＮＥ１５，　手机壳！', 'iphone15, 手机壳!'),  # Full width -> ASCII (NFKC).
    ('ﬁne ①', 'fine 1'),  # Compatibility characters unfold.
    (b'red \xff\xfedress', 'red dress'),  # Invalid UTF-8 bytes separate words.
    (b'dr\xffess', 'dr ess'),
    ('红色\u3000连衣裙', '红色 连衣裙'),  # Ideographic space.
    ('new\u2028line\xa0nbsp', 'new line nbsp'),
  ],
)
def test_normalize_policy(raw, expected):
  assert normalize_lib.normalize(raw) == expected


def test_normalize_is_idempotent():
  texts = ['İstanbul ÀÉ', 'Straße ǅ', 'ＡＢＣ１２３', '红色\tＴ恤 😀', b'\xc3\x28ok']
  texts += ['e\u200b\u0301', 'a\u00ad\u0308', '\u0301x', 'ลาย\u200dไทย', 'क\u200d\u094dष']
  for text in texts:
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
    ('ชุดเดรสสีแดง', ['ชุดเดรสสีแดง']),  # Thai: combining vowels stay in the word.
    ('लाल पोशाक', ['लाल', 'पोशाक']),  # Devanagari: vowel signs stay in the word.
    ('naïve cafe\u0301 q\u0303x', ['naïve', 'café', 'q\u0303x']),  # Marks NFKC keeps.
    ('\u0301a 红\u0301色 -\u0301b', ['a', '红', '色', 'b']),  # Marks after no letter.
    ('1\ufe0f\u20e3 ok', ['1', 'ok']),  # Keycap: the enclosing mark is a symbol.
    ('red\x00dress', ['red', 'dress']),
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


def test_unstable_hmm_words_are_split_the_same_in_and_out_of_context():
  # jieba's HMM guesses `小众` in context but cuts it `小`, `众` alone; both now agree.
  in_context = _words('eva日系小众精品')
  assert in_context == ['eva', '日系', '小', '众', '精品']
  assert _words('小众') == ['小', '众']
  assert _words('ipad钢化膜黑边')[-2:] == ['黑', '边']


def test_restated_jieba_cut_equals_jieba():
  runs = [
    '小众连衣裙',
    '蹲便器皮塞',
    '秋之月钓箱出水堵',
    '\u9fd6中文\u3400𠀀文',
    '中',
    '起个大早听鸟叫',
  ]
  for run in runs:
    assert [w for w, _ in segment_lib._jieba_words(run)] == list(segment_lib._jieba().cut(run))


@pytest.mark.parametrize(
  'text',
  [
    'eva日系小众精品',
    'ชุดเดรสสีแดง ลาย',
    'iPhone15手机壳 T-shirt 2.5mm',
    '秋之月钓箱出水堵',
    'a\x00b',
  ],
)
def test_words_rejoined_in_any_order_segment_back(text):
  words = _words(text)
  assert words
  for order in (words, words[::-1], sorted(words), words[1:] + words[:1]):
    assert sorted(_words(' '.join(order))) == sorted(words)
  assert all(_words(w) == [w] for w in words)
