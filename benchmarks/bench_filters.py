r"""Where filtered search should switch from exact subset scoring to over-fetching.

Run from the repository root:
  python -m benchmarks.bench_filters [--num_rows=100000] [--dim=64] [--queries=50]

Random unit product vectors, a ScaNN index over them (`ScannIndex.build`: tree + AH +
exact re-ranking), and filters that keep a random subset of n rows, for n from 0.1% to
50% of the catalogue. For each n, the median per-query time of
  exact:     `FilteredSearch.exact` (gather n rows, one matrix-vector product, top-k)
  overfetch: `FilteredSearch.search` forced to over-fetch from ScaNN
and over-fetch's recall@k against exact. The crossover (the largest n at which exact is
still faster) is what `filters.EXACT_MAX_ROWS` should be, relative to the catalogue's d.
"""

import statistics
import time

import numpy as np
from absl import app, flags

from make_jax.retrieval import catalogue as catalogue_lib
from make_jax.serving import ann, filters

_ROWS = flags.DEFINE_integer('num_rows', 100_000, 'Catalogue size N.')
_DIM = flags.DEFINE_integer('dim', 64, 'Embedding dimension d.')
_QUERIES = flags.DEFINE_integer('queries', 50, 'Queries timed per subset size.')
_K = flags.DEFINE_integer('k', 10, 'Results per query.')
_LEAVES = flags.DEFINE_float('leaves_share', 0.5, 'Share of the ScaNN tree leaves searched.')
_SHARES = (0.001, 0.003, 0.01, 0.03, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5)


def _unit(rng, n, d):
  x = rng.standard_normal((n, d)).astype(np.float32)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def _median_ms(fn, queries):
  times = []
  for q in queries:
    start = time.perf_counter()
    fn(q)
    times.append(time.perf_counter() - start)
  return 1e3 * statistics.median(times)


def main(argv: list[str]) -> None:
  del argv
  n, d, k = _ROWS.value, _DIM.value, _K.value
  rng = np.random.default_rng(0)
  emb = _unit(rng, n, d)
  queries = _unit(rng, _QUERIES.value, d)
  start = time.perf_counter()
  leaves = int(np.sqrt(n))
  index = ann.ScannIndex.build(
    emb, num_leaves=leaves, leaves_to_search=max(1, int(_LEAVES.value * leaves))
  )
  print(
    f'N={n} d={d} k={k} leaves {leaves} searched {_LEAVES.value:.0%}: ScaNN built in {time.perf_counter() - start:.1f} s'
  )
  print(f'{"subset":>8} {"share":>6} {"exact ms":>9} {"overfetch ms":>13} {"recall@k":>9}')
  crossover = 0
  for share in _SHARES:
    size = max(k, int(share * n))
    subset = np.sort(rng.choice(n, size, replace=False))
    inverted = catalogue_lib.InvertedIndex(
      {'f': ['in' if i else 'out' for i in np.isin(np.arange(n), subset)]}
    )
    filt = filters.Filter.from_pairs([('f', 'in')])
    search = filters.FilteredSearch(index, emb, inverted, exact_max_rows=0)
    search.search(queries[0], filt, k)  # Warm up.
    exact_ms = _median_ms(lambda q, s=search, r=subset: s.exact(q, r, k), queries)
    over_ms = _median_ms(lambda q, s=search, f=filt: s.search(q, f, k), queries)
    hits = 0
    for q in queries:
      want = set(search.exact(q, subset, k)[0].tolist())
      hits += len(want & set(search.search(q, filt, k).rows.tolist()))
    recall = hits / (k * len(queries))
    print(f'{size:>8} {share:>6.3f} {exact_ms:>9.3f} {over_ms:>13.3f} {recall:>9.3f}')
    if exact_ms <= over_ms:
      crossover = size
  print(
    f'crossover: exact subset scoring is faster up to n = {crossover} rows ({crossover / n:.1%} of N)'
  )


if __name__ == '__main__':
  app.run(main)
