"""A ScaNN `AnnIndex` built in memory over an embedding matrix (benchmarks, filter tests).

Served indexes are built offline (`export.index`, `tools.build_index`: product ids as
docids) and put behind `AnnIndex` by `index.RowIndex`. Relevance control's benchmark and
recall test need a tree + AH + re-ranking index over arbitrary vectors in rows; this one
answers neighbour positions in the array it was built on, which are those rows. `scann` is
imported when an index is built, not when serving is imported (it loads TensorFlow's
runtime).

`build` follows the ScaNN README's recipe: tree partitioning (~sqrt(N) leaves), asymmetric
hashing (2 dims per block, anisotropic threshold 0.2) and exact re-ranking of at least
`reorder_factor * k` candidates per search (over-fetching asks large k).
"""

import math

import numpy as np


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
