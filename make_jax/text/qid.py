"""Query id (qid), SPEC section 2 step 4: a stable 32-bit hash of the sorted words.

Why: the qid keys the offline query -> products table (SPEC 7.3); a table built by one
process is read by another on another machine, so the hash must never depend on the
process (Python's `hash` is salted per process by PYTHONHASHSEED), the machine or the
Python version.

Definition (fixed; changing it invalidates every stored table):

    qid(words) = int.from_bytes(blake2b(b'\\x00'.join(w.encode('utf-8') for w in
                                        sorted(words)), digest_size=4).digest(), 'big')

- `sorted` is Python's code-point order, the same everywhere; the words are sorted here
  again so the qid is independent of word order whatever the caller passes.
- NUL separates words: normalisation removes control characters, so NUL cannot occur in a
  word and distinct word lists give distinct byte strings (`['ab']` vs `['a', 'b']`).
- BLAKE2b (RFC 7693, stdlib `hashlib`) with a 4-byte digest; big-endian to an integer in
  [0, 2**32). Duplicates are kept: `red red dress` and `red dress` differ.
- The empty word list (empty, whitespace-only or punctuation-only text) has the qid
  `EMPTY_QID`, the digest of the empty string.
"""

import hashlib
from collections.abc import Sequence

_SEPARATOR = b'\x00'


def qid_of_words(words: Sequence[str]) -> int:
  """Returns the uint32 qid (as a Python int) of a word list; word order is irrelevant.

  Raises:
    ValueError: if a word contains NUL, the separator (normalised words never do).
  """
  encoded = []
  for word in sorted(words):
    if '\x00' in word:
      raise ValueError(f'a word contains NUL, the qid separator: {word!r}')
    encoded.append(word.encode('utf-8'))
  digest = hashlib.blake2b(_SEPARATOR.join(encoded), digest_size=4).digest()
  return int.from_bytes(digest, 'big')


# The qid of text without words (SPEC 2: a defined constant, 0x1271cf25).
EMPTY_QID: int = qid_of_words(())
