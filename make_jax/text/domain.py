"""A domain dictionary for segmentation: catalogue words that must stay one word.

Why: jieba's dictionary does not know a catalogue's brands (`红隼`, `西风`), and word
boundaries tear a multi-word brand apart (`Red Chief` -> `red`, `chief`), so the query
words would miss the product's attribute values, and sorting would scatter a brand's
parts. The dataset builders collect the attribute values (brands, categories, colours)
and `segment.Segmenter` keeps each of them one word:

- Entries are raw attribute values, normalised like text (`normalize.normalize`);
  duplicates and entries without a letter, digit or CJK character carry nothing. The
  sorted, de-duplicated tuple is the dictionary, so the order entries come in never
  matters.
- **CJK words**: every CJK run of two or more characters in an entry is never cut inside:
  a run of text is scanned left to right and, at each position, the longest dictionary
  word starting there is taken whole; jieba cuts only the pieces between (`CjkMatcher`),
  even where jieba would have read other words across it (`东西风格` -> `东`, `西风`,
  `格` with the brand `西风`): the catalogue's word wins, predictably.
  A single character is not a dictionary word (it is always one piece already, and
  forcing it apart would break jieba words such as `红色` around a colour `红`).
- **Multi-word entries**: an entry that segments into several words (`red chief`,
  `united colors of benetton`, `t 恤`) becomes one word wherever those words follow each
  other in the text, whatever punctuation was between them, longest entry first; the
  word is its parts joined by one space (`PhraseJoiner`). The space keeps the parts
  apart for WordPiece (pieces `red`, `chief`, both carrying the one word index), the qid
  hashes the word with its space, and sorting moves the entry as one unit.

Idempotence holds in the words' own order: the words joined with spaces give the same
words back. In another order, two words of a multi-word entry that were apart in the
text (`chief red`) may come to follow each other and join (`red chief`): that is the
entry itself, so a re-ordered word list may name the brand; only then can the qid change.
"""

from collections.abc import Iterable, Sequence

from make_jax.text import normalize as normalize_lib


def normalize_entries(entries: Iterable[str | bytes]) -> tuple[str, ...]:
  """The normalised, non-empty, de-duplicated, sorted entries of a domain dictionary.

  Raises:
    TypeError: if `entries` is one string (not a sequence of entries), or an entry is
      neither `str` nor `bytes`.
  """
  if isinstance(entries, str | bytes | bytearray):
    raise TypeError('domain_words must be a sequence of words (attribute values), not one string')
  out = set()
  for i, entry in enumerate(entries):
    if not isinstance(entry, str | bytes | bytearray):
      raise TypeError(f'domain_words entry {i} is {type(entry).__name__}, not text: {entry!r}')
    normalised = normalize_lib.normalize(entry)
    if normalised:
      out.add(normalised)
  return tuple(sorted(out))


class CjkMatcher:
  """Cuts CJK runs at dictionary words (leftmost, then longest), as the module says."""

  def __init__(self, words: Iterable[str]):
    """Keeps the words of two or more characters; `words` are pure CJK runs."""
    self._words = frozenset(w for w in words if len(w) >= 2)
    lengths: dict[str, set[int]] = {}
    for word in self._words:
      lengths.setdefault(word[0], set()).add(len(word))
    # For each first character, the lengths of its words, longest first.
    self._lengths = {ch: sorted(ls, reverse=True) for ch, ls in lengths.items()}

  def __bool__(self) -> bool:
    return bool(self._words)

  def split(self, run: str) -> list[tuple[str, bool]]:
    """Splits `run` into (piece, is_dictionary_word) pairs, in order, covering it all.

    A piece that is not a dictionary word contains none (every position of it was tried),
    so jieba may cut it freely.
    """
    if not self._words:
      return [(run, False)]
    out: list[tuple[str, bool]] = []
    start = i = 0
    n = len(run)
    while i < n:
      for length in self._lengths.get(run[i], ()):
        if i + length <= n and run[i : i + length] in self._words:
          if start < i:
            out.append((run[start:i], False))
          out.append((run[i : i + length], True))
          i = start = i + length
          break
      else:
        i += 1
    if start < n:
      out.append((run[start:], False))
    return out


class PhraseJoiner:
  """Joins the words of multi-word entries into one word (longest entry first)."""

  def __init__(self, phrases: Iterable[Sequence[str]]):
    """Keeps the phrases of two or more words; each is the word list of one entry."""
    by_first: dict[str, set[tuple[str, ...]]] = {}
    for phrase in phrases:
      if len(phrase) >= 2:
        by_first.setdefault(phrase[0], set()).add(tuple(phrase))
    # Longest first, then in code-point order, so the first one that fits is taken.
    self._by_first = {w: sorted(ps, key=lambda p: (-len(p), p)) for w, ps in by_first.items()}

  def __bool__(self) -> bool:
    return bool(self._by_first)

  def join(self, words: list[str]) -> list[str]:
    """`words` with every occurrence of a phrase (leftmost, longest) made one word."""
    if not self._by_first:
      return words
    out: list[str] = []
    i, n = 0, len(words)
    while i < n:
      for phrase in self._by_first.get(words[i], ()):
        k = len(phrase)
        if i + k <= n and tuple(words[i : i + k]) == phrase:
          out.append(' '.join(phrase))
          i += k
          break
      else:
        out.append(words[i])
        i += 1
    return out
