"""TextPreprocessor (contract 1): encoding layout, truncation, keywords, bad input."""

import pickle

import numpy as np
import pytest

from make_jax.text import EMPTY_QID, TextPreprocessor, VocabError

_CORPUS = [
  'Nike Men Red Running Shoes',
  'Red Dress for Women',
  'Blue T-shirt Cotton',
  '红色 连衣裙 夏季 新款',
  'iPhone15 手机壳 128GB',
  'red dress red shoes blue shirt cotton women men',
] * 3


@pytest.fixture(scope='module')
def pre():
  return TextPreprocessor.from_corpus(_CORPUS, 400)


def _row(pre, ids):
  """Checks the [CLS] pieces [SEP] [PAD]... layout and returns the pieces."""
  ids = list(ids)
  assert ids[0] == pre.cls_id
  end = ids.index(pre.sep_id)
  assert all(i == pre.pad_id for i in ids[end + 1 :])
  return ids[1:end]


def test_special_ids_of_learned_vocab(pre):
  assert (pre.pad_id, pre.unk_id, pre.cls_id, pre.sep_id, pre.mask_id) == (0, 1, 2, 3, 4)
  assert pre.vocab_size <= 400


def test_encode_layout_and_mask(pre):
  ids, mask = pre.encode('Red   DRESS', 8)
  assert ids.dtype == np.int32 and mask.dtype == np.int32 and ids.shape == (8,)
  pieces = _row(pre, ids)
  assert pre.decode(ids)[1:-1] == ['dress', 'red']  # Sorted words.
  assert mask.tolist() == [1] * (len(pieces) + 2) + [0] * (8 - len(pieces) - 2)


def test_word_order_gives_same_ids(pre):
  a, _ = pre.encode('red dress', 10)
  b, _ = pre.encode('Dress, RED!', 10)
  np.testing.assert_array_equal(a, b)
  unsorted = TextPreprocessor(pre.tokenizer, sort_words=False)
  assert unsorted.words('red dress') == ['red', 'dress']
  assert unsorted.qid('red dress') == pre.qid('dress red')  # qid is always of sorted words.


@pytest.mark.parametrize('max_len', [2, 3, 5, 7, 40])
def test_truncation_keeps_sep_last_and_equals_full_tokenization_cut(pre, max_len):
  text = 'Nike Men Red Running Shoes 红色 连衣裙 夏季 新款 cotton'
  ids, mask = pre.encode(text, max_len)
  full, _ = pre.tokenizer.tokenize_words(pre.words(text))  # Naive: every word tokenized.
  kept = full[: max_len - 2]
  assert ids.tolist()[: len(kept) + 2] == [pre.cls_id, *kept, pre.sep_id]
  assert int(mask.sum()) == len(kept) + 2


def test_max_len_too_small_or_not_int(pre):
  for bad in (1, 0, -3):
    with pytest.raises(ValueError, match='too small'):
      pre.encode('red', bad)
  with pytest.raises(ValueError, match='must be an int'):
    pre.encode('red', 8.0)
  with pytest.raises(ValueError, match='title_len'):
    pre.encode_pair('red', 'red dress', [], 8, 1)


def test_encode_batch_equals_encode(pre):
  texts = ['red dress', '', '红色连衣裙', b'blue \xffshirt', 'x' * 300, '😀']
  ids, mask = pre.encode_batch(texts, 9)
  assert ids.shape == mask.shape == (6, 9)
  for i, text in enumerate(texts):
    one_ids, one_mask = pre.encode(text, 9)
    np.testing.assert_array_equal(ids[i], one_ids)
    np.testing.assert_array_equal(mask[i], one_mask)
  by_words = pre.encode_words_batch([pre.words(t) for t in texts], 9)
  np.testing.assert_array_equal(by_words[0], ids)
  np.testing.assert_array_equal(by_words[1], mask)
  empty_ids, empty_mask = pre.encode_batch([], 9)
  assert empty_ids.shape == (0, 9)


@pytest.mark.parametrize('text', ['', '   \t\n ', '!!! ，。', '😀🍑❤️', '\x00\x07'])
def test_texts_without_words(pre, text):
  ids, mask = pre.encode(text, 5)
  assert ids.tolist() == [pre.cls_id, pre.sep_id, 0, 0, 0]
  assert mask.tolist() == [1, 1, 0, 0, 0]
  assert pre.words(text) == []
  assert pre.qid(text) == EMPTY_QID


