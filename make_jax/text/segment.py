"""Word segmentation, SPEC section 2 step 2: jieba for Chinese, word boundaries elsewhere.

Why: the words are what get sorted (SPEC 2.3) and hashed into the qid (SPEC 2.4), so this
module fixes what a "word" is. Input is normalised text (`normalize.normalize`). Rules:

- **CJK runs** (the CJK ideograph ranges of BERT's `_is_chinese_char`) are cut by jieba
  (precise mode, HMM on for unknown words). Each run is cut on its own, so Latin letters
  and digits never enter jieba: `iphone15手机壳` -> `iphone15`, `手机`, `壳`; jieba
  dictionary entries that mix scripts are split at the script boundary (`t恤` -> `t`, `恤`).
- **Stable words** (idempotence): a word jieba gives for a run must be the word jieba
  gives for it standing alone, or its qid would change when the words are re-joined with
  spaces. jieba's HMM guesses unknown words from their context (`小众连衣裙` -> `小众`,
  `连衣裙`, but `小众` alone -> `小`, `众`), so each word the HMM guessed that does not
  cut back to itself alone is replaced by its own stable pieces, recursively (`小`, `众`,
  `连衣裙`); the words of jieba's dictionary route are stable already (`_jieba_words`).
  Hence for every text: `segment(' '.join(ws)) == ws` for `ws = segment(text)`, and every
  word segments alone to itself, so the words re-joined in any order give the same qid.
  This is a pure function of the text (a memo of it, never jieba's global state).
- **Other words** are runs of Unicode letters and digits (Latin, Cyrillic, kana, hangul,
  Thai, Devanagari, ...) with the combining marks (Mn, Mc) that follow them, so
  `iphone15`, `128gb`, `ชุดเดรสสีแดง` and `पोशाक` are one word each. Runs joined by a
  single `-`, `.` or `'` stay one word (`t-shirt`, `2.5mm`, `men's`, `wi-fi`); WordPiece
  still splits them BERT-style into `t`, `-`, `shirt` pieces (see `wordpiece.py`).
- **Everything else is a boundary and dropped**: spaces, punctuation (ASCII and CJK, `_`
  included), symbols, **emoji** (no product meaning, [UNK] in BERT vocabularies), and
  combining marks with no letter or digit before them (after CJK, punctuation or a space).
- **Domain dictionary** (`Segmenter(domain_words)`, see `domain.py`): whole words of a
  catalogue (brands, categories, colours) stay one word: jieba's cut never splits a CJK
  entry (`红隼`), and an entry of several words becomes ONE word, its parts joined by a
  single space (`Red Chief` -> `red chief`). Words stay stable with the dictionary too.

jieba is a `jieba.Tokenizer()` instance created once per process on first use (about
0.6 s; jieba keeps its dictionary cache in the temp dir) and never modified.
"""

import functools
import logging
import re
import threading
import unicodedata
from collections.abc import Iterable, Iterator

from make_jax.text import domain as domain_lib

