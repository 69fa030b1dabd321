"""The ScaNN index over exported embeddings: configured by size, tuned, movable, checked.

Why (SPEC 7.2): below ~50k products brute force is fast and exact; above, a k-means tree
(`spherical=True`: the embeddings are unit vectors, and without it recall stalls near 0.91
at 1M) with ~2*sqrt(N) leaves, anisotropic asymmetric hashing (`score_ah(2, 0.2)`) and exact
re-ranking of a few times k. Product ids are ScaNN docids, so products are upserted and
deleted without a rebuild. The searcher is serialised with `relative_path=True` (the
directory can be moved) beside a manifest that copies the export's (step, fingerprint, dim)
and adds the build and search settings; it is written to a staging directory and renamed
when complete. `tune` sweeps leaves-to-search and the re-rank size against exact search and
keeps the fastest setting that reaches the target recall.
"""

import dataclasses
import logging
import math
import os
import pathlib
import time
from typing import Any

import numpy as np

from make_jax.export import manifest as manifest_lib
from make_jax.retrieval import topk

REBUILD = (
  'Re-export the embeddings with this model (python -m tools.export) and rebuild the index '
  '(python -m tools.build_index).'
)


@dataclasses.dataclass(frozen=True)
class IndexConfig:
  """Build and search settings (recorded in the manifest)."""

  k: int = 100  # Default neighbours per query.
  brute_force: bool = True
  num_leaves: int = 0
  leaves_to_search: int = 0
  reorder: int = 0  # Candidates re-ranked exactly (pre-reorder neighbours).
  training_sample_size: int = 0
  anisotropic_threshold: float = 0.2


def configure(
  n: int, k: int = 100, brute_force_below: int = 50_000, candidates_per_k: int = 100
) -> IndexConfig:
  """The default settings for `n` products (see the module docstring).

  Leaves searched: enough to hold about `candidates_per_k * k` products (at least 8), since
  what a query needs is candidates, not a share of the leaves: at 1M products and k = 100
  that is 20 of 2,000 leaves (1%), at 60k it is 82 of 490 (17%). `tune` refines it.
  """
  if n < brute_force_below:
    return IndexConfig(k=k, brute_force=True)
  leaves = max(2, round(2 * math.sqrt(n)))
  per_leaf = n / leaves
  return IndexConfig(
    k=k,
    brute_force=False,
    num_leaves=leaves,
    leaves_to_search=min(leaves, max(8, math.ceil(candidates_per_k * k / per_leaf))),
    reorder=4 * k,
    training_sample_size=min(n, 250_000),
  )


def build_searcher(embeddings: np.ndarray, ids: np.ndarray, cfg: IndexConfig) -> Any:
  """A ScaNN searcher over `embeddings` [n, d] with docids `ids` (ints)."""
  from scann.scann_ops.py import scann_ops_pybind

  embeddings = np.ascontiguousarray(embeddings, np.float32)
  if len(np.unique(ids)) != len(ids):
    raise ValueError('product ids must be unique')
  builder = scann_ops_pybind.builder(embeddings, cfg.k, 'dot_product')
  if cfg.brute_force:
    builder = builder.score_brute_force()
  else:
    builder = (
      builder.tree(
        num_leaves=cfg.num_leaves,
        num_leaves_to_search=cfg.leaves_to_search,
        training_sample_size=cfg.training_sample_size or len(embeddings),
        spherical=True,
      )
      .score_ah(2, anisotropic_quantization_threshold=cfg.anisotropic_threshold)
      .reorder(cfg.reorder)
    )
  return builder.build(docids=[int(i) for i in ids])


def recall(found: np.ndarray, truth: np.ndarray) -> float:
  """Mean share of each row of `truth` found in the same row of `found`."""
  hits = sum(len(np.intersect1d(f, t)) for f, t in zip(found, truth, strict=True))
  return hits / truth.size