def test_bad_input_has_defined_result(pre):
  assert pre.words(b'red \xc3\x28dress') == ['dress', 'red']  # Bad byte dropped, ( too.
  assert pre.words(b'red\xff dress') == ['dress', 'red']
  assert pre.words('Ｒｅｄ，ｄｒｅｓｓ！') == ['dress', 'red']
  assert pre.words('red\tdress\u200b\x1b') == ['dress', 'red']
  assert pre.words('red😀dress') == ['dress', 'red']


def test_ten_thousand_char_title(pre):
  title = ('Red Cotton Dress 红色连衣裙 ' * 500)[:10_000]
  ids, mask = pre.encode(title, 48)
  assert int(mask.sum()) == 48 and ids[47] == pre.sep_id
  q = pre.qid(title)
  assert q == pre.qid(title) and 0 <= q < 2**32


def test_encode_pair_keywords(pre):
  out = pre.encode_pair('Red Nike shoes 红色', 'Nike Men Running Shoes', ['Red', 'Footwear'], 8, 12)
  assert set(out) == {
    'query_ids',
    'query_mask',
    'query_keyword',
    'title_ids',
    'title_mask',
    'title_keyword',
  }
  assert all(v.dtype == np.int32 for v in out.values())
  assert out['query_ids'].shape == (8,) and out['title_ids'].shape == (12,)
  # Naive check: a piece is flagged iff its word is a query word found in title/attributes.
  keywords = {'nike', 'red', 'shoes'}  # '红色' is in neither.
  for side, words in (
    ('query', pre.words('Red Nike shoes 红色')),
    ('title', pre.words('Nike Men Running Shoes')),
  ):
    ids, word_index = pre.tokenizer.tokenize_words(words)
    n = int(out[f'{side}_mask'].sum()) - 2
    expected = [0] + [int(words[w] in keywords) for w in word_index[:n]] + [0]
    assert out[f'{side}_keyword'].tolist()[: n + 2] == expected
    assert not out[f'{side}_keyword'][n + 2 :].any()
  with pytest.raises(ValueError, match='sequence of attribute values'):
    pre.encode_pair('red', 'red dress', 'red', 8, 8)


def test_vocab_errors_surface_as_value_errors(tmp_path):
  with pytest.raises(VocabError, match='not found'):
    TextPreprocessor.from_vocab_file(tmp_path / 'missing.txt')
  assert issubclass(VocabError, ValueError)


def test_pickle_round_trip(pre):
  clone = pickle.loads(pickle.dumps(pre))
  np.testing.assert_array_equal(
    clone.encode('红色 red dress', 8)[0], pre.encode('红色 red dress', 8)[0]
  )


def test_keep_punctuation_encodes_as_the_checkpoints_tokenizer():
  """With keep_punctuation and the reading order, all-MiniLM-L6-v2's vocabulary gives the ids
  of its own tokenizer; words and qid are those without punctuation."""
  import tokenizers

  from make_jax.models import bert_import

  path = bert_import.default_checkpoint_dir()
  reference = tokenizers.Tokenizer.from_file(str(path / 'tokenizer.json'))
  reference.no_padding()
  kw = dict(sort_words=False, strip_accents=True, domain_words=['Red Chief'])
  pre = TextPreprocessor.from_vocab_file(path / 'vocab.txt', keep_punctuation=True, **kw)
  plain = TextPreprocessor.from_vocab_file(path / 'vocab.txt', **kw)
  for text in (
    "Nike Men's Downshifter White/Blue Shoe",
    'Reebok Orange & White Striped Polo T-shirt',
    'Quechua Forclaz Large  Backpack - 50 ltr (Orange)',
    'Red Chief café_crème 2.5mm!!',
  ):
    ids, mask = pre.encode(text, 64)
    assert list(ids[: mask.sum()]) == reference.encode(text).ids, text
    assert pre.words(text) == plain.words(text)
    assert pre.qid(text) == plain.qid(text)
  # Sorted words still sort, punctuation marks among them.
  sorted_pre = TextPreprocessor.from_vocab_file(
    path / 'vocab.txt', keep_punctuation=True, strip_accents=True
  )
  assert sorted_pre.encoding_words('b & a') == ['&', 'a', 'b']
