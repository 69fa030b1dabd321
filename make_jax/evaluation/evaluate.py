"""Offline evaluation (SPEC 9): ranked lists of a split's queries -> Recall@K, P_rel, P_cate.

Why here and not in the tool: `tools/evaluate.py`, the results driver and the tests score
rankings the same way, whoever produced them (the batch search CLI, a baseline, an exact
search over exported embeddings), so the logic lives in the package and the tool only
reads flags.

Inputs:
- an `EvalSet` (`eval_set.py`): the split's distinct queries, complete target sets, the
  catalogue with the attributes the judge reads;
- rankings: product ids per query, best first. From JSON lines in the batch search
  format (`serving/batch.py`), or from an exact search over query and product embeddings
  (`sources.py` reads both).

Rules (beside those of `metrics.py`: queries without a target leave Recall, K beyond the
catalogue means all of it):
- A list may hold fewer than K products (relevance control can return fewer); the missing
  places count as not relevant, and Recall looks at what is there. K beyond what the
  lists could hold (K > the longest list, and the longest list shorter than the
  catalogue) cannot be scored: such K are dropped and named in `unscored_ks`.
- Product ids the catalogue lacks are kept in place, never relevant, and counted; a
  repeated id in one list is dropped after its first place and counted.
- Every query of the split must have a list, unless `allow_missing` (then an empty list,
  counted as `missing_queries`). Lists of queries not in the split are counted and ignored.
- P_rel (eq. 5): a retrieved product's relevance is the share of the query's attribute
  constraints it satisfies, the best over the query's generations (`eval_set.py`);
  values are compared after `strip().casefold()`; P_rel@K is the mean over the first K
  places. P_cate (eq. 6): the share of the first K places in the query's category.
- Intervals: 95% percentile bootstrap over queries (seeded), per metric and K.
"""

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from make_jax.evaluation.eval_set import EvalSet
from make_jax.retrieval import metrics

DEFAULT_KS = (10, 100, 1000)
DEFAULT_JUDGED_KS = (10,)


def _norm(value: Any) -> str:
  return str(value).strip().casefold()


# --- Scoring ----------------------------------------------------------------------------


