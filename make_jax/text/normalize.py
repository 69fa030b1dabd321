"""Text normalisation, SPEC section 2 step 1: one canonical form for queries and titles.

Why: the same query typed on a phone (full-width letters and punctuation, an ideographic
space, a stray tab or zero-width space) and on a desktop must become the same words, the
same qid and the same token ids. The policy, in order:

1. `bytes` input is decoded as UTF-8; invalid byte sequences become U+FFFD, which step 4
   drops (so `b'red\\xff dress'` -> `'red dress'`). `str` input is used as is.
2. Unicode NFKC: full-width forms become ASCII (`ＩＰＨＯＮＥ，` -> `IPHONE,`), the
   ideographic space becomes a space, ligatures and compatibility characters are unfolded.
3. Lower case (`str.lower`), then NFKC again if lowering left a non-NFKC string (rare, e.g.
   `İ`), so the result is a fixed point: `normalize(normalize(x)) == normalize(x)`.
4. Whitespace controls (tab, newline, carriage return, vertical tab, form feed) and every
   Unicode separator become a space; other control (Cc), format (Cf: zero-width space,
   BOM, soft hyphen, joiners), surrogate (Cs), private-use (Co) and unassigned (Cn)
   characters, and U+FFFD, are dropped. This is BERT's `_clean_text` policy, extended.
5. Runs of whitespace collapse to one space; leading and trailing whitespace is removed.
"""

import unicodedata

# Categories of characters deleted outright (step 4). Separators (Z*) and whitespace
# controls are turned into spaces instead, so that they still split words.
_DROP_CATEGORIES = frozenset({'Cc', 'Cf', 'Cs', 'Co', 'Cn'})
_REPLACEMENT_CHAR = '\ufffd'


def _clean(text: str) -> str:
  """Maps whitespace-like characters to spaces and drops invisible ones (step 4)."""
  out = []
  for ch in text:
    if ch.isspace():
      out.append(' ')
    elif ch == _REPLACEMENT_CHAR or unicodedata.category(ch) in _DROP_CATEGORIES:
      continue
    else:
      out.append(ch)
  return ''.join(out)


def normalize(text: str | bytes) -> str:
  """Returns the canonical form of `text` (see the module docstring for the policy).

  Args:
    text: a query or title; `bytes` are decoded as UTF-8 with invalid sequences dropped.

  Returns:
    NFKC, lower-cased text without control characters, single-spaced, stripped. Empty
    or whitespace-only input gives `''`.

  Raises:
    TypeError: if `text` is neither `str` nor `bytes`.
  """
  if isinstance(text, bytes | bytearray):
    text = bytes(text).decode('utf-8', errors='replace')
  elif not isinstance(text, str):
    raise TypeError(f'normalize expects str or bytes, got {type(text).__name__}')
  text = unicodedata.normalize('NFKC', text).lower()
  if not unicodedata.is_normalized('NFKC', text):
    text = unicodedata.normalize('NFKC', text)
  # Fast path: `isprintable` is False for every character step 4 touches except the
  # plain space, so the per-character loop only runs on the rare strings that need it.
  if not text.isprintable() or _REPLACEMENT_CHAR in text:
    text = _clean(text)
  return ' '.join(text.split())
