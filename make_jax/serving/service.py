"""Assembling a `Searcher` from its parts: a workdir's, or a demo's built in memory.

`build_searcher` wires catalogue, embeddings, ANN index, table, model and preprocessor
into relevance control, filtered search and the batching encoder. Two sources feed it:

* a training workdir (`tools/serve.py --workdir`, `searcher_from_workdir`): `config.json`,
  `vocab.txt` and `domain_words.txt` (the run's text), the parameters (read by the tool
  through the trainer's checkpoint reader: serving never imports train) and the offline
  artefacts in the fixed layout of `rundir.RunDir`, each checked against the run's config
  fingerprint (an artefact of another model is refused with the command that rebuilds it).
* `demo_searcher`: the catalogue of the config's dataset (the real fashion zip or the
  synthetic one), a randomly initialised model and product embeddings computed here
  (`encode_catalogue`: the training featuriser and the product tower, as the evaluator and
  the export embed products) over real titles and images: an untrained ranking, but every
  piece of the serving path runs as it will with a trained one.
"""

import collections
import logging
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from make_jax import rundir
from make_jax.datasets import fashion_products as fashion_builder
from make_jax.datasets import synthetic, synthetic_products
from make_jax.export import embed, query_table, querylog
from make_jax.export import manifest as manifest_lib
from make_jax.export import scann_index as export_index
from make_jax.input import featurize
from make_jax.models import make_model
from make_jax.retrieval import catalogue as catalogue_lib
from make_jax.retrieval import tower as tower_lib
from make_jax.serving import ann as ann_lib
from make_jax.serving import encoder as encoder_lib
from make_jax.serving import filters, search
from make_jax.serving import table as table_lib
from make_jax.text import preprocess
from make_jax.text import vocab as vocab_lib


def catalogue_for_config(
  config: ml_collections.ConfigDict, limit: int | None = None
) -> catalogue_lib.Catalogue:
  """The catalogue of `config.data` (fashion zip from manual_dir, or generated synthetic)."""
  if config.data.name == 'fashion_products':
    path = pathlib.Path(config.data.manual_dir) / fashion_builder.ARCHIVE
    return catalogue_lib.from_fashion_zip(path, limit=limit)
  if config.data.name == 'synthetic_products':
    spec = synthetic_products.config_for_name(config.data.builder_config).spec
    cat = catalogue_lib.from_synthetic(synthetic.generate(spec))
    return cat if limit is None else cat.take(np.arange(min(limit, len(cat))))
  raise ValueError(f'no catalogue reader for dataset {config.data.name!r}')


def _require(directory: pathlib.Path, what: str, command: str) -> None:
  if not (directory / manifest_lib.MANIFEST).is_file():
    raise manifest_lib.ManifestError(
      f'no finished {what} at {directory} (no {manifest_lib.MANIFEST}); build it with: {command}'
    )