def _rows_matrix(
  eval_set: EvalSet, rankings: Mapping[str, Sequence[int]], allow_missing: bool
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
  """(ids [Q, R] with -1 padding, catalogue rows [Q, R] with -1, counts)."""
  counts = {'missing_queries': 0, 'unknown_product_ids': 0, 'repeated_product_ids': 0}
  wanted = set(eval_set.queries)
  counts['ignored_queries'] = sum(q not in wanted for q in rankings)
  missing = [q for q in eval_set.queries if q not in rankings]
  if missing and not allow_missing:
    raise ValueError(
      f'{len(missing)} of {eval_set.num_queries} queries have no ranked list '
      f'(first: {missing[0]!r}); pass allow_missing to score them as empty lists'
    )
  counts['missing_queries'] = len(missing)
  lists = []
  for q in eval_set.queries:
    ids = list(dict.fromkeys(int(i) for i in rankings.get(q, ())))
    counts['repeated_product_ids'] += len(rankings.get(q, ())) - len(ids)
    lists.append(ids)
  width = max((len(x) for x in lists), default=0)
  ids = np.full((len(lists), width), -1, np.int64)
  for i, x in enumerate(lists):
    ids[i, : len(x)] = x
  rows = eval_set.catalogue.rows_of_ids(ids)
  rows[ids < 0] = -1
  counts['unknown_product_ids'] = int(((rows < 0) & (ids >= 0)).sum())
  return ids, rows, counts


def scorable_ks(ks: Sequence[int], list_width: int, num_products: int) -> tuple[int, ...]:
  """The ks a list of `list_width` places can score (all when it spans the catalogue)."""
  if list_width >= num_products:
    return tuple(ks)
  return tuple(k for k in ks if k <= list_width)


def relevance(eval_set: EvalSet, rows: np.ndarray) -> np.ndarray:
  """[Q, R] judged relevance of the products at catalogue `rows` (-1: none, relevance 0).

  NaN rows for queries without constraints. The best share over a query's generations.
  """
  rows = np.asarray(rows)
  out = np.zeros(rows.shape, np.float64)
  norm = {
    a: np.asarray([_norm(v) for v in vals] + [''], object)
    for a, vals in eval_set.catalogue.attributes.items()
  }
  for q, gens in enumerate(eval_set.generations):
    if not gens:
      out[q] = np.nan
      continue
    best = np.zeros(rows.shape[1])
    for gen in gens:
      hits = sum((norm[a][rows[q]] == _norm(v)) for a, v in gen)  # row -1 reads ''.
      best = np.maximum(best, np.asarray(hits, np.float64) / len(gen))
    out[q] = best
  return out


def _mean_at(per_place: np.ndarray, applies: np.ndarray, ks: Sequence[int], n: int) -> np.ndarray:
  """[Q, len(ks)] means over the first min(K, n) places (places past a list count 0).

  NaN for the queries that `applies` marks False.
  """
  cols = [per_place[:, : min(k, n)].sum(axis=1) / min(k, n) for k in ks]
  out = np.stack(cols, axis=1)
  out[~np.asarray(applies, bool)] = np.nan
  return out


def evaluate_rankings(
  eval_set: EvalSet,
  rankings: Mapping[str, Sequence[int]],
  *,
  ks: Sequence[int] = DEFAULT_KS,
  judged_ks: Sequence[int] = DEFAULT_JUDGED_KS,
  bootstrap_samples: int = 1000,
  seed: int = 0,
  allow_missing: bool = False,
) -> dict[str, Any]:
  """Scores rankings of the split's queries (module docstring for the rules).

  Returns:
    {'overall': {'recall@K', 'recall@K_lo', 'recall@K_hi', 'recall_queries', 'p_rel@10',
    ..., 'p_cate@10', ...}, 'per_query': [{'query', 'targets', 'recall@K', 'p_rel@10',
    'p_cate@10'} (None where a metric does not apply)], 'counts': {...}, 'ks', 'judged_ks',
    'unscored_ks', 'num_queries', 'num_products'}.
  """
  ids, rows, counts = _rows_matrix(eval_set, rankings, allow_missing)
  n, width = eval_set.num_products, ids.shape[1]
  ks_ok = scorable_ks(ks, width, n)
  judged_ok = scorable_ks(judged_ks, width, n)
  unscored = sorted(set(ks) - set(ks_ok) | set(judged_ks) - set(judged_ok))
  per_query: dict[str, np.ndarray] = {}
  overall: dict[str, float] = {}
  if ks_ok:
    # Padding (-1, never a target) to the largest K: a list without a target then never
    # counts as a hit at a K past its end (metrics.recall_at_k reads R as "not found").
    padded = np.pad(ids, ((0, 0), (0, max(0, max(ks_ok) - width))), constant_values=-1)
    per_query['recall'] = metrics.recall_at_k(padded, eval_set.targets, ks_ok)
    overall |= metrics.summarize(
      {'recall': per_query['recall']}, ks_ok, bootstrap_samples=bootstrap_samples, seed=seed
    )
  if judged_ok:
    # Rows padded to the largest judged K with -1 (no product: never relevant).
    rows_k = np.pad(rows, ((0, 0), (0, max(0, max(judged_ok) - width))), constant_values=-1)
    rel = relevance(eval_set, rows_k)
    applies = np.asarray([bool(g) for g in eval_set.generations])
    per_query['p_rel'] = _mean_at(np.nan_to_num(rel), applies, judged_ok, n)
    got = eval_set.catalogue.attributes.get(eval_set.category_attribute)
    if got is not None:
      cats = [_norm(c) for c in eval_set.query_categories()]
      table = np.asarray([_norm(v) for v in got] + [''], object)  # Row -1 reads ''.
      same = table[rows_k] == np.asarray(cats, object)[:, None]
      per_query['p_cate'] = _mean_at(same.astype(np.float64), np.asarray(cats) != '', judged_ok, n)
    overall |= metrics.summarize(
      {k: v for k, v in per_query.items() if k != 'recall'},
      judged_ok,
      bootstrap_samples=bootstrap_samples,
      seed=seed,
    )
  per_query_rows = []
  for q, query in enumerate(eval_set.queries):
    row: dict[str, Any] = {'query': query, 'targets': int(len(eval_set.targets[q]))}
    for name, values in per_query.items():
      for j, k in enumerate(ks_ok if name == 'recall' else judged_ok):
        v = float(values[q, j])
        row[f'{name}@{k}'] = None if math.isnan(v) else v
    per_query_rows.append(row)
  return {
    'overall': overall,
    'per_query': per_query_rows,
    'counts': counts | dict(eval_set.counts),
    'ks': list(ks_ok),
    'judged_ks': list(judged_ok),
    'unscored_ks': unscored,
    'num_queries': eval_set.num_queries,
    'num_products': n,
  }


# --- Reporting --------------------------------------------------------------------------


def format_table(result: Mapping[str, Any], title: str = '') -> str:
  """A readable text table of `evaluate_rankings`' overall metrics with 95% intervals."""
  overall = result['overall']
  lines = [title] if title else []
  lines.append(f'{"metric":<14} {"value":>8}  {"95% interval":<19} {"queries":>7}')
  for name, ks in (
    ('recall', result['ks']),
    ('p_rel', result['judged_ks']),
    ('p_cate', result['judged_ks']),
  ):
    for k in ks:
      key = f'{name}@{k}'
      if key not in overall:
        continue
      lo, hi = overall.get(f'{key}_lo', math.nan), overall.get(f'{key}_hi', math.nan)
      lines.append(
        f'{key:<14} {overall[key]:>8.4f}  [{lo:.4f}, {hi:.4f}]     {int(overall[f"{name}_queries"]):>7}'
      )
  if result.get('unscored_ks'):
    lines.append(f'not scored (lists too short): K = {result["unscored_ks"]}')
  lines.append(
    f'queries {result["num_queries"]}, catalogue {result["num_products"]}, '
    f'counts {json.dumps({k: v for k, v in result["counts"].items() if v})}'
  )
  return '\n'.join(lines)
