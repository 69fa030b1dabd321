"""Word segmentation, SPEC section 2 step 2: jieba for Chinese, word boundaries elsewhere.

Why: the words are what get sorted (SPEC 2.3) and hashed into the qid (SPEC 2.4), so this
module fixes what a "word" is. Input is normalised text (`normalize.normalize`). Rules:

- **CJK runs** (the CJK ideograph ranges of BERT's `_is_chinese_char`) are cut by jieba
  (precise mode, HMM on for unknown words; deterministic: the same run always gives the
  same words). Each run is cut on its own, so Latin letters and digits never enter jieba:
  `iphone15手机壳` -> `iphone15`, `手机壳`; jieba dictionary entries that mix scripts are
  split at the script boundary (`t恤` -> `t`, `恤`).
- **Other words** are runs of Unicode letters and digits (Latin, Cyrillic, kana, hangul,
  ...), so `iphone15` and `128gb` are one word each. Runs joined by a single `-`, `.` or
  `'` stay one word (`t-shirt`, `2.5mm`, `men's`, `wi-fi`): the hyphenated compound is
  one unit of meaning and must not be torn apart by sorting. The WordPiece stage still
  splits it BERT-style into `t`, `-`, `shirt` pieces (see `wordpiece.py`).
- **Everything else is a boundary and dropped**: spaces, punctuation (ASCII and CJK, `_`
  included), symbols, and **emoji** (an emoji carries no product meaning and is [UNK] in
  BERT vocabularies; a query of emoji only has no words). Combining marks that NFKC could
  not compose also split words.

The jieba tokenizer is a `jieba.Tokenizer()` instance created and initialised once per
process on first use (about 0.6 s; jieba keeps its dictionary cache in the temp dir), with
jieba's logging quietened.
"""

import logging
import re
import threading

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
_TOKEN_RE = re.compile(rf"(?P<cjk>[{CJK_RANGES}]+)|(?P<word>{_ALNUM}+(?:[-.']{_ALNUM}+)*)")

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


def segment(text: str) -> list[str]:
  """Splits normalised text into words, in reading order (see the module docstring).

  Args:
    text: output of `normalize.normalize` (lower case, NFKC, no control characters).

  Returns:
    The words; never contains an empty string or whitespace. Empty for text without a
    letter, digit or CJK character.
  """
  words: list[str] = []
  for match in _TOKEN_RE.finditer(text):
    if match.lastgroup == 'cjk':
      # A pure CJK run: jieba yields only non-empty pieces of it (characters outside
      # its own Han range come out one by one).
      words.extend(w for w in _jieba().cut(match.group(), cut_all=False, HMM=True) if w)
    else:
      words.append(match.group())
  return words


def is_cjk(ch: str) -> bool:
  """Whether the single character `ch` is a CJK ideograph (one WordPiece piece each)."""
  return _CJK_CHAR_RE.fullmatch(ch) is not None
