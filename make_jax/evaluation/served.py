"""The results table's served row: a trained run's rankings as serving makes them.

Why: the exact search of `results.rank_trained` scores the model; this module scores
what users get from it (SPEC 7): the newest checkpoint's product embeddings exported by
the Beam pipeline (`export.embed.export_catalogue`), the index the index builder makes of
them (`export.scann_index.build_from_export`: brute force below 50k products, as configured),
and the served `Searcher` (`serving.service.searcher_from_workdir`) answering every query
through `serving.batch.search_lines` with relevance control on: query understanding, the
inverted index and filtered search, in either relevance mode (`filters.MODES`: backfill,
lists of k with the satisfying products first; strict, the paper's filter, lists that
may be shorter). Nothing here searches or filters by itself.

What is written where: the run's own serving layout (`<workdir>/export/`, which
`tools.export`, `tools.build_index` and `tools.serve --workdir` use) is never touched.
Each catalogue gets a served view of the run, a directory in `rundir.RunDir`'s layout:

  <workdir>/served/<builder_config>/
    config.json                the run's config, with data.builder_config / data.data_dir
                               of that catalogue (its export reads that TFDS builder)
    vocab.txt, domain_words.txt   copies of the run's (the searcher's preprocessor)
    export/products/           the catalogue split's embeddings + manifest (newest step)
    export/index/              the ScaNN index of that export + manifest

so `default` and `hide_colour` (the same products, titles without their colour words:
other embeddings) sit side by side. A view whose export and index manifests carry the
newest checkpoint step, the run's config fingerprint and this catalogue is reused; any
other is rebuilt (each directory replaced atomically, `export.manifest.staging_dir`).

No query table: every query is encoded online. The table of a served run is built from
a query log; here the log would be these same test queries, and with a brute-force index
the table holds exactly the online path's top-K of the same embedding (the table path only
adds a fallback when the filter leaves fewer than k of its rows). It would cost a Beam
job per split and measure nothing the online path does not.
"""

import functools
import json
import os
import pathlib
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

from make_jax import atomic_file, rundir
from make_jax.export import embed, querylog
from make_jax.export import manifest as manifest_lib
from make_jax.export import scann_index as export_index
from make_jax.serving import batch, filters, service
from make_jax.text import vocab as vocab_lib

SERVED_DIR = 'served'  # Under the run's workdir: one view per catalogue (module docstring).
INDEX_K = 100  # The index's default neighbours (every search here passes its own k).
BRUTE_FORCE_BELOW = 50_000  # As tools/build_index.py's default: exact below this size.


def view_dir(workdir: str | os.PathLike, builder_config: str) -> pathlib.Path:
  """The served view of a run for one catalogue: `<workdir>/served/<builder_config>`."""
  return pathlib.Path(workdir) / SERVED_DIR / builder_config


@functools.lru_cache(maxsize=1)
def _params_at(step_dir: str) -> tuple[Any, int]:
  """(params, step) of one checkpoint directory, kept for the next call.

  The export's loader (called by the pipeline's driver and by its in-process workers) and
  the searcher read the same checkpoint: restoring it once saves ~4 s of model tracing and
  reading per call at tiny scale. One model's params stay in memory until another is read.
  """
  return rundir.latest_params(step_dir)


def _is_current(directory: pathlib.Path, kind: str, step: int, fingerprint: str, source) -> bool:
  """Whether `directory` is a finished artefact of this checkpoint, model and catalogue."""
  try:
    m = manifest_lib.read(directory, kind)
  except manifest_lib.ManifestError:
    return False
  return (
    m.get('checkpoint_step') == step
    and m.get('config_fingerprint') == fingerprint
    and m.get('source') == source
  )


