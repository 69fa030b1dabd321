"""Maximum inner product search over the product embeddings, in catalogue rows.

Serving searches through the `AnnIndex` protocol (SPEC 7.2), so the index the export built
and small in-memory ones plug in alike. An index answers in *rows* of the exported
embedding matrix (the order of the exported product ids, which is also the catalogue's
row order in serving).

- `ExactIndex`: brute force in NumPy (`retrieval.topk`): small catalogues, and the
  reference the approximate indexes are measured against.
- `RowIndex`: the export's ScaNN index (`export.scann_index.Index`, whose docids are
  product ids) answering rows.
- `ScannIndex`: a ScaNN tree + AH + re-ranking index built in memory over rows
  (relevance control's benchmark and recall test). `build` follows the ScaNN README's
  recipe: tree partitioning (~sqrt(N) leaves), asymmetric hashing (2 dims per block,
  anisotropic threshold 0.2) and exact re-ranking of at least `reorder_factor * k`
  candidates per search (over-fetching asks large k). `scann` is imported when one is
  built, not when serving is imported (it loads TensorFlow's runtime).
"""

import math
from typing import Any, Protocol, runtime_checkable

import numpy as np

from make_jax.retrieval import catalogue as catalogue_lib
from make_jax.retrieval import topk


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


class RowIndex:
  """`AnnIndex` over an index that answers product ids (the export's ScaNN `Index`).

  `ids` [N] are the product ids of rows 0..N-1 (the export's order). An id the index answers
  that is not among them (a product upserted into the index but not exported) is dropped;
  a batch then answers the fewest results any of its queries kept.

  An approximate index (a tree: `manifest['config']['brute_force']` False) is asked for
  `rerank_factor * k` neighbours, of which the best k are kept: `export.scann_index.Index`
  re-ranks exactly max(its configured re-rank size, neighbours asked), so without the
  factor the large k of filtered over-fetching would be re-ranked no deeper than k
  (over-fetch recall@10 0.85 instead of 1.0 on 20k random 32-d vectors, every leaf
  searched, 2% filters).
  """

  def __init__(self, index: Any, ids: np.ndarray, *, rerank_factor: int = 4):
    """Args:
    index: has `size` and `search_batched(queries [B, d], k) -> (ids [B, k], scores)` with
      -1 padding, as `export.scann_index.Index`.
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


def _scann():
  from scann.scann_ops.py import scann_ops_pybind

  return scann_ops_pybind


class ScannIndex:
  """Maximum inner product search through a ScaNN searcher (rows = build order)."""

  def __init__(self, searcher, size: int, *, reorder_factor: int = 4):
    """Args:
    searcher: a `scann_ops_pybind.ScannSearcher`.
    size: rows it was built on.
    reorder_factor: candidates re-ranked exactly per result asked (at least 100).
    """
    self._searcher = searcher
    self._size = size
    self._reorder_factor = reorder_factor

  @property
  def size(self) -> int:
    return self._size

  @classmethod
  def build(
    cls,
    embeddings: np.ndarray,
    *,
    num_leaves: int | None = None,
    leaves_to_search: int | None = None,
    reorder_factor: int = 4,
  ) -> 'ScannIndex':
    """Builds a tree + AH + re-ranking index over float32 [N, d] embeddings."""
    n = embeddings.shape[0]
    leaves = num_leaves or max(2, int(math.sqrt(n)))
    to_search = leaves_to_search or max(1, leaves // 4)
    searcher = (
      _scann()
      .builder(np.asarray(embeddings, np.float32), 10, 'dot_product')
      .tree(num_leaves=leaves, num_leaves_to_search=to_search, training_sample_size=n)
      .score_ah(2, anisotropic_quantization_threshold=0.2)
      .reorder(100)
      .build()
    )
    return cls(searcher, n, reorder_factor=reorder_factor)

  def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    k = min(k, self._size)
    queries = np.asarray(queries, np.float32)
    rows, scores = self._searcher.search_batched(
      queries,
      final_num_neighbors=k,
      pre_reorder_num_neighbors=min(self._size, max(100, self._reorder_factor * k)),
    )
    return np.asarray(rows, np.int64), np.asarray(scores, np.float32)
