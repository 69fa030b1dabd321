"""Relevance control: `(ANN results) AND (brand: X) AND (category: Y)` (SPEC 7.4).

Open-source ScaNN compiles its restricts out, so the filter runs around the index:

* `retrieval.catalogue.InvertedIndex`: attribute value -> sorted catalogue rows. A
  `Filter` (values ORed within a field, fields ANDed) becomes the sorted rows that
  satisfy it.
* `FilteredSearch.search`: with no filter, the index's top-k. With a filter whose
  matching subset is small (<= `exact_max_rows`), exact scoring of the query against
  the subset's embeddings (a gather and one matrix-vector product): exact, and cheaper
  than any ANN call that would have to over-fetch ~k N / n rows to find k of them. With a
  large subset, over-fetch from the ANN index, fetch = margin * k * N / n (the expected
  need at selectivity n/N), keep the rows in the subset, and grow the fetch 4x until k
  survive or the fetch covers the index.
* The default threshold, `EXACT_MAX_VALUES` // d rows, is the crossover measured by
  `benchmarks/bench_filters.py` (ScaNN tree-AH with exact re-ranking vs exact subset
  scoring, 2 CPU cores): see the numbers next to it.

* Modes (`MODES`): `STRICT` is the paper's filter, the satisfying rows only, so a list is
  shorter than k when fewer than k rows satisfy. `BACKFILL` (the default) puts those same
  rows first and fills the list with the best rows that do not satisfy the filter, so it
  is k long whenever the catalogue holds k rows: the index's top (k - m + n) rows (m
  satisfying rows found, n in the subset) hold at least k - m outside the subset, in one
  call; exact scoring of the rows outside the subset if the index answers fewer rows than
  asked (an approximate index may). `FilteredResult.num_satisfying` says where the
  satisfying prefix ends.

A query with no restricted term is not filtered. Every result says what applied:
`FilteredResult.strategy` ('none', 'exact_subset', 'overfetch', 'table') and the `Filter`
itself.

`rank` is relevance control of one query as the Searcher calls it, once per query: the
query is understood, its table row (if the table had one) kept where it satisfies the
filter, and otherwise the query is encoded and searched under the filter (see
`serving/search.py` for the whole path).
"""

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from make_jax.retrieval import catalogue as catalogue_lib
from make_jax.retrieval import topk
from make_jax.serving import ann
from make_jax.serving import query_understanding as qu
from make_jax.text import preprocess

# Exact subset scoring up to this many embedding values (rows x d) gathered, over-fetching
# beyond. Measured by `python -m benchmarks.bench_filters` (k=10, ScaNN searching half its
# leaves, 2 CPU cores shared with other jobs), median ms per query, exact vs over-fetch:
#   N=100k, d=64:  1k rows 0.09 vs 1.05, 5k 0.28 vs 1.15, 10k 0.57 vs 1.86
#   N=50k, d=256:  1.5k rows 0.29 vs 0.91, 2.5k 0.61 vs 1.38, 5k 1.71 vs 1.38
# Exact cost grows with n d; over-fetch costs about one ANN call (~1-2 ms) once the subset
# is a few percent of N; they meet near 1M values (16k rows at d=64, 4k at d=256). Exact
# is also exact, where over-fetching keeps only the index's own recall.
EXACT_MAX_VALUES = 2**20
OVERFETCH_MARGIN = 2.0  # Fetch this many times the rows the subset's share predicts.
OVERFETCH_GROWTH = 4  # Factor by which the fetch grows while fewer than k survive.

# How relevance control completes a list (module docstring): the one vocabulary of the
# Searcher, the server's `relevance_mode` parameter, the tools' flags and the served rows.
BACKFILL = 'backfill'  # Satisfying rows first, then the best of the rest: k long.
STRICT = 'strict'  # The paper's AND filter: satisfying rows only (may be fewer than k).
MODES = (BACKFILL, STRICT)
DEFAULT_MODE = BACKFILL

# Which path answered a query (`Ranked.path`), and why not the table (`fallback_reason`).
PATH_TABLE = 'table'
PATH_ONLINE = 'online'
# No word of the query is in the model's vocabulary: nothing is searched, no result is
# returned (an embedding of [UNK]s would rank arbitrary products with confidence).
PATH_NONE = 'none'
NO_KNOWN_WORDS = 'no_known_words'


