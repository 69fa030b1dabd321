"""`TextPreprocessor`: raw query/title text -> words, qid and padded token ids (SPEC 2).

Why: this is the one object the input pipeline, the exporter and the server share, so
that a query is turned into the same words, qid and ids at training time and at serving
time. The steps (each in its own module):

  normalize (NFKC, lower, controls) -> segment (jieba + word boundaries, with the domain
  dictionary) -> sort words -> qid (blake2b-32 of the sorted words) and WordPiece ids
  `[CLS] ... [SEP] [PAD]...`

The words are stable: re-joined with spaces, in any order, they give the same words and
the same qid (`segment.py`). A domain dictionary (`domain_words=`, raw attribute values
such as brands, categories and colours; `domain.py`) keeps catalogue words whole; a
multi-word entry is one word with its inner space (`red chief`), which WordPiece encodes
as the pieces of its parts, all flagged together as one keyword. The qid is a function of
the text and the set of domain words: save `domain_words` with a model and its qid table.

Encoding (contract 1): `ids[0] = [CLS]`, then the pieces of the sorted words, `[SEP]`
right after the last piece kept, `[PAD]` to `max_len`; `mask` is 1 on [CLS], pieces and
[SEP]. Longer texts are truncated to `max_len - 2` pieces (so [SEP] is always present);
only the first `max_len - 2` sorted words are tokenized, as each word gives at least one
piece, so a 10,000-character title costs one segmentation and a short tokenization.
Empty, whitespace-only or punctuation-only text encodes to `[CLS] [SEP]` + padding and
has the qid `EMPTY_QID`.

Keywords (SPEC 3, KE): the query words that also occur among the title's words or the
words of its attribute values (equality of normalised, segmented words). Every piece of
such a word, in the query and in the title, is flagged 1 in `*_keyword`; specials and
padding are 0.
"""

import dataclasses
import os
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from make_jax.text import normalize as normalize_lib
from make_jax.text import qid as qid_lib
from make_jax.text import segment as segment_lib
from make_jax.text import vocab as vocab_lib
from make_jax.text import wordpiece

Text = str | bytes


# The longest query (in characters) that any entry point accepts: the server's `q`, a line
# of `tools.search`, a query-log line of the offline table.
MAX_QUERY_CHARS = 256


@dataclasses.dataclass(frozen=True)
class Query:
  """One query's text as search uses it, computed once (`TextPreprocessor.query`): the
  relevance control, the table lookup and the online encoder all read from it."""

  text: str  # As given.
  normalized: str  # `normalize.normalize(text)`.
  words: tuple[str, ...]  # `words(text)`: the table's key (sorted unless sort_words=False).
  encoding_words: tuple[str, ...]  # `encoding_words(text)`: what the query encoder tokenises.
  known_words: tuple[str, ...]  # `known_words(text)`: () means no word the model knows.