def searcher_from_workdir(
  workdir: str | os.PathLike,
  *,
  params: Any = None,
  step: int | None = None,
  verify: str = 'sizes',
  **kwargs: Any,
) -> search.Searcher:
  """The Searcher of a trained workdir's export (layout: `rundir.RunDir`).

  Reads the product embeddings and modal weights (`embed.read_embeddings`), the ScaNN
  index (`export.scann_index.load`) and, when built, the query table; the catalogue rows are
  taken in the export's order. Every artefact must carry the run's config fingerprint
  (model, text config, vocabulary) and dimension, and, when `step` is given, the step of
  the served params. Without a query table every query goes online.

  Args:
    workdir: the training workdir.
    params: the model's params (`rundir.latest_params`); None serves table hits
      only.
    step: the checkpoint step of `params` (None: not checked).
    verify: how the artefacts' files are checked against their manifests ('sizes', or
      'checksums': every byte read once at start-up; `export.manifest.read`). A damaged
      export or index is an error naming the file; a damaged query-table shard is marked
      bad and its queries go online (`/healthz` says degraded).
    **kwargs: `build_searcher`'s batching options and relevance mode.

  Raises:
    ManifestError: an artefact is missing, unfinished or made for another model; the
      message names the command that rebuilds it.
    ValueError: an exported product is not in the config's catalogue.
  """
  lay = rundir.RunDir(pathlib.Path(workdir))
  config = rundir.load_config(lay.root)
  if not lay.vocab.is_file():
    raise FileNotFoundError(f"{lay.vocab} not found: the run's vocabulary is needed to serve")
  pre = querylog.text_preprocessor(config, str(lay.vocab))
  fingerprint = manifest_lib.config_fingerprint(config, vocab_lib.load_vocab_file(lay.vocab))
  check = dict(fingerprint=fingerprint, dim=config.model.embed_dim, step=step)
  rebuild_all = f'Rebuild: {lay.export_command()}; {lay.index_command()}; {lay.table_command()}'

  _require(lay.products, 'product export', lay.export_command())
  ids, emb, other, products_manifest = embed.read_embeddings(
    lay.products, verify=verify, rebuild=f'Rebuild: {lay.export_command()}; {lay.index_command()}'
  )
  manifest_lib.check_compatible(
    products_manifest, what=f'product export {lay.products}', rebuild=rebuild_all, **check
  )
  full = catalogue_for_config(config)
  rows = full.rows_of_ids(ids)
  if (rows < 0).any():
    raise ValueError(
      f'{int((rows < 0).sum())} exported ids are not in the catalogue of {config.data.name}'
      f'/{config.data.builder_config}. {rebuild_all}'
    )

  _require(lay.index, 'index', lay.index_command())
  index_rebuild = f'Rebuild: {lay.index_command()} (after re-exporting if the export is stale)'
  loaded = export_index.load(lay.index, verify=verify, rebuild=index_rebuild, **check)
  if loaded.size != len(ids):
    raise manifest_lib.ManifestError(
      f'index {lay.index} holds {loaded.size} products, the export {len(ids)}: it was built '
      f'from another export. Rebuild: {lay.index_command()}'
    )
  ann = ann_lib.RowIndex(loaded, ids)

  table = None
  if lay.query_table.exists():
    _require(lay.query_table, 'query table', lay.table_command())
    opened = query_table.QueryTable(
      lay.query_table, verify=verify, rebuild=f'Rebuild: {lay.table_command()}'
    )
    manifest_lib.check_compatible(
      opened.manifest,
      what=f'query table {lay.query_table}',
      rebuild=f'Rebuild: {lay.table_command()}',
      **check,
    )
    table = table_lib.ExportTable(opened)
  else:
    logging.warning('no query table at %s: every query is encoded online', lay.query_table)
  weights = other.get('modal_weights')
  return build_searcher(
    config,
    full.take(rows),
    pre,
    emb,
    params=params,
    index=ann,
    table=table,
    modal_weights=None if weights is None else np.asarray(weights, np.float32),
    **kwargs,
  )


def build_searcher(
  config: ml_collections.ConfigDict,
  catalogue: catalogue_lib.Catalogue,
  preprocessor: preprocess.TextPreprocessor,
  embeddings: np.ndarray,
  *,
  params=None,
  index: ann_lib.AnnIndex | None = None,
  table: table_lib.TableLookup | None = None,
  modal_weights: np.ndarray | None = None,
  buckets: Sequence[int] = (8,),
  max_batch: int = 8,
  max_wait_ms: float = 2.0,
  warmup: bool = True,
  relevance_mode: str = filters.DEFAULT_MODE,
) -> search.Searcher:
  """A Searcher over the parts (params None: table hits only, misses answer 503).

  relevance_mode: how filtered lists are completed (`filters.MODES`; a search may ask
  for the other).
  """
  relevance = filters.RelevanceControl.of_catalogue(catalogue)
  filtered = filters.FilteredSearch(
    index or ann_lib.ExactIndex(embeddings), embeddings, relevance.inverted
  )
  enc = None
  if params is not None:
    enc = encoder_lib.BatchingQueryEncoder(
      make_model.build_model(config),
      params,
      preprocessor,
      query_len=config.text.query_len,
      buckets=buckets,
      max_batch=max_batch,
      max_wait_ms=max_wait_ms,
    )
    if warmup:
      enc.warmup()
  return search.Searcher(
    catalogue,
    preprocessor,
    filtered,
    relevance,
    encoder=enc,
    table=table,
    modal_weights=modal_weights,
    relevance_mode=relevance_mode,
  )