def check_mode(mode: str) -> str:
  """`mode` if it is one of `MODES`; else ValueError."""
  if mode not in MODES:
    raise ValueError(f'relevance mode must be one of {", ".join(MODES)}; got {mode!r}')
  return mode


@dataclasses.dataclass(frozen=True)
class Filter:
  """Restricted attribute values: ORed within a field, ANDed across fields."""

  clauses: tuple[tuple[str, tuple[str, ...]], ...] = ()

  @classmethod
  def from_matches(cls, matches: Sequence[qu.Match]) -> 'Filter':
    """The filter of the values query understanding found (field order of first match)."""
    by_field: dict[str, list[str]] = {}
    for m in matches:
      values = by_field.setdefault(m.field, [])
      if m.value not in values:
        values.append(m.value)
    return cls(tuple((f, tuple(v)) for f, v in by_field.items()))

  @classmethod
  def from_pairs(cls, pairs: Sequence[tuple[str, str]]) -> 'Filter':
    """From (field, value) pairs."""
    return cls.from_matches([qu.Match(f, v, v) for f, v in pairs])

  def __bool__(self) -> bool:
    return bool(self.clauses)

  def as_dict(self) -> dict[str, list[str]]:
    """field -> values (JSON-friendly)."""
    return {f: list(v) for f, v in self.clauses}


def is_member(sorted_rows: np.ndarray, rows: np.ndarray) -> np.ndarray:
  """Boolean mask: which of `rows` are in `sorted_rows` (sorted, unique)."""
  if not len(sorted_rows):
    return np.zeros(rows.shape, bool)
  pos = np.minimum(np.searchsorted(sorted_rows, rows), len(sorted_rows) - 1)
  return sorted_rows[pos] == rows


@dataclasses.dataclass(frozen=True)
class FilteredResult:
  """Top rows of one query after relevance control."""

  rows: np.ndarray  # int64 [<=k] catalogue rows, best first.
  scores: np.ndarray  # float32 [<=k] inner products.
  strategy: str  # 'none' (no filter), 'exact_subset', 'overfetch' or 'table'.
  candidates: int  # Rows that satisfy the filter (catalogue size when unfiltered).
  fetched: int  # Rows asked of the ANN index (0 for exact subset scoring alone).
  num_satisfying: int  # rows[:num_satisfying] satisfy the filter; the rest are backfill.

  @property
  def satisfies(self) -> np.ndarray:
    """bool [len(rows)]: whether each row satisfies the filter."""
    return np.arange(len(self.rows)) < self.num_satisfying