# CJK ideograph ranges of BERT's BasicTokenizer (`_is_chinese_char`), which HuggingFace's
# `BertNormalizer(handle_chinese_chars=True)` uses too: the characters of these ranges
# are both what jieba segments here and what WordPiece splits into one piece each.
CJK_RANGES = (
  '\u4e00-\u9fff'
  '\u3400-\u4dbf'
  '\U00020000-\U0002a6df'
  '\U0002a700-\U0002b73f'
  '\U0002b740-\U0002b81f'
  '\U0002b820-\U0002ceaf'
  '\uf900-\ufaff'
  '\U0002f800-\U0002fa1f'
)
# A letter or digit that is not CJK: `\w` minus `_` minus the CJK ranges.
_ALNUM = rf'[^\W_{CJK_RANGES}]'
_CJK_CHAR_RE = re.compile(f'[{CJK_RANGES}]')
_CJK_RUN_RE = re.compile(f'[{CJK_RANGES}]+')
# jieba's own Han range (`jieba.re_han_default` without its Latin part): jieba cuts these
# and yields the other CJK characters of a run one by one.
_JIEBA_HAN_RE = re.compile('([\u4e00-\u9fd5]+)')
# Without combining marks (the common case: ASCII, CJK, full-width forms) words are plain
# letter/digit runs; any other character may be a mark and takes the general pattern.
_PLAIN_TOKEN_RE = re.compile(rf"(?P<cjk>[{CJK_RANGES}]+)|(?P<word>{_ALNUM}+(?:[-.']{_ALNUM}+)*)")
_MAYBE_MARK_RE = re.compile(f'[^\x00-\x7f{CJK_RANGES}\uff00-\uffef]')
# Code points that may hold combining marks (Unicode puts them in planes 0, 1 and 14).
_MARK_PLANES = (range(0x20000), range(0xE0000, 0xE1000))
_STABLE_CACHE_SIZE = 1 << 17

_jieba_lock = threading.Lock()
_jieba_tokenizer = None


def _jieba():
  """Returns this process's initialised `jieba.Tokenizer` (created on first use)."""
  global _jieba_tokenizer
  if _jieba_tokenizer is None:
    with _jieba_lock:
      if _jieba_tokenizer is None:
        import jieba  # Imported lazily: importing jieba is slow and it logs on load.

        jieba.setLogLevel(logging.WARNING)
        tokenizer = jieba.Tokenizer()
        tokenizer.initialize()
        _jieba_tokenizer = tokenizer
  return _jieba_tokenizer


@functools.cache
def _marked_token_re() -> re.Pattern:
  """The token pattern whose letter/digit runs keep their combining marks (built once)."""
  ranges = []
  for plane in _MARK_PLANES:
    for cp in plane:
      if unicodedata.category(chr(cp)) in ('Mn', 'Mc'):
        if ranges and ranges[-1][1] == cp - 1:
          ranges[-1][1] = cp
        else:
          ranges.append([cp, cp])
  marks = ''.join(re.escape(chr(a)) + ('-' + re.escape(chr(b)) if b > a else '') for a, b in ranges)
  part = rf'{_ALNUM}(?:{_ALNUM}|[{marks}])*'
  return re.compile(rf"(?P<cjk>[{CJK_RANGES}]+)|(?P<word>{part}(?:[-.']{part})*)")


@functools.lru_cache(maxsize=_STABLE_CACHE_SIZE)
def _stable_pieces(word: str) -> tuple[str, ...]:
  """`word` (a jieba word) as words that each cut back to themselves alone (module doc)."""
  if len(word) == 1:
    return (word,)
  pieces = [p for p in _jieba().cut(word, cut_all=False, HMM=True) if p]
  if pieces == [word]:
    return (word,)
  # jieba cuts a word into >= 2 strictly shorter pieces, so the recursion ends.
  return tuple(p for piece in pieces for p in _stable_pieces(piece))


def _jieba_words(run: str) -> Iterator[tuple[str, bool]]:
  """jieba's precise cut of a CJK run with HMM, as (word, guessed by the HMM) pairs.

  The words of `jieba.Tokenizer.cut(run, HMM=True)` (jieba 0.42.1's `__cut_DAG`, restated
  with its public `get_DAG`, `calc` and `finalseg.cut`; a test checks they agree), plus
  where each came from. A multi-character word of the dictionary route is stable: the
  route maximises a sum over words from right to left, so a word it picks in context
  also beats every split of itself alone (and ties go to the longer word).
  """
  from jieba import finalseg

  tokenizer = _jieba()
  for block in _JIEBA_HAN_RE.split(run):
    if not block:
      continue
    if not _JIEBA_HAN_RE.fullmatch(block):  # Outside jieba's Han range: one by one.
      yield from ((ch, False) for ch in block)
      continue
    route: dict = {}
    tokenizer.calc(block, tokenizer.get_DAG(block), route)
    x, n, buf = 0, len(block), ''
    while x <= n:
      y = route[x][1] + 1 if x < n else n + 1
      if x < n and y - x == 1:
        buf += block[x]
      else:
        if len(buf) == 1:
          yield buf, False
        elif buf and not tokenizer.FREQ.get(buf):
          yield from ((w, True) for w in finalseg.cut(buf))
        else:
          yield from ((ch, False) for ch in buf)
        buf = ''
        if x < n:
          yield block[x:y], False
      x = y


