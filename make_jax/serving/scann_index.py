"""A ScaNN `AnnIndex` built in memory over an embedding matrix (benchmarks, filter tests).

Served indexes are built offline (`export.index`, `tools.build_index`) and loaded by
`service.searcher_from_workdir`. Relevance control's benchmarks and recall tests need a
tree + AH + re-ranking index over arbitrary vectors; this builds one with the export's own
recipe (`export.index.build_searcher`, docids = row numbers) behind `index.RowIndex`, so
the index they measure is the one that is served.
"""

import numpy as np

from make_jax.export import index as export_index
from make_jax.serving import index as index_lib


class ScannIndex(index_lib.RowIndex):
  """`RowIndex` over an export-recipe ScaNN index whose product ids are the rows."""

  @classmethod
  def build(
    cls,
    embeddings: np.ndarray,
    *,
    num_leaves: int | None = None,
    leaves_to_search: int | None = None,
    reorder: int = 100,
  ) -> 'ScannIndex':
    """Tree (~sqrt(N) leaves, a quarter searched by default) + AH + exact re-ranking of at
    least `reorder` candidates, over float32 [N, d] unit vectors."""
    n = embeddings.shape[0]
    leaves = num_leaves or max(2, int(np.sqrt(n)))
    cfg = export_index.IndexConfig(
      k=10,
      brute_force=False,
      num_leaves=leaves,
      leaves_to_search=leaves_to_search or max(1, leaves // 4),
      reorder=reorder,
      training_sample_size=n,
    )
    rows = np.arange(n, dtype=np.int64)
    built = export_index.build(np.asarray(embeddings, np.float32), rows, {}, cfg)
    return cls(built, rows)
