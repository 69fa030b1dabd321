r"""Builds the ScaNN index of an embedding export (and tunes it with --tune).

  python -m tools.build_index --embeddings=/tmp/emb --out=/tmp/index --tune \
      --tune_queries=/tmp/query_emb

Brute force below --brute_force_below products; above, a spherical k-means tree of
~2*sqrt(N) leaves with asymmetric hashing and exact re-ranking (make_jax/export/scann_index.py).
The directory can be moved; it is written to a staging directory and renamed when complete.
With --workdir (a trained run), --embeddings and --out default to `<workdir>/export/products`
and `<workdir>/export/index`, where `tools.serve --workdir` reads them.
"""

import pathlib

from absl import app, flags

from make_jax import rundir
from make_jax.export import scann_index as index_lib

_WORKDIR = flags.DEFINE_string('workdir', '', 'Trained run whose export/ to index.')
_EMB = flags.DEFINE_string('embeddings', '', 'Export directory (tools.export).')
_OUT = flags.DEFINE_string('out', '', 'Index directory (replaced atomically).')
_K = flags.DEFINE_integer('k', 100, 'Default neighbours per query.')
_BF = flags.DEFINE_integer('brute_force_below', 50_000, 'Brute force below this many products.')
_TUNE = flags.DEFINE_bool('tune', False, 'Sweep search settings against exact search.')
_TQ = flags.DEFINE_string('tune_queries', '', 'Query export to tune on (default: a sample).')
_NTQ = flags.DEFINE_integer('num_tune_queries', 1000, 'Tuning queries used.')
_RECALL = flags.DEFINE_float('target_recall', 0.95, 'Recall@k the tuned setting must reach.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  layout = rundir.RunDir(pathlib.Path(_WORKDIR.value)) if _WORKDIR.value else None
  emb = _EMB.value or (str(layout.products) if layout else '')
  out = _OUT.value or (str(layout.index) if layout else '')
  if not (emb and out):
    raise app.UsageError('give --workdir, or both --embeddings and --out')
  index = index_lib.build_from_export(
    emb,
    out,
    k=_K.value,
    brute_force_below=_BF.value,
    do_tune=_TUNE.value,
    tune_queries_dir=_TQ.value,
    num_tune_queries=_NTQ.value,
    target_recall=_RECALL.value,
  )
  m = index.manifest
  print(
    {
      'count': m['count'],
      'dim': m['dim'],
      'config': m['config'],
      'search': m['search'],
      'build_seconds': round(m['build_seconds'], 2),
    }
  )


if __name__ == '__main__':
  app.run(main)