def prepare_view(
  workdir: str | os.PathLike, builder: Any, *, batch_size: int = 64
) -> tuple[rundir.RunDir, Any, int]:
  """Writes (or reuses) the served view of `workdir` for `builder`'s catalogue.

  Args:
    workdir: a trained run (config.json, vocab.txt, domain_words.txt, checkpoints/).
    builder: the prepared TFDS builder whose `catalogue` split is exported.
    batch_size: the export's encoder batch.

  Returns:
    (view's RunDir, params, step) of the newest checkpoint.

  Raises:
    ValueError: the builder is of another dataset than the run's.
    FileNotFoundError: no checkpoint, config or vocabulary in `workdir`.
  """
  run = rundir.RunDir(pathlib.Path(workdir))
  config = rundir.load_config(run.root)
  if builder.name != config.data.name:
    raise ValueError(f'{run.root} trained on {config.data.name}, not on {builder.name}')
  step_dir, _ = rundir.find_checkpoint(run.root)
  loader = functools.partial(_params_at, str(step_dir))
  params, step = loader()
  config.data.builder_config = builder.builder_config.name
  config.data.data_dir = os.fspath(builder.data_dir_root)

  lay = rundir.RunDir(view_dir(run.root, config.data.builder_config))
  lay.root.mkdir(parents=True, exist_ok=True)
  for name in (run.vocab.name, querylog.DOMAIN_WORDS_FILE):
    if (run.root / name).is_file():
      atomic_file.write_bytes(lay.root / name, (run.root / name).read_bytes())
  atomic_file.write_text(lay.config, config.to_json_best_effort(indent=1))
  fingerprint = manifest_lib.config_fingerprint(config, vocab_lib.load_vocab_file(lay.vocab))
  source = {
    'dataset': config.data.name,
    'builder_config': config.data.builder_config,
    'split': 'catalogue',
  }
  if not _is_current(lay.products, 'product_embeddings', step, fingerprint, source):
    embed.export_catalogue(
      config,
      str(lay.vocab),
      lay.products,
      loader=loader,
      batch_size=batch_size,
    )
    shutil.rmtree(lay.index, ignore_errors=True)  # Made from the previous export.
  if not _is_current(lay.index, 'scann_index', step, fingerprint, source):
    export_index.build_from_export(
      lay.products, lay.index, k=INDEX_K, brute_force_below=BRUTE_FORCE_BELOW
    )
  return lay, params, step


def rank_served(
  workdir: str | os.PathLike,
  builder: Any,
  queries: Sequence[str],
  k: int,
  *,
  use_filters: bool = True,
  relevance_mode: str = filters.DEFAULT_MODE,
  ranked_path: str | os.PathLike | None = None,
  max_batch: int = 64,
) -> dict[str, list[int]]:
  """Rankings of `queries` by the served path of a trained run (module docstring).

  Args:
    workdir: the trained run (its newest checkpoint is served).
    builder: the prepared TFDS builder of the catalogue to search (`default` or
      `hide_colour`); its export and index go to `view_dir(workdir, <its config>)`.
    queries: the query texts, e.g. an `EvalSet`'s `queries`.
    k: results per query.
    use_filters: relevance control on (the served row) or off (the ablation, and the
      check against exact search).
    relevance_mode: how filtered lists are completed (`filters.MODES`).
    ranked_path: also write the answers as `tools/search.py` does (JSON lines with scores,
      whether each product satisfies the filter, path, mode and the filters that
      applied), atomically.
    max_batch: queries the online encoder encodes per call.

  Returns:
    {query: product ids, best first} (as `sources.rankings_of` gives; repeated queries once).
  """
  lay, params, step = prepare_view(workdir, builder)
  searcher = service.searcher_from_workdir(
    lay.root,
    params=params,
    step=step,
    max_batch=max_batch,
    warmup=False,
    relevance_mode=relevance_mode,
  )
  try:
    entries = [(number, q, None) for number, q in enumerate(queries, start=1)]
    lines, _ = batch.search_lines(searcher, entries, k, use_filters=use_filters)
  finally:
    searcher.encoder.close()
  if ranked_path is not None:
    atomic_file.write_text(ranked_path, ''.join(line + '\n' for line in lines))
  out: dict[str, list[int]] = {}
  for line in lines:
    record = json.loads(line)
    out.setdefault(record['query'], record['product_ids'])
  return out


def best_trained_row(
  results: Mapping[str, Any],
  candidates: Sequence[str],
  *,
  split: str = 'default/test',
  metric: str = 'recall@100',
) -> str:
  """The trained row with the highest `metric` on `split` (ties: the earlier in the table).

  The results driver passes a validation split (`tools/results.py --select_on`), so the
  served row is chosen without looking at the test queries it is reported on.

  Args:
    results: `results.run_results`' dict ({'rows': {name: {'splits': ...}}}, table order).
    candidates: row names to choose from (the driver passes its rows of kind 'trained').
    split, metric: where the score is read.

  Raises:
    ValueError: no candidate row has the score (none trained or scored yet).
  """
  best, best_score = None, None
  for name, row in results.get('rows', {}).items():
    score = row.get('splits', {}).get(split, {}).get('overall', {}).get(metric)
    if name not in candidates or score is None or score != score:  # NaN: not scored.
      continue
    if best_score is None or score > best_score:
      best, best_score = name, score
  if best is None:
    raise ValueError(f'no trained row has {metric} on {split} yet: run the trained rows first')
  return best