class TextPreprocessor:
  """Normalises, segments, sorts, hashes and WordPiece-encodes queries and titles."""

  def __init__(
    self,
    tokenizer: wordpiece.WordPieceTokenizer,
    *,
    sort_words: bool = True,
    domain_words: Sequence[str] = (),
    keep_punctuation: bool = False,
  ):
    """Wraps a tokenizer.

    Args:
      tokenizer: the WordPiece vocabulary and rules.
      sort_words: sort words before tokenizing (SPEC 2.3; False keeps the reading order,
        as a pretrained checkpoint expects). The qid always uses the sorted words.
      keep_punctuation: encode the punctuation between words too, one piece per mark, as
        BERT's tokenizer does (`&`, `/`, `(`), so a pretrained checkpoint sees the tokens
        it was trained on. Words, keywords and the qid are unchanged.
      domain_words: whole words of the catalogue (raw attribute values: `Red Chief`,
        `红隼`), normalised here; each stays one word (`domain.py`).

    Raises:
      TypeError: if `domain_words` is one string or holds something that is not text.
    """
    self._tokenizer = tokenizer
    self._sort_words = sort_words
    self._keep_punctuation = keep_punctuation
    self._segmenter = segment_lib.Segmenter(domain_words)
    self.pad_id = tokenizer.token_to_id(wordpiece.PAD)
    self.unk_id = tokenizer.token_to_id(wordpiece.UNK)
    self.cls_id = tokenizer.token_to_id(wordpiece.CLS)
    self.sep_id = tokenizer.token_to_id(wordpiece.SEP)
    self.mask_id = tokenizer.token_to_id(wordpiece.MASK)

  # --- Constructors ---------------------------------------------------------------------

  @classmethod
  def from_vocab_file(
    cls,
    path: str | os.PathLike,
    *,
    sort_words: bool = True,
    strip_accents: bool = False,
    domain_words: Sequence[str] = (),
    keep_punctuation: bool = False,
  ) -> 'TextPreprocessor':
    """From a BERT vocab.txt (ids as in the file). Raises `VocabError` if it is unusable.

    Pass `strip_accents=True` for BERT uncased vocabularies (all-MiniLM-L6-v2).
    """
    tokens = vocab_lib.load_vocab_file(path)
    return cls.from_tokens(
      tokens,
      sort_words=sort_words,
      strip_accents=strip_accents,
      domain_words=domain_words,
      keep_punctuation=keep_punctuation,
    )

  @classmethod
  def from_config(
    cls, text: Any, vocab_path: str | os.PathLike, domain_words: Sequence[str] = ()
  ) -> 'TextPreprocessor':
    """The preprocessor of a config's `text` section over `vocab_path`: the one place that
    maps the section's fields (sort_words, strip_accents, keep_punctuation) onto it."""
    return cls.from_vocab_file(
      vocab_path,
      sort_words=text.sort_words,
      strip_accents=text.strip_accents,
      domain_words=domain_words,
      keep_punctuation=bool(text.get('keep_punctuation', False)),
    )

  @classmethod
  def from_tokens(
    cls,
    tokens: Sequence[str],
    *,
    sort_words: bool = True,
    strip_accents: bool = False,
    domain_words: Sequence[str] = (),
    keep_punctuation: bool = False,
  ) -> 'TextPreprocessor':
    """From a vocabulary in id order (e.g. the output of `build_vocab`)."""
    return cls(
      wordpiece.WordPieceTokenizer(tokens, strip_accents=strip_accents),
      sort_words=sort_words,
      domain_words=domain_words,
      keep_punctuation=keep_punctuation,
    )

  @classmethod
  def from_corpus(
    cls,
    corpus: Iterable[Text],
    vocab_size: int,
    *,
    sort_words: bool = True,
    strip_accents: bool = False,
    domain_words: Sequence[str] = (),
  ) -> 'TextPreprocessor':
    """Learns a vocabulary from raw texts (`build_vocab`) and wraps it.

    The domain words do not change the vocabulary (WordPiece splits words at spaces and
    CJK characters anyway), only the words this preprocessor makes.
    """
    tokens = vocab_lib.build_vocab(corpus, vocab_size, strip_accents=strip_accents)
    return cls.from_tokens(
      tokens, sort_words=sort_words, strip_accents=strip_accents, domain_words=domain_words
    )

  # --- Properties -----------------------------------------------------------------------

  @property
  def tokenizer(self) -> wordpiece.WordPieceTokenizer:
    return self._tokenizer

  @property
  def vocab_size(self) -> int:
    return self._tokenizer.vocab_size

  @property
  def sort_words(self) -> bool:
    return self._sort_words

  @property
  def keep_punctuation(self) -> bool:
    return self._keep_punctuation

  @property
  def domain_words(self) -> tuple[str, ...]:
    """The domain dictionary: normalised entries, sorted, without duplicates."""
    return self._segmenter.domain_words

  # --- Words and qid --------------------------------------------------------------------

  def words(self, text: Text) -> list[str]:
    """Normalised, segmented words of `text`, sorted (unless `sort_words=False`)."""
    return self._words_of_normalized(normalize_lib.normalize(text))

  def encoding_words(self, text: Text) -> list[str]:
    """What `encode` tokenises: `words(text)`, with `keep_punctuation` the punctuation
    marks between words interleaved in reading order (each mark one word)."""
    normalized = normalize_lib.normalize(text)
    if not self._keep_punctuation:
      return self._words_of_normalized(normalized)
    return self._punctuated_words_of_normalized(normalized)

  def known_words(self, text: Text) -> list[str]:
    """The words of `text` (`words`) that the vocabulary knows: at least one of a word's
    WordPiece pieces is not [UNK]. [] means the model can only guess (emoji, another
    script than the vocabulary's, punctuation alone)."""
    return self._known(self.words(text))

  def query(self, text: str) -> 'Query':
    """Everything search needs of one query's text, each step run once (`Query`)."""
    normalized = normalize_lib.normalize(text)
    words = self._words_of_normalized(normalized)
    encoding = self._punctuated_words_of_normalized(normalized) if self._keep_punctuation else words
    return Query(text, normalized, tuple(words), tuple(encoding), tuple(self._known(words)))

  def _words_of_normalized(self, normalized: str) -> list[str]:
    words = self._segmenter.segment(normalized)
    return sorted(words) if self._sort_words else words

  def _punctuated_words_of_normalized(self, text: str) -> list[str]:
    words, start = [], 0
    for i, ch in enumerate(text):
      if _is_punctuation(ch):
        words.extend(self._segmenter.segment(text[start:i]))
        words.append(ch)
        start = i + 1
    words.extend(self._segmenter.segment(text[start:]))
    return sorted(words) if self._sort_words else words

  def _known(self, words: Sequence[str]) -> list[str]:
    ids, word_index = self._tokenizer.tokenize_words_batch([list(words)])[0]
    known = {w for piece, w in zip(ids, word_index, strict=True) if piece != self.unk_id}
    return [word for i, word in enumerate(words) if i in known]

  def qid(self, text: Text) -> int:
    """The uint32 qid of `text` (of its sorted words; `EMPTY_QID` if it has none)."""
    return qid_lib.qid_of_words(self._segmenter.segment(normalize_lib.normalize(text)))

  # --- Encoding -------------------------------------------------------------------------

  def _fill(
    self,
    ids: list[int],
    word_index: list[int],
    words: Sequence[str],
    keywords: frozenset[str],
    out_ids: np.ndarray,
    out_mask: np.ndarray,
    out_keyword: np.ndarray | None,
  ) -> None:
    """Writes [CLS] pieces [SEP] into one row of the (pre-padded) output arrays."""
    n = min(len(ids), out_ids.shape[0] - 2)
    out_ids[0] = self.cls_id
    out_ids[1 : n + 1] = ids[:n]
    out_ids[n + 1] = self.sep_id
    out_mask[: n + 2] = 1
    if out_keyword is not None and keywords:
      for j in range(n):
        if words[word_index[j]] in keywords:
          out_keyword[j + 1] = 1

  def _encode_word_lists(
    self,
    word_lists: Sequence[Sequence[str]],
    max_len: int,
    keywords: Sequence[frozenset[str]] | None = None,
  ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Encodes already segmented (and sorted) word lists into [N, max_len] arrays."""
    _check_max_len(max_len)
    # Each word yields >= 1 piece, so words past the first max_len - 2 are never kept.
    word_lists = [list(words[: max_len - 2]) for words in word_lists]
    n = len(word_lists)
    out_ids = np.full((n, max_len), self.pad_id, dtype=np.int32)
    out_mask = np.zeros((n, max_len), dtype=np.int32)
    out_keyword = np.zeros((n, max_len), dtype=np.int32) if keywords is not None else None
    pieces = self._tokenizer.tokenize_words_batch(word_lists)
    for i, (ids, word_index) in enumerate(pieces):
      self._fill(
        ids,
        word_index,
        word_lists[i],
        keywords[i] if keywords is not None else frozenset(),
        out_ids[i],
        out_mask[i],
        out_keyword[i] if out_keyword is not None else None,
      )
    return out_ids, out_mask, out_keyword

  def encode(self, text: Text, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns (ids int32[max_len], mask int32[max_len]) of `text`.

    Raises:
      ValueError: if `max_len` < 2 (no room for [CLS] and [SEP]).
    """
    ids, mask = self.encode_batch([text], max_len)
    return ids[0], mask[0]

  def encode_batch(self, texts: Sequence[Text], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns (ids int32[N, max_len], mask int32[N, max_len]) of `texts`."""
    _check_max_len(max_len)
    ids, mask, _ = self._encode_word_lists([self.encoding_words(t) for t in texts], max_len)
    return ids, mask

  def encode_words_batch(
    self, word_lists: Sequence[Sequence[str]], max_len: int
  ) -> tuple[np.ndarray, np.ndarray]:
    """Like `encode_batch` for texts already turned into words (by `words`), unchanged.

    For callers that need the words anyway (qid tables, keyword matching): the words are
    encoded in the given order, so pass the output of `words` to match `encode_batch`.
    """
    ids, mask, _ = self._encode_word_lists(word_lists, max_len)
    return ids, mask

  def encode_pair(
    self,
    query: Text,
    title: Text,
    attributes: Sequence[Text],
    query_len: int,
    title_len: int,
  ) -> dict[str, np.ndarray]:
    """Encodes a (query, product) pair with keyword flags (contract 1, SPEC 3 KE).

    Args:
      query: the query text.
      title: the product title.
      attributes: the product's attribute values (brand, colour, ...); may be empty.
      query_len: query tokens incl. [CLS]/[SEP].
      title_len: title tokens incl. [CLS]/[SEP].

    Returns:
      int32 arrays query_ids, query_mask, query_keyword [query_len]; title_ids,
      title_mask, title_keyword [title_len].
    """
    _check_max_len(query_len, 'query_len')
    _check_max_len(title_len, 'title_len')
    if isinstance(attributes, str | bytes):
      raise ValueError('attributes must be a sequence of attribute values, not one string')
    query_words = self.encoding_words(query)
    title_words = self.encoding_words(title)
    product_words = set(title_words)
    for value in attributes:
      product_words.update(self._segmenter.segment(normalize_lib.normalize(value)))
    keywords = frozenset(w for w in query_words if w in product_words)
    q_ids, q_mask, q_kw = self._encode_word_lists([query_words], query_len, [keywords])
    t_ids, t_mask, t_kw = self._encode_word_lists([title_words], title_len, [keywords])
    return {
      'query_ids': q_ids[0],
      'query_mask': q_mask[0],
      'query_keyword': q_kw[0],
      'title_ids': t_ids[0],
      'title_mask': t_mask[0],
      'title_keyword': t_kw[0],
    }

  def decode(self, ids: Sequence[int]) -> list[str]:
    """The piece strings of `ids` without [PAD] (for inspection and debugging)."""
    return [self._tokenizer.id_to_token(int(i)) for i in ids if int(i) != self.pad_id]


def _is_punctuation(ch: str) -> bool:
  """BERT's punctuation: the ASCII non-alphanumeric marks and Unicode's P* categories."""
  cp = ord(ch)
  if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
    return True
  return unicodedata.category(ch).startswith('P')


def _check_max_len(max_len: int, name: str = 'max_len') -> None:
  if isinstance(max_len, bool) or not isinstance(max_len, int | np.integer):
    raise ValueError(f'{name} must be an int, got {type(max_len).__name__}')
  if max_len < 2:
    raise ValueError(f'{name}={max_len} is too small: [CLS] and [SEP] need 2 positions')


# The contract's vocabulary builder and writer live in vocab.py; exported here as well.
build_vocab = vocab_lib.build_vocab
save_vocab = vocab_lib.save_vocab