class FilteredSearch:
  """Searches an `AnnIndex` under a `Filter`, by exact subset scoring or over-fetching."""

  def __init__(
    self,
    index: ann.AnnIndex,
    embeddings: np.ndarray,
    inverted: catalogue_lib.InvertedIndex,
    *,
    exact_max_rows: int | None = None,
    overfetch_margin: float = OVERFETCH_MARGIN,
  ):
    """Args:
    index: the ANN index over `embeddings` (rows = catalogue rows).
    embeddings: float32 [N, d] product embeddings (np.memmap is fine), for exact scoring.
    inverted: the inverted index of the same N rows.
    exact_max_rows: subsets up to this size are scored exactly; larger ones over-fetch.
      None: EXACT_MAX_VALUES // d.
    overfetch_margin: multiple of the expected fetch asked at first.
    """
    if index.size != embeddings.shape[0] or inverted.num_rows != embeddings.shape[0]:
      raise ValueError(
        f'index ({index.size}), embeddings ({embeddings.shape[0]}) and inverted index '
        f'({inverted.num_rows}) must cover the same rows'
      )
    self.index = index
    self.embeddings = embeddings
    self.inverted = inverted
    if exact_max_rows is None:
      exact_max_rows = EXACT_MAX_VALUES // max(1, embeddings.shape[1])
    self.exact_max_rows = exact_max_rows
    self.overfetch_margin = overfetch_margin

  @property
  def size(self) -> int:
    return self.embeddings.shape[0]

  def exact(self, query: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of `query` [d] among `rows` (the reference for the filtered path)."""
    if not len(rows):
      return np.zeros(0, np.int64), np.zeros(0, np.float32)
    # einsum, not `@`: BLAS gemv goes multi-threaded past ~8k rows and then costs ~30 ms
    # on a busy 2-core host; the single-threaded loop is ~0.3 ms for 10k x 64.
    scores = np.einsum('ij,j->i', np.asarray(self.embeddings[rows], np.float32), query)
    idx, vals = topk.top_k(scores[None], k)
    return rows[idx[0]], vals[0]

  def search(
    self, query: np.ndarray, filt: Filter, k: int, *, mode: str = DEFAULT_MODE
  ) -> FilteredResult:
    """Top-k rows of `query` [d] (L2-normalised) under `filt`, completed as `mode` says."""
    check_mode(mode)
    allowed = self.inverted.rows(filt.clauses)
    found = self._satisfying(query, allowed, k)
    return found if mode == STRICT else self._backfill(query, allowed, found, k)

  def _satisfying(self, query: np.ndarray, allowed: np.ndarray | None, k: int) -> FilteredResult:
    """Top-k rows among `allowed` (None: all rows): the strict filter."""
    n = self.size
    if allowed is None:
      rows, scores = self.index.search(np.asarray(query, np.float32)[None], k)
      return FilteredResult(rows[0], scores[0], 'none', n, k, len(rows[0]))
    if len(allowed) <= self.exact_max_rows:
      rows, scores = self.exact(query, allowed, k)
      return FilteredResult(rows, scores, 'exact_subset', len(allowed), 0, len(rows))
    fetch = min(n, math.ceil(self.overfetch_margin * k * n / len(allowed)))
    while True:
      rows, scores = self.index.search(np.asarray(query, np.float32)[None], fetch)
      keep = is_member(allowed, rows[0])
      if keep.sum() >= k or fetch >= n:
        break
      fetch = min(n, fetch * OVERFETCH_GROWTH)
    rows, scores = rows[0][keep][:k], scores[0][keep][:k]
    return FilteredResult(rows, scores, 'overfetch', len(allowed), fetch, len(rows))

  def _backfill(
    self, query: np.ndarray, allowed: np.ndarray | None, found: FilteredResult, k: int
  ) -> FilteredResult:
    """`found` (satisfying rows), then the best rows outside `allowed`, to min(k, N) rows."""
    need = min(k, self.size) - len(found.rows)
    if allowed is None or need <= 0:
      return found
    # At most len(allowed) of the index's top rows are in the subset.
    fetch = min(self.size, need + len(allowed))
    rows, scores = self.index.search(np.asarray(query, np.float32)[None], fetch)
    outside = ~is_member(allowed, rows[0])
    rows, scores = rows[0][outside][:need], scores[0][outside][:need]
    if len(rows) < need:  # The index answered fewer rows than asked.
      rest = np.setdiff1d(np.arange(self.size), allowed, assume_unique=True)
      rows, scores = self.exact(query, rest, need)
    return dataclasses.replace(
      found,
      rows=np.concatenate([found.rows, rows]),
      scores=np.concatenate([found.scores, scores]),
      fetched=found.fetched + fetch,
    )

  def filter_ranked(self, rows: np.ndarray, scores: np.ndarray, filt: Filter, k: int):
    """Keeps the (already ranked) `rows` that satisfy `filt`, at most k: the table path.

    Strict only: a table that holds fewer than k satisfying rows is the Searcher's cue to
    answer online, where `search` completes the list in either mode.
    """
    allowed = self.inverted.rows(filt.clauses)
    if allowed is None:
      return FilteredResult(rows[:k], scores[:k], 'none', self.size, 0, len(rows[:k]))
    keep = is_member(allowed, rows)
    rows, scores = rows[keep][:k], scores[keep][:k]
    return FilteredResult(rows, scores, 'table', len(allowed), 0, len(rows))


class RelevanceControl:
  """Query understanding + inverted index of one catalogue's restricted attributes."""

  def __init__(self, columns: Mapping[str, Sequence[str]]):
    """columns: restricted field -> value of every catalogue row."""
    self.fields = tuple(columns)
    self.inverted = catalogue_lib.InvertedIndex(columns)
    self.vocabulary = qu.AttributeVocabulary(self.inverted.value_counts(), self.inverted.consistent)

  @classmethod
  def of_catalogue(cls, catalogue: catalogue_lib.Catalogue) -> 'RelevanceControl':
    """Over the catalogue's restricted fields (`query_understanding.restricted_fields`)."""
    fields = qu.restricted_fields(catalogue.dataset, catalogue.attributes)
    return cls({f: catalogue.attributes[f] for f in fields})

  def understand(self, query: str, normalized: str | None = None) -> tuple[Filter, list[qu.Match]]:
    """The filter a query's restricted terms ask for, and the matches that made it.

    normalized: the query already normalised (`preprocess.Query.normalized`), if at hand.
    """
    matches = self.vocabulary.parse(query, normalized)
    return Filter.from_matches(matches), matches


@dataclasses.dataclass(frozen=True)
class Ranked:
  """One query's products after relevance control, and how they were found."""

  filters: dict[str, list[str]]  # The filter that applied: field -> values (ORed).
  matched_terms: dict[str, str]  # 'field: value' -> the query words that named it.
  found: FilteredResult | None  # None: nothing was searched (path 'none').
  path: str  # PATH_TABLE, PATH_ONLINE or PATH_NONE.
  fallback_reason: str | None  # Why the table did not answer: 'table_miss', ...
  latency: dict[str, float]  # Seconds per stage: 'understand', 'encode', 'search'.


def rank(
  relevance: RelevanceControl,
  filtered: FilteredSearch,
  query: preprocess.Query,
  k: int,
  *,
  mode: str = DEFAULT_MODE,
  use_filters: bool = True,
  table_hit: tuple[np.ndarray, np.ndarray] | None = None,
  embedding: np.ndarray | None = None,
  encode: Callable[[preprocess.Query], np.ndarray] | None = None,
) -> Ranked:
  """Relevance control of one prepared query: understand, then the table row or a search.

  Args:
    relevance: query understanding and the inverted index.
    filtered: the index and embeddings it searches.
    query: the query, prepared once (`TextPreprocessor.query`).
    k: results wanted (>= 1).
    mode: how a filtered list is completed (`MODES`).
    use_filters: False skips query understanding (the unfiltered ablation).
    table_hit: the table's (catalogue rows, scores) of the query, best first; None: a miss.
    embedding: the query's embedding, when a batch has encoded it already.
    encode: query -> L2-normalised embedding [d], for a query the table does not answer.

  The table row answers (path 'table') when it holds k products that satisfy the filter;
  a row with fewer goes online, in backfill mode also without a filter (the table holds
  only its own top-K, so the best satisfying products beyond it, and the rest to backfill
  with, are the online search's). A query without a known word is answered with nothing.

  Raises:
    ValueError: k < 1 or an unknown mode.
    LookupError: the query must be searched online and neither `embedding` nor `encode`
      is given.
  """
  if k < 1:
    raise ValueError(f'k must be >= 1; got {k}')
  check_mode(mode)
  t0 = time.perf_counter()
  filt, matches = (
    relevance.understand(query.text, query.normalized) if use_filters else (Filter(), [])
  )
  latency = {'understand': time.perf_counter() - t0}
  said = (filt.as_dict(), {f'{m.field}: {m.value}': m.text for m in matches})
  if not query.known_words:
    return Ranked(*said, None, PATH_NONE, NO_KNOWN_WORDS, latency)
  reason = 'table_miss'
  if table_hit is not None:
    found = filtered.filter_ranked(table_hit[0], table_hit[1], filt, k)
    if len(found.rows) == k or not (filt or mode == BACKFILL):
      return Ranked(*said, found, PATH_TABLE, None, latency)
    reason = 'table_short_after_filter' if filt else 'table_short'
  t2 = time.perf_counter()
  if embedding is None:
    if encode is None:
      raise LookupError(f'{query.text!r} is not in the table and no online encoder is set')
    embedding = encode(query)
  latency['encode'] = time.perf_counter() - t2
  t2 = time.perf_counter()
  found = filtered.search(embedding, filt, k, mode=mode)
  latency['search'] = time.perf_counter() - t2
  return Ranked(*said, found, PATH_ONLINE, reason, latency)
