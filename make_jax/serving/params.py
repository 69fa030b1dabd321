"""Validation of `/search` parameters, from the raw query string, with a message per error.

Why not the web framework's parsing: it decodes invalid UTF-8 into U+FFFD silently, so a
broken query would be searched as something the user never typed. Here the raw bytes of
the query string are split, percent-decoded and strictly UTF-8 decoded, and every bad
input becomes a `BadRequest` with a message (the server answers it with a 400):

  missing, repeated, empty or whitespace-only `q`; invalid UTF-8 anywhere; control
  characters (Unicode category Cc: NUL, tab, newline, DEL, C1) in `q`; `q` longer than
  `max_query_chars`; `k` repeated, not a decimal integer, or outside [1, max_k];
  `relevance_mode` repeated or not one of `filters.MODES` (absent: the searcher's own).

Unknown parameters are ignored.
"""

import dataclasses
import unicodedata
import urllib.parse

from make_jax.serving import filters
from make_jax.text import preprocess

MAX_QUERY_CHARS = preprocess.MAX_QUERY_CHARS
MAX_K = 100
DEFAULT_K = 10


class BadRequest(ValueError):
  """A client error; its message is returned to the client."""


@dataclasses.dataclass(frozen=True)
class SearchParams:
  """Validated parameters of one search."""

  q: str
  k: int
  relevance_mode: str | None = None  # `filters.MODES`; None: the searcher's.


def parse_query_string(raw: bytes) -> dict[str, list[str]]:
  """name -> values of an application/x-www-form-urlencoded query string (strict UTF-8)."""
  out: dict[str, list[str]] = {}
  for part in raw.split(b'&'):
    if not part:
      continue
    name, _, value = part.partition(b'=')
    try:
      name_s = urllib.parse.unquote_to_bytes(name.replace(b'+', b' ')).decode('utf-8')
      value_s = urllib.parse.unquote_to_bytes(value.replace(b'+', b' ')).decode('utf-8')
    except UnicodeDecodeError as e:
      raise BadRequest(
        f'the query string is not valid UTF-8 (byte {e.start} of a parameter)'
      ) from e
    out.setdefault(name_s, []).append(value_s)
  return out


def query_problem(q: str, max_query_chars: int = MAX_QUERY_CHARS) -> str | None:
  """Why `q` cannot be searched ('is empty', 'contains control characters: U+0000', 'is
  whitespace only', 'has N characters; the limit is M'), or None. The one rule of every
  entry point: the server's `q` and each line of `tools.search`."""
  if not q:
    return 'is empty'
  bad = sorted({f'U+{ord(c):04X}' for c in q if unicodedata.category(c) == 'Cc'})
  if bad:
    return f'contains control characters: {", ".join(bad)}'
  if not q.strip():
    return 'is whitespace only'
  if len(q) > max_query_chars:
    return f'has {len(q)} characters; the limit is {max_query_chars}'
  return None


def _one(params: dict[str, list[str]], name: str) -> str | None:
  values = params.get(name)
  if values is None:
    return None
  if len(values) > 1:
    raise BadRequest(f'parameter {name!r} is given {len(values)} times; give it once')
  return values[0]


def parse_search(
  raw: bytes,
  *,
  max_query_chars: int = MAX_QUERY_CHARS,
  max_k: int = MAX_K,
  default_k: int = DEFAULT_K,
) -> SearchParams:
  """Validated parameters of a `/search` query string; raises `BadRequest` (module doc)."""
  params = parse_query_string(raw)
  q = _one(params, 'q')
  if q is None:
    raise BadRequest("missing parameter 'q' (the query text): /search?q=red+shirt")
  problem = query_problem(q, max_query_chars)
  if problem:
    raise BadRequest(f"parameter 'q' {problem}")
  k_text = _one(params, 'k')
  if k_text is None:
    k = default_k
  else:
    digits = k_text.strip()
    if not (digits.isascii() and digits.isdigit()):
      raise BadRequest(f"parameter 'k' must be an integer in [1, {max_k}]; got {k_text[:20]!r}")
    if len(digits) > 9 or not 1 <= int(digits) <= max_k:
      raise BadRequest(f"parameter 'k' must be in [1, {max_k}]; got {digits[:20]}")
    k = int(digits)
  mode = _one(params, 'relevance_mode')
  if mode is not None and mode not in filters.MODES:
    raise BadRequest(
      f"parameter 'relevance_mode' must be one of {', '.join(filters.MODES)}; got {mode[:20]!r}"
    )
  return SearchParams(q=q, k=k, relevance_mode=mode)
