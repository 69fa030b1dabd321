"""Query understanding: which restricted attribute values a query names (SPEC 7.4).

Relevance control filters ANN results by the key attributes a query names ("nike red
tshirt" -> brand: Nike AND colour: Red AND article type: Tshirts). This module finds
those values; `filters.py` applies them.

Vocabulary: every value of the restricted fields of a catalogue ('', 'NA' skipped)
becomes a *key*: its words (normalised as text/normalize.py does, split on anything that
is not a letter or digit, "'s" folded: "men's" -> "mens"), joined without spaces, with
the last word made singular. A query's words are keyed the same way over every span of
up to `MAX_SPAN` consecutive words, so spelling variants meet on one key:

  "t-shirts", "t shirts", "tshirt", "Tshirts" -> 'tshirt';  "mens", "men's" -> 'men'

plus a small synonym table for words a rule cannot derive ("tee", "tees" -> 'tshirt').
Matching goes left to right, longest span first; a word belongs to at most one span.

A key may name values of several fields ('watch': subCategory Watches and articleType
Watches). The span then restricts every such field whose value is consistent with the
others already taken, by product count (largest first), so a redundant pair is kept and
a contradictory one ('skin': colour Skin vs subCategory Skin) keeps the larger value.
Several values of one field in a query ("nike puma shoes") are ORed; fields are ANDed.
A value that would leave no product beside those already taken is not applied (nor
reported): "nike skin" searches Nike products, since no Nike product is skin-coloured.
"""

import dataclasses
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence

from make_jax.text import normalize as normalize_lib
from make_jax.text import segment as segment_lib

MAX_SPAN = 4  # Longest attribute value, in words, that a query span is matched against.
SKIPPED_VALUES = frozenset({'', 'na', 'n/a', 'none', 'null'})
# The fields relevance control restricts, by dataset. `category` of the issue is the
# category hierarchy on fashion_products (master > sub > article type).
RESTRICTED_FIELDS = {
  'fashion_products': (
    'brand',
    'masterCategory',
    'subCategory',
    'articleType',
    'gender',
    'baseColour',
  ),
  'synthetic_products': ('brand', 'category'),
}
DEFAULT_RESTRICTED_FIELDS = ('brand', 'category')  # A dataset not listed above.


def restricted_fields(dataset: str, available: Iterable[str]) -> tuple[str, ...]:
  """The fields relevance control filters on: the dataset's that the catalogue has."""
  available = set(available)
  fields = RESTRICTED_FIELDS.get(dataset, DEFAULT_RESTRICTED_FIELDS)
  return tuple(f for f in fields if f in available)


# Synonyms: key of a query phrase -> key of the catalogue value it means. Keys, so the
# plural and spelling rules above apply to both sides ('tees' -> 'tee' -> 'tshirt').
SYNONYMS = {
  'tee': 'tshirt',
  'teeshirt': 'tshirt',
  'man': 'men',
  'male': 'men',
  'gent': 'men',
  'woman': 'women',
  'lady': 'women',
  'female': 'women',
  'sneaker': 'sportsshoe',
  'trainer': 'sportsshoe',
  'spec': 'sunglass',
  'shade': 'sunglass',
  'gray': 'grey',
  'pant': 'trouser',
  'wristwatch': 'watch',
  'perfume': 'perfumeandbodymist',
  'purse': 'handbag',
}
_SPLIT = re.compile(r'[^\w]+|_')
_APOSTROPHE_S = re.compile(r"['’]s\b")
# Words whose final 's' is not a plural.
_NOT_PLURAL = ('ss', 'us', 'is', 'ous')


def singular(word: str) -> str:
  """English singular of a lower-case word by suffix rules (unchanged if not Latin)."""
  if not word.isascii() or len(word) <= 3 or not word.endswith('s'):
    return word
  if word.endswith(_NOT_PLURAL):
    return word
  if word.endswith('ies') and len(word) > 4:
    return word[:-3] + 'y'
  if word.endswith(('sses', 'shes', 'ches', 'xes', 'zes')):
    return word[:-2]
  return word[:-1]


