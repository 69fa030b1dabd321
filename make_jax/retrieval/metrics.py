"""Retrieval metrics of SPEC section 9 (paper section 4.1), per query and overall, in NumPy.

Evaluation during training (`retrieval/evaluator.py`) and the offline evaluation
(`evaluation/evaluate.py`) use these same formulas; they live in `retrieval/`, below both
the trainer and `evaluation/` in the package's layers.

Interface (every per-query function returns float64 [Q, len(ks)], NaN where the metric
does not apply to that query; `summarize` averages over the queries it applies to):

  recall_at_k(retrieved_ids, targets, ks)                 eq. 4
  p_rel_at_k(retrieved_attributes, constraints, ks)       eq. 5, attribute-consistency judge
  p_cate_at_k(retrieved_categories, query_category, ks)   eq. 6
  bootstrap_interval(values, ...)                         95% interval over queries
  summarize({'recall': per_query, ...}, ks, ...)          {'recall@10': mean, ...}

Rules a reader must know:
- **Ties**: products are ranked by score, highest first; equal scores go to the lower
  product id first (`retrieval/topk.py`, the one ranking rule; the evaluator's device
  search follows it with its catalogue sorted by id).
- **K larger than the catalogue**: only N products can be retrieved; @K then means @N
  (Recall over all N, P_rel / P_cate the mean over all N retrieved).
- **A query with no target in the catalogue** (empty target set, after the caller
  removed ids the catalogue lacks) is left out of Recall@K: no ranking could find its
  target, so it says nothing about the model. `summarize` reports how many queries each
  metric averaged over (`recall_queries`), so the exclusion is visible.
- **P_rel** for a query without attribute constraints, and **P_cate** for one without a
  category intent, do not apply (NaN) and are left out the same way. Attribute values are
  compared after `str.strip().casefold()`; '' means no constraint.
"""

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

DEFAULT_KS = (10, 100)


def _norm(values: np.ndarray) -> np.ndarray:
  """Attribute values as comparable strings (strip, casefold); bytes are UTF-8 decoded."""
  flat = [
    (v.decode('utf-8') if isinstance(v, bytes) else str(v)).strip().casefold()
    for v in np.asarray(values, dtype=object).ravel()
  ]
  return np.asarray(flat, dtype=object).reshape(np.shape(values))


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
  ks = tuple(int(k) for k in ks)
  if not ks or min(ks) < 1:
    raise ValueError(f'ks must be positive integers, got {ks}')
  return ks


def recall_at_k(
  retrieved_ids: np.ndarray, targets: Sequence[Iterable[int]], ks: Sequence[int] = DEFAULT_KS
) -> np.ndarray:
  """Per-query Recall@K (eq. 4): 1 if a target is among the first K retrieved, else 0.

  Args:
    retrieved_ids: [Q, R] product ids, best first (R = min(max K, catalogue size)).
    targets: per query, the ids of its target products that are in the catalogue.
    ks: cut-offs.

  Returns:
    [Q, len(ks)]: 1.0 / 0.0, NaN for a query with no target.
  """
  ks = _check_ks(ks)
  retrieved_ids = np.asarray(retrieved_ids)
  if retrieved_ids.ndim != 2 or len(targets) != retrieved_ids.shape[0]:
    raise ValueError(
      f'retrieved_ids {retrieved_ids.shape} and {len(targets)} target sets do not match'
    )
  out = np.full((len(targets), len(ks)), np.nan)
  for q, target in enumerate(targets):
    target = np.fromiter(target, np.int64)
    if not target.size:
      continue
    hit = np.isin(retrieved_ids[q], target)
    # First rank at which a target appears; none: never a hit, whatever K (a list shorter
    # than K that holds no target is a miss at K, not a hit past its end).
    first = int(np.argmax(hit)) if hit.any() else np.inf
    out[q] = [float(first < k) for k in ks]
  return out


def _mean_at_k(per_product: np.ndarray, applies: np.ndarray, ks: tuple[int, ...]) -> np.ndarray:
  """Means of [Q, R] per-product scores over the first K columns; NaN where not `applies`."""
  out = np.stack([per_product[:, :k].mean(axis=1) for k in ks], axis=1)
  out[~applies] = np.nan
  return out


