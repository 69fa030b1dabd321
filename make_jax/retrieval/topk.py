"""Exact top-k by inner product: the one ranking rule of the package (NumPy and JAX).

Interface:

  top_k(scores, k, ids=None)                  -> (rows [Q, k'], values [Q, k'])
  exact_top_k(queries, products, k, ids=None, dtype=np.float32, chunk=1024)
                                               -> (rows [Q, k'], scores [Q, k'])
  running_top_k(queries, products, k, n, chunk) (JAX, jittable) -> rows [Q, k]

The tie rule, everywhere: rows are ranked by score, highest first; equal scores go to the
lower id (`ids[row]`, the row index when `ids` is None). It holds exactly, also for ties
that straddle the k-th place (a bare `argpartition` would pick among those arbitrarily).
k larger than the catalogue gives all of it (k' = min(k, N)).

Precision is the caller's: `exact_top_k` computes scores in `dtype` (float32 for serving
and the index's ground truth, float64 for the evaluation's reference ranking) and returns
them in that dtype; `top_k` keeps the dtype of the scores it is given.

Memory: `exact_top_k` scores queries in chunks of at most `chunk`, fewer for a large
catalogue, so that a chunk's score matrix stays near 2**26 entries.
"""

import jax
import jax.numpy as jnp
import numpy as np


def _ids_for(ids: np.ndarray | None, n: int) -> np.ndarray:
  if ids is None:
    return np.arange(n, dtype=np.int64)
  ids = np.asarray(ids)
  if ids.shape != (n,):
    raise ValueError(f'ids has shape {ids.shape}, expected ({n},)')
  return ids


def top_k(
  scores: np.ndarray, k: int, ids: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
  """Rows (int64) and values of the k largest entries of each row of `scores` [Q, N].

  Best first; equal scores go to the lower `ids[row]` (the row index by default).
  """
  scores = np.asarray(scores)
  if scores.ndim != 2:
    raise ValueError(f'scores must be [Q, N]; got shape {scores.shape}')
  q, n = scores.shape
  ids = _ids_for(ids, n)
  k = max(0, min(int(k), n))
  if k == 0 or q == 0:
    return np.zeros((q, k), np.int64), np.zeros((q, k), scores.dtype)
  if k < n:
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    kth = np.take_along_axis(scores, part, axis=1).min(axis=1)
    # Where more entries than k equal the k-th value, argpartition chose among them
    # arbitrarily: rank those rows in full so that the lower ids win the last places.
    ties = (scores >= kth[:, None]).sum(axis=1) > k
    if ties.any():
      full = np.lexsort((np.broadcast_to(ids, (int(ties.sum()), n)), -scores[ties]), axis=1)
      part[ties] = full[:, :k]
  else:
    part = np.broadcast_to(np.arange(n), (q, n))
  values = np.take_along_axis(scores, part, axis=1)
  order = np.lexsort((ids[part], -values), axis=1)
  rows = np.take_along_axis(part, order, axis=1).astype(np.int64)
  return rows, np.take_along_axis(values, order, axis=1)


def exact_top_k(
  queries: np.ndarray,
  products: np.ndarray,
  k: int,
  ids: np.ndarray | None = None,
  *,
  dtype: np.dtype | type = np.float32,
  chunk: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
  """Brute-force top-k of `queries` [Q, d] among `products` [N, d] by inner product.

  Returns (rows int64 [Q, min(k, N)], scores [Q, min(k, N)] in `dtype`), best first, ties
  to the lower `ids[row]`. `products` may be a np.memmap.
  """
  queries = np.asarray(queries)
  if queries.ndim != 2 or products.ndim != 2 or queries.shape[1] != products.shape[1]:
    raise ValueError(
      f'queries {queries.shape} and products {products.shape} must be [Q, d], [N, d]'
    )
  n = products.shape[0]
  ids = _ids_for(ids, n)
  table = np.asarray(products, dtype)
  chunk = max(1, min(int(chunk), 2**26 // max(1, n)))
  rows, scores = [], []
  for start in range(0, len(queries), chunk):
    block = np.asarray(queries[start : start + chunk], dtype) @ table.T
    r, s = top_k(block, k, ids)
    rows.append(r)
    scores.append(s)
  if not rows:
    kk = min(max(int(k), 0), n)
    return np.zeros((0, kk), np.int64), np.zeros((0, kk), dtype)
  return np.concatenate(rows), np.concatenate(scores)


def running_top_k(queries: jax.Array, products: jax.Array, k: int, n: int, chunk: int) -> jax.Array:
  """Top-k rows [Q, k] of `queries` [Q, d] among the first `n` rows of `products` (JAX).

  `products` [M, d] with M a multiple of `chunk` (rows from `n` on are padding and never
  returned while k <= n). The catalogue is scanned in chunks keeping a running best, so
  memory is [Q, chunk + k]; scores at HIGHEST precision. Ties go to the lower row (callers
  sort rows by id to get the package's rule): the running best come first and hold lower
  rows, and `lax.top_k` keeps the lower index first among equal values.
  """
  chunks = products.reshape(-1, chunk, products.shape[-1])
  offsets = jnp.arange(chunks.shape[0], dtype=jnp.int32) * chunk

  def body(best, xs):
    block, offset = xs
    scores = jnp.dot(queries, block.T, precision=jax.lax.Precision.HIGHEST)
    rows = offset + jnp.arange(chunk, dtype=jnp.int32)
    scores = jnp.where(rows < n, scores, -jnp.inf)
    all_scores = jnp.concatenate([best[0], scores], axis=1)
    all_rows = jnp.concatenate([best[1], jnp.broadcast_to(rows, scores.shape)], axis=1)
    top, pos = jax.lax.top_k(all_scores, k)
    return (top, jnp.take_along_axis(all_rows, pos, axis=1)), None

  init = (
    jnp.full((queries.shape[0], k), -jnp.inf, jnp.float32),
    jnp.full((queries.shape[0], k), -1, jnp.int32),
  )
  (_, rows), _ = jax.lax.scan(body, init, (chunks, offsets))
  return rows
