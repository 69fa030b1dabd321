"""`Searcher`: query text -> top-k products, by the offline table or online (SPEC 7.3-7.5).

The path of one query (its text is normalised, segmented and checked against the
vocabulary once, by `TextPreprocessor.query`; every stage below reads that `Query`). The
Searcher calls each serving module on it once: the table, then relevance control
(`filters.rank`), which calls the encoder and the index only when it must search.

1. Table lookup (`table.TableLookup`): the query's words (`TextPreprocessor.words`; the
   offline job keyed each logged query by its sorted words, and its qid) find the
   offline top-K row, mapped to catalogue rows. A query with no known word is not looked
   up.
2. Query understanding (`filters.RelevanceControl`): the restricted attribute values the
   query names become a `Filter` (empty when it names none).
3. No word of the query is known to the model: answered as such (path 'none'), with no
   product.
4. Table path: the row's products are kept in rank order when they satisfy the filter.
   If a filter leaves fewer than k of them, the online path answers instead
   (`fallback_reason='table_short_after_filter'`), as it does in backfill mode for a table
   row shorter than k (`'table_short'`): the table holds only its own top-K, so the best
   satisfying products beyond it, and the rest to backfill with, are the online path's.
5. Online path (a miss): the query is encoded (`encoder.BatchingQueryEncoder`, batched
   with concurrent requests) and searched with the filter (`filters.FilteredSearch`:
   exact over a small matching subset, over-fetch and filter over a large one), the list
   completed as the relevance mode says (`filters.MODES`: `backfill`, the default, fills
   it to k with the best products that do not satisfy the filter; `strict` does not).

So in both modes the products that satisfy the filter are the same, first and in the
same order; each `Result` says whether it satisfies the filter. Each `Answer` says which
path served it, the strategy, the mode, the filter that applied (with the query words
that asked for it) and how long each stage took.
"""

import dataclasses
import time
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from make_jax.retrieval import catalogue as catalogue_lib
from make_jax.serving import filters
from make_jax.serving import table as table_lib
from make_jax.text import preprocess

PATH_TABLE = filters.PATH_TABLE
PATH_ONLINE = filters.PATH_ONLINE
PATH_NONE = filters.PATH_NONE
NO_KNOWN_WORDS = filters.NO_KNOWN_WORDS
_NOT_LOOKED_UP = object()  # `_search`'s `hit` when the table has not been asked yet.


class QueryEncoder(Protocol):
  """What the online path needs of an encoder (`BatchingQueryEncoder` is one)."""

  def encode(self, query: preprocess.Query) -> np.ndarray:
    """L2-normalised embedding float32 [d] of one query."""
    ...

  def encode_now(self, queries: Sequence[preprocess.Query]) -> np.ndarray:
    """Embeddings float32 [B, d] of many queries (batch jobs)."""
    ...


@dataclasses.dataclass(frozen=True)
class Result:
  """One retrieved product."""

  product_id: int
  title: str
  score: float
  title_weight: float | None  # Modal Adaptation weights of the product (None if unknown).
  image_weight: float | None
  satisfies_filter: bool  # False for a backfilled product (True for all when unfiltered).


@dataclasses.dataclass(frozen=True)
class Answer:
  """Top-k products of one query and how they were found."""

  query: str
  k: int
  path: str  # 'table', 'online', or 'none' (no known word: no result).
  fallback_reason: str | None  # Why the online path answered: 'table_miss', ...; or
  # 'no_known_words' (path 'none').
  strategy: str  # How the filter ran: 'none', 'table', 'exact_subset', 'overfetch'.
  relevance_mode: str  # 'backfill' or 'strict' (`filters.MODES`).
  filters: dict[str, list[str]]  # field -> values that applied (ORed; fields ANDed).
  matched_terms: dict[str, str]  # 'field: value' -> the query words that named it.
  candidates: int  # Products that satisfy the filter.
  results: list[Result]
  latency_ms: dict[str, float]  # Per stage and 'total'.

  def as_json(self) -> dict[str, object]:
    """A JSON-serialisable dict."""
    return dataclasses.asdict(self)


