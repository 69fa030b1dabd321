"""The interfaces serving searches through, and their exact in-memory implementations.

Serving reads three things that the offline half builds (SPEC 7.1-7.3): product
embeddings, an ANN index over them and the qid -> top-K table. Serving depends only on
the two small protocols below, so the ScaNN index and the memory-mapped table plug in
through thin adapters, and the exact implementations here serve small catalogues and
are the reference that the approximate ones are measured against.

Rows: the ANN index answers in *rows* of the exported embedding matrix (the order of the
exported product ids, which is also the catalogue's row order in serving); the table
answers in product ids, as the offline job wrote them. `RowIndex` puts the export's ScaNN
index (`export.index.Index`, whose docids are product ids) behind `AnnIndex`, and
`ExportTable` puts the export's memory-mapped table (`export.query_table.QueryTable`)
behind `QueryTable`.

The table is looked up by the query's words, not its 32-bit qid: two word sequences may
share a qid, and the export table compares the stored key. `DictTable` (tests, small
tables) is keyed by qid and hashes the words it is given.
"""

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from make_jax.retrieval import catalogue as catalogue_lib
from make_jax.retrieval import topk
from make_jax.text import qid as qid_lib


@runtime_checkable
class AnnIndex(Protocol):
  """Maximum inner product search over the exported product embeddings."""

  @property
  def size(self) -> int:
    """Number of indexed rows."""
    ...

  def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of each query: (rows int64 [B, k'], scores float32 [B, k']), best first.

    k' = min(k, size). queries: float32 [B, d], L2-normalised.
    """
    ...


@runtime_checkable
class QueryTable(Protocol):
  """The offline query -> top-K (product ids, scores) table."""

  def lookup(self, words: Sequence[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """(product ids int64 [K], scores float32 [K]) best first, or None on a miss.

    words: the query's words (`TextPreprocessor.words`), in any order.
    """
    ...


class ExactIndex:
  """Brute-force inner product search (NumPy): exact, O(N d) per query."""

  def __init__(self, embeddings: np.ndarray):
    """embeddings: float32 [N, d] (may be a np.memmap)."""
    if embeddings.ndim != 2:
      raise ValueError(f'embeddings must be [N, d]; got shape {embeddings.shape}')
    self._emb = embeddings

  @property
  def size(self) -> int:
    return self._emb.shape[0]

  def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    queries = np.asarray(queries, np.float32)
    if queries.ndim != 2 or queries.shape[1] != self._emb.shape[1]:
      raise ValueError(f'queries must be [B, {self._emb.shape[1]}]; got {queries.shape}')
    return topk.exact_top_k(queries, self._emb, k)


class DictTable:
  """A qid-keyed table held in a dict (small tables, tests); the big one is memory-mapped.

  Keyed by the qid alone, so two word sequences with one qid would share a row: fine for
  a handful of entries, not for a query log (use `ExportTable`).
  """

  def __init__(self, entries: Mapping[int, tuple[np.ndarray, np.ndarray]]):
    """entries: qid (`TextPreprocessor.qid`) -> (product ids, scores), best first."""
    self._entries = {
      int(q): (np.asarray(ids, np.int64), np.asarray(s, np.float32))
      for q, (ids, s) in entries.items()
    }

  def __len__(self) -> int:
    return len(self._entries)

  def lookup(self, words: Sequence[str]) -> tuple[np.ndarray, np.ndarray] | None:
    return self._entries.get(qid_lib.qid_of_words(list(words)))


class ExportTable:
  """`QueryTable` over the export's table (`export.query_table.QueryTable`, key compared)."""

  def __init__(self, table: Any):
    """table: an opened `export.query_table.QueryTable` (or anything with its `lookup`)."""
    self.table = table

  def __len__(self) -> int:
    return len(self.table)

  def health(self) -> dict[str, Any]:
    """Damaged shards (answered online) and the lookups they turned away."""
    return {
      'bad_shards': {str(k): v for k, v in getattr(self.table, 'bad_shards', {}).items()},
      'degraded_lookups': int(getattr(self.table, 'degraded_lookups', 0)),
    }

  def lookup(self, words: Sequence[str]) -> tuple[np.ndarray, np.ndarray] | None:
    row = self.table.lookup(list(words))
    if row is None:
      return None
    ids, scores = np.asarray(row['ids'], np.int64), np.asarray(row['scores'], np.float32)
    keep = ids >= 0  # Rows of a query with fewer than K neighbours are padded with -1.
    return ids[keep], scores[keep]


class RowIndex:
  """`AnnIndex` over an index that answers product ids (the export's ScaNN `Index`).

  `ids` [N] are the product ids of rows 0..N-1 (the export's order). An id the index answers
  that is not among them (a product upserted into the index but not exported) is dropped;
  a batch then answers the fewest results any of its queries kept.

  An approximate index (a tree: `manifest['config']['brute_force']` False) is asked for
  `rerank_factor * k` neighbours, of which the best k are kept: `export.index.Index`
  re-ranks exactly max(its configured re-rank size, neighbours asked), so without the
  factor the large k of filtered over-fetching would be re-ranked no deeper than k
  (over-fetch recall@10 0.85 instead of 1.0 on 20k random 32-d vectors, every leaf
  searched, 2% filters).
  """

  def __init__(self, index: Any, ids: np.ndarray, *, rerank_factor: int = 4):
    """Args:
    index: has `size` and `search_batched(queries [B, d], k) -> (ids [B, k], scores)` with
      -1 padding, as `export.index.Index`.
    ids: int64 [N] product id of each row (unique).
    rerank_factor: neighbours asked of an approximate index per result wanted.

    Raises:
      ValueError: duplicate ids, or an index of another size.
    """
    ids = np.asarray(ids, np.int64)
    self._order = np.argsort(ids, kind='stable')
    self._sorted = ids[self._order]
    if len(ids) > 1 and (np.diff(self._sorted) == 0).any():
      raise ValueError('product ids of the rows must be unique')
    if index.size != len(ids):
      raise ValueError(f'the index holds {index.size} products, the rows {len(ids)}')
    self.index = index
    config = (getattr(index, 'manifest', None) or {}).get('config') or {}
    self._rerank_factor = 1 if config.get('brute_force', False) else max(1, rerank_factor)

  @property
  def size(self) -> int:
    return len(self._sorted)

  def rows_of(self, ids: np.ndarray) -> np.ndarray:
    """Row of each product id (-1 where it is not one of the rows)."""
    return catalogue_lib.rows_of_ids(self._sorted, self._order, ids)

  def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    queries = np.asarray(queries, np.float32)
    k = min(k, self.size)
    if k <= 0:
      return np.zeros((len(queries), 0), np.int64), np.zeros((len(queries), 0), np.float32)
    ids, scores = self.index.search_batched(queries, min(self.size, self._rerank_factor * k))
    rows, scores = self.rows_of(ids[:, :k]), np.asarray(scores)[:, :k]
    keep = rows >= 0
    if keep.all():
      return rows, np.asarray(scores, np.float32)
    width = int(keep.sum(axis=1).min())
    out_r = np.stack([r[m][:width] for r, m in zip(rows, keep, strict=True)])
    out_s = np.stack([s[m][:width] for s, m in zip(scores, keep, strict=True)])
    return out_r.astype(np.int64), out_s.astype(np.float32)
