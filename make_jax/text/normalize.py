"""Text normalisation, SPEC section 2 step 1: one canonical form for queries and titles.

Why: the same query typed on a phone (full-width letters and punctuation, an ideographic
space, a stray tab or zero-width space) and on a desktop must become the same words, the
same qid and the same token ids. The policy, in order:

1. `bytes` input is decoded as UTF-8; invalid byte sequences become U+FFFD, which step 2
   turns into a space (so `b'red\\xff dress'` -> `'red dress'`). `str` input is used as is.
2. Invisible characters separate words, they never glue them: whitespace, control (Cc),
   format (Cf: zero-width space, BOM, bidi marks), surrogate (Cs), private-use (Co) and
   unassigned (Cn) characters, and U+FFFD, become a space (`red\\x00dress` ->
   `red dress`, not `reddress`). Exceptions, dropped because they act inside one word:
   the soft hyphen, the zero-width (non-)joiners and the word joiner (U+00AD, U+200C,
   U+200D, U+2060), and the variation selectors (U+FE00-FE0F, U+E0100-E01EF). This is
   done first, so that NFKC composes across a dropped character (`e`, ZWJ, U+0301 -> `é`).
3. Unicode NFKC: full-width forms become ASCII (`ＩＰＨＯＮＥ，` -> `IPHONE,`), the
   ideographic space becomes a space, ligatures and compatibility characters are unfolded.
4. Lower case (`str.lower`), then NFKC again if lowering left a non-NFKC string (rare, e.g.
   `İ`), so the result is a fixed point: `normalize(normalize(x)) == normalize(x)`.
5. Runs of whitespace collapse to one space; leading and trailing whitespace is removed.
"""

import re
import unicodedata

# Categories of invisible characters that become a space (step 2), like whitespace.
_SEPARATOR_CATEGORIES = frozenset({'Cc', 'Cf', 'Cs', 'Co', 'Cn'})
_REPLACEMENT_CHAR = '\ufffd'
# Invisible characters that work inside a word: dropped, so the word stays whole (step 2).
_IN_WORD_INVISIBLE = frozenset(
  '\u00ad\u200c\u200d\u2060'
  + ''.join(map(chr, range(0xFE00, 0xFE10)))
  + ''.join(map(chr, range(0xE0100, 0xE01F0)))
)
_VARIATION_SELECTOR_RE = re.compile('[\ufe00-\ufe0f\U000e0100-\U000e01ef]')


def _clean(text: str) -> str:
  """Maps invisible characters to spaces, or drops those that act inside a word (step 2)."""
  out = []
  for ch in text:
    if ch in _IN_WORD_INVISIBLE:
      continue
    if ch.isspace() or ch == _REPLACEMENT_CHAR or unicodedata.category(ch) in _SEPARATOR_CATEGORIES:
      out.append(' ')
    else:
      out.append(ch)
  return ''.join(out)


def normalize(text: str | bytes) -> str:
  """Returns the canonical form of `text` (see the module docstring for the policy).

  Args:
    text: a query or title; `bytes` are decoded as UTF-8, invalid sequences separating
      words like other invisible characters.

  Returns:
    NFKC, lower-cased text without control or format characters, single-spaced,
    stripped. Empty or whitespace-only input gives `''`.

  Raises:
    TypeError: if `text` is neither `str` nor `bytes`.
  """
  if isinstance(text, bytes | bytearray):
    text = bytes(text).decode('utf-8', errors='replace')
  elif not isinstance(text, str):
    raise TypeError(f'normalize expects str or bytes, got {type(text).__name__}')
  # Fast path: `isprintable` is False for every character step 2 touches except the
  # plain space and the variation selectors, so the per-character loop only runs on the
  # rare strings that need it.
  if not text.isprintable() or _REPLACEMENT_CHAR in text or _VARIATION_SELECTOR_RE.search(text):
    text = _clean(text)
  text = unicodedata.normalize('NFKC', text).lower()
  if not unicodedata.is_normalized('NFKC', text):
    text = unicodedata.normalize('NFKC', text)
  return ' '.join(text.split())