def words_of(text: str) -> list[str]:
  """Normalised words of `text` for attribute matching (split on non-alphanumerics)."""
  return words_of_normalized(normalize_lib.normalize(text))


def words_of_normalized(normalized: str) -> list[str]:
  """`words_of` for text already normalised (`normalize.normalize`)."""
  text = _APOSTROPHE_S.sub('s', normalized)
  out = []
  for word in segment_lib.segment(text):
    out += [w for w in _SPLIT.split(word) if w]
  return out


def key_of(words: Sequence[str]) -> str:
  """The matching key of a phrase: words joined, last word singular, synonyms applied."""
  if not words:
    return ''
  key = ''.join([*words[:-1], singular(words[-1])])
  return SYNONYMS.get(key, key)


@dataclasses.dataclass(frozen=True)
class Match:
  """One restricted attribute value a query names."""

  field: str  # Catalogue attribute, e.g. 'brand'.
  value: str  # The catalogue's value, e.g. 'Nike'.
  text: str  # The query words that named it, e.g. 'nike'.


class AttributeVocabulary:
  """Keys of the restricted attribute values of one catalogue, and the query parser."""

  def __init__(
    self,
    values: Mapping[str, Mapping[str, int]],
    consistent: Callable[[Sequence[tuple[str, str]]], bool] | None = None,
  ):
    """Builds the key table.

    Args:
      values: field -> {value: product count}; values in SKIPPED_VALUES are dropped.
      consistent: whether some product satisfies the given (field, value) pairs, ORed
        within a field and ANDed across fields (the inverted index answers it); None
        treats every combination as consistent.
    """
    self._count = {(f, v): n for f, vs in values.items() for v, n in vs.items()}
    self._consistent = consistent or (lambda pairs: True)
    keys: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for field, vs in values.items():
      for value in vs:
        if value.strip().lower() in SKIPPED_VALUES:
          continue
        words = words_of(value)
        if not words or len(words) > MAX_SPAN:
          continue
        keys[key_of(words)].append((field, value))
    # Largest value first: the order in which a span's candidates are tried.
    self._keys = {k: sorted(c, key=lambda fv: -self._count[fv]) for k, c in keys.items()}
    self.fields = tuple(values)

  @classmethod
  def from_columns(
    cls,
    columns: Mapping[str, Iterable[str]],
    consistent: Callable[[Sequence[tuple[str, str]]], bool] | None = None,
  ) -> 'AttributeVocabulary':
    """From field -> the value of every product (counts are taken here)."""
    counts = {}
    for field, column in columns.items():
      c: dict[str, int] = defaultdict(int)
      for v in column:
        c[v] += 1
      counts[field] = dict(c)
    return cls(counts, consistent)

  def __len__(self) -> int:
    return len(self._keys)

  def candidates(self, phrase: str) -> list[tuple[str, str]]:
    """(field, value) pairs whose key equals the key of `phrase` (for inspection)."""
    return list(self._keys.get(key_of(words_of(phrase)), ()))

  def parse(self, query: str, normalized: str | None = None) -> list[Match]:
    """The restricted values `query` names, in query order (see the module docstring).

    normalized: `normalize.normalize(query)` where the caller has it already.
    """
    words = words_of(query) if normalized is None else words_of_normalized(normalized)
    matches: list[Match] = []
    taken: list[tuple[str, str]] = []
    i = 0
    while i < len(words):
      for n in range(min(MAX_SPAN, len(words) - i), 0, -1):
        found = self._keys.get(key_of(words[i : i + n]))
        if found:
          text = ' '.join(words[i : i + n])
          for fv in found:
            if self._consistent([*taken, fv]):
              taken.append(fv)
              matches.append(Match(fv[0], fv[1], text))
          i += n
          break
      else:
        i += 1
    return matches