class Searcher:
  """The served search: relevance control over the table path or the online path."""

  def __init__(
    self,
    catalogue: catalogue_lib.Catalogue,
    preprocessor: preprocess.TextPreprocessor,
    filtered: filters.FilteredSearch,
    relevance: filters.RelevanceControl,
    *,
    encoder: QueryEncoder | None = None,
    table: table_lib.TableLookup | None = None,
    modal_weights: np.ndarray | None = None,
    relevance_mode: str = filters.DEFAULT_MODE,
  ):
    """Args:
    catalogue: products by row (the rows of the index and the embeddings).
    preprocessor: gives the words that key the table (the training run's, with its
      domain dictionary).
    filtered: the index, embeddings and inverted index, with its strategies.
    relevance: query understanding over the same catalogue's attributes.
    encoder: online query encoder; None serves table hits only (misses raise).
    table: offline query words -> top-K table; None sends every query online.
    modal_weights: float32 [N, 2] (title, image) weights of each product, or None.
    relevance_mode: how a filtered list is completed unless a search says otherwise
      (`filters.MODES`).
    """
    if len(catalogue) != filtered.size:
      raise ValueError(f'catalogue has {len(catalogue)} rows, the index {filtered.size}')
    if modal_weights is not None and modal_weights.shape != (len(catalogue), 2):
      raise ValueError(f'modal_weights must be [{len(catalogue)}, 2]; got {modal_weights.shape}')
    self.catalogue = catalogue
    self.preprocessor = preprocessor
    self.filtered = filtered
    self.relevance = relevance
    self.encoder = encoder
    self.table = table
    self.modal_weights = modal_weights
    self.relevance_mode = filters.check_mode(relevance_mode)

  def search(
    self, query: str, k: int, *, use_filters: bool = True, relevance_mode: str | None = None
  ) -> Answer:
    """Top-k products of `query` (raises ValueError for k < 1 or an unknown mode).

    use_filters=False skips relevance control (the unfiltered ablation).
    relevance_mode: `filters.MODES`; None: the Searcher's.
    """
    mode = self.relevance_mode if relevance_mode is None else relevance_mode
    return self._search(self.preprocessor.query(query), k, use_filters, mode)

  def search_batch(
    self,
    queries: Sequence[str],
    k: int,
    *,
    use_filters: bool = True,
    relevance_mode: str | None = None,
  ) -> list[Answer]:
    """Answers of many queries; the online ones are encoded together (batch jobs)."""
    mode = filters.check_mode(self.relevance_mode if relevance_mode is None else relevance_mode)
    prepared = [self.preprocessor.query(q) for q in queries]
    hits = [self._table_rows(q) if q.known_words else None for q in prepared]
    misses = [i for i, q in enumerate(prepared) if q.known_words and hits[i] is None]
    emb = {}
    if misses and self.encoder is not None:
      encoded = self.encoder.encode_now([prepared[i] for i in misses])
      emb = dict(zip(misses, encoded, strict=True))
    return [
      self._search(q, k, use_filters, mode, hit=hits[i], embedding=emb.get(i))
      for i, q in enumerate(prepared)
    ]

  # --- Paths -----------------------------------------------------------------------------

  def _table_rows(self, query: preprocess.Query) -> tuple[np.ndarray, np.ndarray] | None:
    """The table's (rows, scores) of the query's words, or None (a miss)."""
    if self.table is None:
      return None
    hit = self.table.lookup(query.words)
    if hit is None:
      return None
    ids, scores = hit
    rows = self.catalogue.rows_of_ids(ids)
    known = rows >= 0  # Products gone from the catalogue since the table was built.
    return rows[known], np.asarray(scores, np.float32)[known]

  def _search(
    self,
    query: preprocess.Query,
    k: int,
    use_filters: bool,
    mode: str,
    *,
    hit: tuple[np.ndarray, np.ndarray] | None | object = _NOT_LOOKED_UP,
    embedding: np.ndarray | None = None,
  ) -> Answer:
    """One query's answer; `hit` and `embedding` when a batch has looked it up already.

    Each serving module on the path is called once: the table (`_table_rows`), then
    relevance control (`filters.rank`), which encodes the query only if it must search.
    """
    t0 = time.perf_counter()
    if hit is _NOT_LOOKED_UP:
      hit = self._table_rows(query) if query.known_words else None
    table_s = time.perf_counter() - t0
    ranked = filters.rank(
      self.relevance,
      self.filtered,
      query,
      k,
      mode=mode,
      use_filters=use_filters,
      table_hit=hit,
      embedding=embedding,
      encode=None if self.encoder is None else self.encoder.encode,
    )
    latency = {'table': table_s, **ranked.latency, 'total': time.perf_counter() - t0}
    found = ranked.found
    return Answer(
      query=query.text,
      k=k,
      path=ranked.path,
      fallback_reason=ranked.fallback_reason,
      strategy='none' if found is None else found.strategy,
      relevance_mode=mode,
      filters=ranked.filters,
      matched_terms=ranked.matched_terms,
      candidates=0 if found is None else int(found.candidates),
      results=[] if found is None else self._results(found),
      latency_ms={name: round(1e3 * s, 3) for name, s in latency.items()},
    )

  def _results(self, found: filters.FilteredResult) -> list[Result]:
    out = []
    for i, (row, score) in enumerate(zip(found.rows.tolist(), found.scores.tolist(), strict=True)):
      w = None if self.modal_weights is None else self.modal_weights[row]
      out.append(
        Result(
          product_id=int(self.catalogue.ids[row]),
          title=self.catalogue.titles[row],
          score=float(score),
          title_weight=None if w is None else float(w[0]),
          image_weight=None if w is None else float(w[1]),
          satisfies_filter=i < found.num_satisfying,  # As `found.satisfies` says.
        )
      )
    return out