class Index:
  """A loaded (or just built) searcher with its manifest; search, upsert, delete, save."""

  def __init__(self, searcher: Any, manifest: dict[str, Any]):
    self.searcher, self.manifest = searcher, manifest
    self.dim = int(manifest['dim'])
    search = manifest.get('search', {})
    self._leaves = search.get('leaves_to_search')
    self._reorder = search.get('reorder')

  @property
  def size(self) -> int:
    """Products in the index."""
    return int(self.searcher.size())

  def _params(self, k: int) -> dict[str, int | None]:
    reorder = max(self._reorder, k) if self._reorder else None
    return {
      'final_num_neighbors': k,
      'pre_reorder_num_neighbors': reorder,
      'leaves_to_search': self._leaves,
    }

  def search(self, query: np.ndarray, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(product ids int64 [k], scores float32 [k]) of one query [d], best first."""
    p = self._params(k or self.manifest['config']['k'])
    p = {key: -1 if v is None else v for key, v in p.items()}
    ids, scores = self.searcher.search(np.asarray(query, np.float32), **p)
    return np.asarray(ids, np.int64), np.asarray(scores, np.float32)

  def search_batched(
    self, queries: np.ndarray, k: int | None = None, parallel: bool = False
  ) -> tuple[np.ndarray, np.ndarray]:
    """(ids int64 [q, k], scores float32 [q, k]) of queries [q, d] (-1 / -inf pad)."""
    k = k or self.manifest['config']['k']
    fn = self.searcher.search_batched_parallel if parallel else self.searcher.search_batched
    ids, scores = fn(np.ascontiguousarray(queries, np.float32), **self._params(k))
    out_i = np.full((len(queries), k), -1, np.int64)
    out_s = np.full((len(queries), k), -np.inf, np.float32)
    for row, (i, s) in enumerate(zip(ids, scores, strict=True)):
      out_i[row, : len(i)], out_s[row, : len(i)] = i, s
    return out_i, out_s

  def upsert(self, ids: np.ndarray, embeddings: np.ndarray) -> None:
    """Inserts products, or replaces the embeddings of ids already present."""
    embeddings = np.asarray(embeddings, np.float32).reshape(-1, self.dim)
    self.searcher.upsert([int(i) for i in np.asarray(ids).reshape(-1)], embeddings)

  def delete(self, ids: np.ndarray) -> None:
    """Removes products by id (KeyError for an id not in the index)."""
    self.searcher.delete([int(i) for i in np.asarray(ids).reshape(-1)])

  def save(self, directory: str | os.PathLike) -> None:
    """Serialises (movable) with its manifest, atomically (replacing `directory`)."""
    with manifest_lib.staging_dir(directory) as tmp:
      self.searcher.serialize(str(tmp), relative_path=True)
      manifest_lib.write(tmp, {**self.manifest, 'count': self.size})


def tune(
  index: Index,
  ids: np.ndarray,
  embeddings: np.ndarray,
  queries: np.ndarray,
  *,
  k: int = 100,
  target_recall: float = 0.95,
  leaves: tuple[int, ...] = (),
  reorders: tuple[int, ...] = (),
) -> dict[str, Any]:
  """Sweeps (leaves_to_search, reorder) on `queries` against exact search over
  (`ids`, `embeddings`), and sets on `index` the fastest setting that reaches
  `target_recall` at `k` (else the most accurate one).

  Returns:
    {'leaves_to_search', 'reorder', 'recall', 'qps', 'sweep': [...]}
  """
  cfg = index.manifest['config']
  truth_rows, _ = topk.exact_top_k(queries, embeddings, k)
  truth = np.asarray(ids, np.int64)[truth_rows]
  if cfg['brute_force']:
    leaves, reorders = (0,), (0,)
  else:
    n_leaves = cfg['num_leaves']
    leaves = leaves or tuple(
      sorted(
        {
          max(1, min(n_leaves, round(n_leaves * f)))
          for f in (0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12, 0.2, 0.35, 0.5)
        }
      )
    )
    reorders = reorders or (k, 2 * k, 4 * k, 8 * k)
  sweep = []
  # For a fixed re-rank size, more leaves are slower: stop at the first that reaches the target.
  for ro in reorders:
    for lv in leaves:
      index._leaves, index._reorder = lv or None, ro or None
      # Untimed: the first search after a change of setting was up to 3x slower (1M vectors:
      # 2.7k q/s, then 8.1k at twice the leaves).
      index.search_batched(queries[:100], k)
      start = time.perf_counter()
      found, _ = index.search_batched(queries, k)
      qps = len(queries) / (time.perf_counter() - start)
      sweep.append(
        {'leaves_to_search': lv, 'reorder': ro, 'recall': recall(found, truth), 'qps': qps}
      )
      logging.info('tune: %s', sweep[-1])
      if sweep[-1]['recall'] >= target_recall:
        break
  ok = [s for s in sweep if s['recall'] >= target_recall]
  best = max(ok, key=lambda s: s['qps']) if ok else max(sweep, key=lambda s: s['recall'])
  index._leaves, index._reorder = best['leaves_to_search'] or None, best['reorder'] or None
  index.manifest['search'] = {
    'leaves_to_search': index._leaves,
    'reorder': index._reorder,
    'tuned': True,
    'target_recall': target_recall,
    'k': k,
    'recall': best['recall'],
    'qps': best['qps'],
    'reached_target': bool(ok),
  }
  return {**best, 'sweep': sweep}


def build(
  embeddings: np.ndarray,
  ids: np.ndarray,
  export_manifest: dict[str, Any],
  cfg: IndexConfig | None = None,
) -> Index:
  """An in-memory index with a manifest copied from the export's (not yet saved)."""
  cfg = cfg or configure(len(ids))
  from scann.scann_ops.py import scann_ops_pybind  # noqa: F401  (imported outside the timing)

  start = time.perf_counter()
  searcher = build_searcher(embeddings, ids, cfg)
  manifest = {
    **{k: export_manifest.get(k) for k in ('checkpoint_step', 'config_fingerprint', 'source')},
    'kind': 'scann_index',
    'dim': int(embeddings.shape[1]),
    'count': len(ids),
    'dtype': 'float32',
    'config': dataclasses.asdict(cfg),
    'search': {
      'leaves_to_search': cfg.leaves_to_search or None,
      'reorder': cfg.reorder or None,
      'tuned': False,
    },
    'export': export_manifest,
    'build_seconds': time.perf_counter() - start,
    'created': manifest_lib.now(),
  }
  return Index(searcher, manifest)


def load(
  directory: str | os.PathLike,
  *,
  fingerprint: str | None = None,
  dim: int | None = None,
  step: int | None = None,
  verify: str = 'sizes',
  rebuild: str = '',
) -> Index:
  """Loads an index, refusing one that is unfinished, damaged or made for another model.

  `verify` as `manifest.read`; `rebuild` replaces the generic rebuild advice.

  Raises:
    ManifestError: no manifest (interrupted build), a damaged file (named) or a mismatch
      (dim, fingerprint, step), with the rebuild to run.
  """
  from scann.scann_ops.py import scann_ops_pybind

  directory = pathlib.Path(directory)
  rebuild = rebuild or REBUILD
  manifest = manifest_lib.read(directory, 'scann_index', verify=verify, rebuild=rebuild)
  manifest_lib.check_compatible(
    manifest,
    what=f'index {directory}',
    rebuild=rebuild,
    fingerprint=fingerprint,
    dim=dim,
    step=step,
  )
  try:
    searcher = scann_ops_pybind.load_searcher(str(directory))
  except Exception as e:  # noqa: BLE001  (ScaNN raises RuntimeError, pickle and OS errors)
    first = (str(e).strip().splitlines() or [''])[0]
    raise manifest_lib.ManifestError(
      f'damaged artefact: index {directory} does not load ({type(e).__name__}: {first}). {rebuild}'
    ) from None
  return Index(searcher, manifest)


def build_from_export(
  export_dir: str | os.PathLike,
  out_dir: str | os.PathLike,
  *,
  k: int = 100,
  brute_force_below: int = 50_000,
  do_tune: bool = False,
  tune_queries_dir: str | os.PathLike = '',
  num_tune_queries: int = 1000,
  target_recall: float = 0.95,
) -> Index:
  """Builds (and optionally tunes) the index of an export and saves it to `out_dir`.

  Tuning queries are the query embeddings exported to `tune_queries_dir`; without one, a
  seeded sample of the catalogue's own embeddings stands in (recorded in the manifest).
  """
  from make_jax.export import embed

  ids, emb, _, export_manifest = embed.read_embeddings(export_dir)
  index = build(emb, ids, export_manifest, configure(len(ids), k, brute_force_below))
  logging.info(
    'Built %s over %d products in %.1fs',
    index.manifest['config'],
    len(ids),
    index.manifest['build_seconds'],
  )
  if do_tune:
    if tune_queries_dir:
      _, queries, _, qm = embed.read_embeddings(tune_queries_dir)
      manifest_lib.check_compatible(
        qm,
        what=f'tuning queries {tune_queries_dir}',
        rebuild=REBUILD,
        fingerprint=export_manifest['config_fingerprint'],
        dim=emb.shape[1],
      )
      source = str(tune_queries_dir)
    else:
      rows = np.random.default_rng(0).choice(len(ids), min(num_tune_queries, len(ids)), False)
      queries, source = emb[rows], 'catalogue sample'
    result = tune(index, ids, emb, queries[:num_tune_queries], k=k, target_recall=target_recall)
    index.manifest['search']['tune_queries'] = source
    index.manifest['tune_sweep'] = result['sweep']
  index.save(out_dir)
  return index