def cut_cjk(run: str) -> list[str]:
  """Cuts a pure CJK run into stable jieba words (each segments alone to itself)."""
  words = []
  for word, guessed in _jieba_words(run):
    if guessed and len(word) > 1:
      words.extend(_stable_pieces(word))
    else:
      words.append(word)
  return words


def clear_caches() -> None:
  """Empties the memo of stable jieba words (for benchmarks timing a cold start)."""
  _stable_pieces.cache_clear()


def base_tokens(text: str) -> Iterable[re.Match]:
  """The CJK runs (group `cjk`) and other words (group `word`) of normalised text."""
  pattern = _marked_token_re() if _MAYBE_MARK_RE.search(text) else _PLAIN_TOKEN_RE
  return pattern.finditer(text)


class Segmenter:
  """Segments normalised text into words, optionally with a domain dictionary.

  Picklable (rebuilt from the domain words). Two segmenters with the same set of domain
  words segment every text alike, whatever order the words were given in.
  """

  def __init__(self, domain_words: Iterable[str | bytes] = ()):
    """Builds the segmenter.

    Args:
      domain_words: raw attribute values (`Red Chief`, `红隼`); normalised here.

    Raises:
      TypeError: if `domain_words` is one string or holds something that is not text.
    """
    self._entries = domain_lib.normalize_entries(domain_words)
    # Every CJK run of an entry is kept whole; then each entry is segmented like text,
    # and those of several words are joined wherever their words follow each other.
    self._cjk = domain_lib.CjkMatcher(
      run for entry in self._entries for run in _CJK_RUN_RE.findall(entry)
    )
    self._phrases = domain_lib.PhraseJoiner(self._base_words(e) for e in self._entries)

  def __getstate__(self) -> dict:
    return {'domain_words': self._entries}

  def __setstate__(self, state: dict) -> None:
    self.__init__(state['domain_words'])

  @property
  def domain_words(self) -> tuple[str, ...]:
    """The normalised domain entries, sorted and without duplicates."""
    return self._entries

  def _base_words(self, text: str) -> list[str]:
    """Words before multi-word entries are joined: CJK runs cut, domain CJK words whole."""
    words: list[str] = []
    for match in base_tokens(text):
      if match.lastgroup == 'cjk':
        words.extend(self._cjk.keep_whole(cut_cjk(match.group()), cut_cjk))
      else:
        words.append(match.group())
    return words

  def segment(self, text: str) -> list[str]:
    """Splits normalised text into words, in reading order (see the module docstring).

    Args:
      text: output of `normalize.normalize` (lower case, NFKC, no control characters).

    Returns:
      The words; never an empty string. Only a multi-word domain entry contains
      whitespace (one space between its parts). Empty for text without a letter, digit
      or CJK character.
    """
    return self._phrases.join(self._base_words(text))


_DEFAULT = Segmenter()


def segment(text: str) -> list[str]:
  """`Segmenter().segment(text)`: the words of normalised text, without a dictionary."""
  return _DEFAULT.segment(text)


def is_cjk(ch: str) -> bool:
  """Whether the single character `ch` is a CJK ideograph (one WordPiece piece each)."""
  return _CJK_CHAR_RE.fullmatch(ch) is not None


def is_cjk_run(text: str) -> bool:
  """Whether `text` is a non-empty run of CJK ideographs only."""
  return _CJK_RUN_RE.fullmatch(text) is not None