def encode_catalogue(
  config: ml_collections.ConfigDict,
  model: make_model.MakeModel,
  params,
  catalogue: catalogue_lib.Catalogue,
  preprocessor: preprocess.TextPreprocessor,
  batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, collections.Counter]:
  """Embeds the catalogue's products as the evaluator and the export do.

  Each product goes through the training featuriser (`featurize.make_featurizer`, as
  `retrieval.evaluator` and `export.embed` read their records) and the shared
  `retrieval.tower.TowerEncoder`. A product the featuriser refuses (an empty title, an
  undecodable image) is skipped and counted, as those two skip it.

  Returns:
    (rows, embeddings, modal_weights, skipped): the catalogue rows embedded int64 [M],
    their embeddings float32 [M, d] and (title, image) weights [M, 2], and the skipped
    products by reason.
  """
  featurise = featurize.make_featurizer(
    preprocessor,
    image_size=config.data.image_size,
    query_len=config.text.query_len,
    title_len=config.text.title_len,
    require_query=False,
  )
  encoder = tower_lib.TowerEncoder(model, tower='product', batch_size=batch_size, params=params)
  rows, examples, embs, weights = [], [], [], []
  skipped: collections.Counter = collections.Counter()

  def flush():
    batch = {k: np.stack([ex[k] for ex in examples]) for k in encoder.inputs}
    out = encoder(batch)
    embs.append(out['embedding'])
    weights.append(out['modal_weights'])
    examples.clear()

  for row in range(len(catalogue)):
    pid = int(catalogue.ids[row])
    image = catalogue.image(pid)
    record = {
      'product_id': pid,
      'title': catalogue.titles[row],
      'query': '',
      'image': b'' if image is None else image,
      'image_missing': image is None,
      'log_p': 0.0,
    }
    try:
      examples.append(featurise(record))
    except featurize.SkipRecord as e:
      skipped[e.args[0]] += 1
      continue
    rows.append(row)
    if len(examples) == batch_size:
      flush()
  if examples:
    flush()
  if not rows:
    raise ValueError(f'No product of the catalogue could be featurised (skipped: {dict(skipped)})')
  return np.asarray(rows, np.int64), np.concatenate(embs), np.concatenate(weights), skipped


def demo_searcher(
  config: ml_collections.ConfigDict, num_products: int | None = 2000, seed: int = 0, **kwargs
) -> search.Searcher:
  """A Searcher over the config's catalogue with a random model (see module docstring)."""
  catalogue = catalogue_for_config(config, limit=num_products)
  preprocessor = preprocess.TextPreprocessor.from_corpus(
    catalogue.titles, min(config.text.vocab_size, config.model.vocab_size)
  )
  model = make_model.build_model(config)
  params = make_model.init_params(model, jax.random.key(seed), make_model.example_batch(config, 2))
  rows, emb, weights, skipped = encode_catalogue(config, model, params, catalogue, preprocessor)
  if skipped:
    logging.warning(
      'demo catalogue: %d products skipped (%s)', sum(skipped.values()), dict(skipped)
    )
    catalogue = catalogue.take(rows)
  return build_searcher(
    config, catalogue, preprocessor, emb, params=params, modal_weights=weights, **kwargs
  )
