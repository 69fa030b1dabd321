"""The interfaces serving searches through, and their exact in-memory implementations.

Serving reads three things that the offline half builds (SPEC 7.1-7.3): product
embeddings, an ANN index over them and the qid -> top-K table. Serving depends only on
the two small protocols below, so the ScaNN index and the memory-mapped table plug in
through thin adapters, and the exact implementations here serve small catalogues and
are the reference that the approximate ones are measured against.

Rows: the ANN index answers in *rows* of the exported embedding matrix (the order of the
exported product ids, which is also the catalogue's row order in serving); the table
answers in product ids, as the offline job wrote them.
"""

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import numpy as np


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
  """The offline qid -> top-K (product ids, scores) table."""

  def lookup(self, qid: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(product ids int64 [K], scores float32 [K]) best first, or None on a miss."""
    ...


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
  """Indices and values of the k largest entries of each row of `scores` [B, N], sorted.

  Ties are broken by the smaller index, so exact searches are deterministic.
  """
  b, n = scores.shape
  k = min(k, n)
  if k <= 0:
    return np.zeros((b, 0), np.int64), np.zeros((b, 0), np.float32)
  if k < n:
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
  else:
    part = np.broadcast_to(np.arange(n), (b, n))
  vals = np.take_along_axis(scores, part, axis=1)
  order = np.lexsort((part, -vals), axis=1)
  idx = np.take_along_axis(part, order, axis=1).astype(np.int64)
  return idx, np.take_along_axis(vals, order, axis=1).astype(np.float32)


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
    return top_k(queries @ np.asarray(self._emb, np.float32).T, k)


class DictTable:
  """A qid table held in a dict (small tables, tests); the big one is memory-mapped."""

  def __init__(self, entries: Mapping[int, tuple[np.ndarray, np.ndarray]]):
    self._entries = {
      int(q): (np.asarray(ids, np.int64), np.asarray(s, np.float32))
      for q, (ids, s) in entries.items()
    }

  def __len__(self) -> int:
    return len(self._entries)

  def lookup(self, qid: int) -> tuple[np.ndarray, np.ndarray] | None:
    return self._entries.get(int(qid))
