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
- **CJK words**: every CJK run of two or more characters in an entry is kept whole. jieba
  cuts a run first; where a cut falls inside an occurrence of a dictionary word (`红隼运动鞋`
  -> `红`, `隼`, `运动鞋`), the occurrence becomes one word (`红隼`, `运动鞋`), and a
  jieba word that it cut across is cut again without it (`东西风格` -> `东西`, `风格` with
  the brand `西风` -> `东`, `西风`, `格`: the catalogue's word wins, predictably). Runs
  are scanned left to right, the longest such occurrence first (`CjkMatcher`). An
  occurrence inside one jieba word is left alone: it is not cut (`长方形` keeps the
  shape `方形`, `粉红色` the colour `红色`). A single character is never cut anyway.
- **Multi-word entries**: an entry that segments into several words (`red chief`,
  `united colors of benetton`, `t 恤`) becomes one word wherever those words follow each
  other in the text, whatever punctuation was between them, longest entry first; the
  word is its parts joined by one space (`PhraseJoiner`). The space keeps the parts
  apart for WordPiece (pieces `red`, `chief`, both carrying the one word index), the qid
  hashes the word with its space, and sorting moves the entry as one unit.

Idempotence holds in the words' own order: the words joined with spaces give the same
words back. Each CJK word is stable alone: a (re-cut) jieba word is cut as itself, and a
dictionary word inside it lies within one word, so it is left alone; a dictionary word
alone is one word whether or not jieba cuts it. In another order, two words of a multi-word entry that were apart in the
text (`chief red`) may come to follow each other and join (`red chief`): that is the
entry itself, so a re-ordered word list may name the brand; only then can the qid change.
"""

from collections.abc import Callable, Iterable, Sequence

from make_jax.text import normalize as normalize_lib


def normalize_entries(entries: Iterable[str | bytes]) -> tuple[str, ...]:
  """The normalised, de-duplicated, sorted entries with a letter, digit or CJK character.

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
    if any(ch.isalnum() for ch in normalised):  # Punctuation only: no word to keep.
      out.add(normalised)
  return tuple(sorted(out))


class CjkMatcher:
  """Keeps dictionary words whole in jieba's cut of a CJK run (module docstring)."""

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

  def keep_whole(self, words: list[str], recut: Callable[[str], list[str]]) -> list[str]:
    """`words` (jieba's cut of one run) with every cut-up dictionary word made whole.

    Args:
      words: the words of one CJK run, in order.
      recut: cuts a piece of a word that a dictionary word cut across.

    Returns:
      The words; `words` itself when no dictionary word was cut.
    """
    if not self._words or len(words) < 2:
      return words
    run = ''.join(words)
    owner: list[int] = []  # Character position -> index of its word.
    starts: list[int] = []
    for k, word in enumerate(words):
      starts.append(len(owner))
      owner.extend([k] * len(word))
    n = len(run)
    spans = []  # Dictionary words that jieba cut, leftmost, then longest.
    i = 0
    while i < n:
      for length in self._lengths.get(run[i], ()):
        j = i + length
        if j <= n and owner[i] != owner[j - 1] and run[i:j] in self._words:
          spans.append((i, j))
          i = j
          break
      else:
        i += 1
    if not spans:
      return words
    ends = [*starts[1:], n]
    out: list[str] = []

    def between(a: int, b: int) -> None:
      """Appends the words of run[a:b]: whole jieba words kept, cut ones re-cut."""
      if a >= b:
        return
      for k in range(owner[a], owner[b - 1] + 1):
        lo, hi = max(a, starts[k]), min(b, ends[k])
        if (lo, hi) == (starts[k], ends[k]):
          out.append(words[k])
        else:
          out.extend(recut(run[lo:hi]))

    pos = 0
    for i, j in spans:
      between(pos, i)
      out.append(run[i:j])
      pos = j
    between(pos, n)
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