def p_rel_at_k(
  retrieved_attributes: Mapping[str, np.ndarray],
  constraints: Mapping[str, Sequence[str]],
  ks: Sequence[int] = DEFAULT_KS,
) -> np.ndarray:
  """Per-query P_rel@K (eq. 5) with the attribute-consistency judge.

  The relevance of a retrieved product is the share of the query's constraints it
  satisfies; P_rel@K is its mean over the first K retrieved products.

  Args:
    retrieved_attributes: attribute -> [Q, R] values of the retrieved products, best first.
      Must hold every attribute named in `constraints`.
    constraints: attribute -> [Q] the value the query asks for ('' = no constraint).
    ks: cut-offs.

  Returns:
    [Q, len(ks)] in [0, 1]; NaN for a query without constraints.
  """
  ks = _check_ks(ks)
  if not constraints:
    raise ValueError('constraints is empty: name at least one attribute')
  missing = set(constraints) - set(retrieved_attributes)
  if missing:
    raise ValueError(f'No retrieved values for constrained attributes {sorted(missing)}')
  satisfied, count = 0.0, 0
  for name, wanted in constraints.items():
    wanted = _norm(wanted)
    got = _norm(retrieved_attributes[name])
    if got.ndim != 2 or got.shape[0] != wanted.shape[0]:
      raise ValueError(f'{name}: retrieved {got.shape} vs constraints {wanted.shape}')
    asked = wanted != ''
    satisfied = satisfied + ((got == wanted[:, None]) & asked[:, None])
    count = count + asked
  count = np.asarray(count)
  per_product = np.asarray(satisfied, np.float64) / np.maximum(count, 1)[:, None]
  return _mean_at_k(per_product, count > 0, ks)


def p_cate_at_k(
  retrieved_categories: np.ndarray,
  query_category: Sequence[str],
  ks: Sequence[int] = DEFAULT_KS,
) -> np.ndarray:
  """Per-query P_cate@K (eq. 6): the share of the first K retrieved in the query's category.

  Args:
    retrieved_categories: [Q, R] categories of the retrieved products, best first.
    query_category: [Q] the query's category intent ('' = none).
    ks: cut-offs.

  Returns:
    [Q, len(ks)] in [0, 1]; NaN for a query without a category intent.
  """
  ks = _check_ks(ks)
  got, wanted = _norm(retrieved_categories), _norm(query_category)
  if got.ndim != 2 or got.shape[0] != wanted.shape[0]:
    raise ValueError(f'retrieved {got.shape} vs query categories {wanted.shape}')
  return _mean_at_k((got == wanted[:, None]).astype(np.float64), wanted != '', ks)


def bootstrap_interval(
  values: np.ndarray, *, num_samples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
  """Percentile bootstrap interval of the mean over queries (NaN entries left out).

  Queries are resampled with replacement `num_samples` times with a seeded generator, so
  the interval is reproducible. Returns (NaN, NaN) when no query applies.
  """
  values = np.asarray(values, np.float64)
  values = values[~np.isnan(values)]
  if not values.size:
    return float('nan'), float('nan')
  rng = np.random.default_rng(seed)
  idx = rng.integers(0, values.size, size=(num_samples, values.size))
  means = values[idx].mean(axis=1)
  alpha = (1.0 - level) / 2
  lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
  return float(lo), float(hi)


def summarize(
  per_query: Mapping[str, np.ndarray],
  ks: Sequence[int] = DEFAULT_KS,
  *,
  bootstrap_samples: int = 0,
  seed: int = 0,
) -> dict[str, float]:
  """Overall metrics from per-query [Q, len(ks)] arrays: means over the queries that apply.

  Args:
    per_query: name (e.g. 'recall', 'p_rel', 'p_cate') -> [Q, len(ks)].
    ks: the cut-offs the columns stand for.
    bootstrap_samples: > 0 adds '<name>@<k>_lo' / '_hi', the 95% bootstrap interval.
    seed: bootstrap seed.

  Returns:
    '<name>@<k>' -> mean (NaN when no query applies) and '<name>_queries' -> how many
    queries it averaged over.
  """
  ks = _check_ks(ks)
  out: dict[str, float] = {}
  for name, values in per_query.items():
    values = np.asarray(values, np.float64)
    if values.ndim != 2 or values.shape[1] != len(ks):
      raise ValueError(f'{name}: shape {values.shape}, expected [Q, {len(ks)}]')
    applies = ~np.isnan(values[:, 0])
    out[f'{name}_queries'] = float(applies.sum())
    for j, k in enumerate(ks):
      col = values[applies, j]
      out[f'{name}@{k}'] = float(col.mean()) if col.size else float('nan')
      if bootstrap_samples:
        lo, hi = bootstrap_interval(values[:, j], num_samples=bootstrap_samples, seed=seed)
        out[f'{name}@{k}_lo'], out[f'{name}@{k}_hi'] = lo, hi
  return out
