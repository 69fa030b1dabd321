"""Assembling a `Searcher` from its parts: a workdir's, or a demo's built in memory.

`build_searcher` wires catalogue, embeddings, ANN index, table, model and preprocessor
into relevance control, filtered search and the batching encoder. Two sources feed it:

* a training workdir (`tools/serve.py --workdir`): `config.json`, `vocab.txt`, the
  parameters (read by the tool through the trainer's checkpoint reader: serving never
  imports train) and the exported arrays of `load_export`.
* `demo_searcher`: the catalogue of the config's dataset (the real fashion zip or the
  synthetic one), a randomly initialised model and product embeddings computed here by
  `MakeModel.encode_product` over real titles and images: an untrained ranking, but
  every piece of the serving path runs as it will with a trained one.
"""

import json
import os
import pathlib
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np

from make_jax.datasets import fashion_products as fashion_builder
from make_jax.datasets import synthetic, synthetic_products
from make_jax.input import featurize
from make_jax.models import make_model
from make_jax.serving import catalogue as catalogue_lib
from make_jax.serving import encoder as encoder_lib
from make_jax.serving import filters, search
from make_jax.serving import index as index_lib
from make_jax.text import preprocess


def catalogue_for_config(
  config: ml_collections.ConfigDict, limit: int | None = None
) -> catalogue_lib.Catalogue:
  """The catalogue of `config.data` (fashion zip from manual_dir, or generated synthetic)."""
  if config.data.name == 'fashion_products':
    path = pathlib.Path(config.data.manual_dir) / fashion_builder.ARCHIVE
    return catalogue_lib.Catalogue.from_fashion_zip(path, limit=limit)
  if config.data.name == 'synthetic_products':
    spec = synthetic_products.config_for_name(config.data.builder_config).spec
    cat = catalogue_lib.Catalogue.from_synthetic(synthetic.generate(spec))
    return cat if limit is None else cat.take(np.arange(min(limit, len(cat))))
  raise ValueError(f'no catalogue reader for dataset {config.data.name!r}')


def load_config(workdir: str | os.PathLike) -> ml_collections.ConfigDict:
  """The run's config from `<workdir>/config.json`."""
  path = pathlib.Path(workdir) / 'config.json'
  if not path.exists():
    raise FileNotFoundError(
      f'{path} not found: a served workdir holds config.json, vocab.txt, checkpoints/ and export/'
    )
  with open(path, encoding='utf-8') as f:
    return ml_collections.ConfigDict(json.load(f))


def load_export(
  export_dir: str | os.PathLike, catalogue: catalogue_lib.Catalogue
) -> tuple[catalogue_lib.Catalogue, np.ndarray, np.ndarray | None, index_lib.AnnIndex]:
  """Exported product arrays, memory-mapped, and the catalogue rows in their order.

  Reads `ids.npy` (int64 [N]), `embeddings.npy` (float32 [N, d]), optionally
  `modal_weights.npy` (float32 [N, 2]) and a serialised ScaNN searcher in `scann/`
  (else an exact index over the embeddings).

  Raises:
    ValueError: an exported id is not in the catalogue.
  """
  d = pathlib.Path(export_dir)
  ids = np.load(d / 'ids.npy')
  emb = np.load(d / 'embeddings.npy', mmap_mode='r')
  weights = (
    np.load(d / 'modal_weights.npy', mmap_mode='r') if (d / 'modal_weights.npy').exists() else None
  )
  rows = catalogue.rows_of_ids(ids)
  if (rows < 0).any():
    raise ValueError(f'{int((rows < 0).sum())} exported ids are not in the catalogue')
  if (d / 'scann').is_dir():
    from make_jax.serving import scann_index

    ann = scann_index.ScannIndex.load(d / 'scann', len(ids))
  else:
    ann = index_lib.ExactIndex(emb)
  return catalogue.take(rows), emb, weights, ann


def build_searcher(
  config: ml_collections.ConfigDict,
  catalogue: catalogue_lib.Catalogue,
  preprocessor: preprocess.TextPreprocessor,
  embeddings: np.ndarray,
  *,
  params=None,
  index: index_lib.AnnIndex | None = None,
  table: index_lib.QueryTable | None = None,
  modal_weights: np.ndarray | None = None,
  buckets: Sequence[int] = (8,),
  max_batch: int = 8,
  max_wait_ms: float = 2.0,
  warmup: bool = True,
) -> search.Searcher:
  """A Searcher over the parts (params None: table hits only, misses answer 503)."""
  relevance = filters.RelevanceControl(catalogue.restricted_columns())
  filtered = filters.FilteredSearch(
    index or index_lib.ExactIndex(embeddings), embeddings, relevance.inverted
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
  )


def encode_catalogue(
  config: ml_collections.ConfigDict,
  model: make_model.MakeModel,
  params,
  catalogue: catalogue_lib.Catalogue,
  preprocessor: preprocess.TextPreprocessor,
  batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
  """Product embeddings float32 [N, d] and modal weights [N, 2] of every catalogue row."""
  size, title_len = config.data.image_size, config.text.title_len
  fn = jax.jit(
    lambda p, t, m, img, miss: model.apply(
      {'params': p}, t, m, img, miss, method=model.encode_product
    )
  )
  embs, weights = [], []
  for start in range(0, len(catalogue), batch_size):
    rows = np.arange(start, min(start + batch_size, len(catalogue)))
    pad = batch_size - len(rows)
    titles = [catalogue.titles[r] for r in rows] + [''] * pad
    ids, mask = preprocessor.encode_batch(titles, title_len)
    images = np.zeros((batch_size, size, size, 3), np.uint8)
    missing = np.ones(batch_size, bool)
    for j, r in enumerate(rows):
      data = catalogue.image(int(catalogue.ids[r]))
      if data is not None:
        images[j] = featurize.decode_image(data, size)
        missing[j] = False
    e, w = fn(params, ids, mask, images, missing)
    embs.append(np.asarray(e)[: len(rows)])
    weights.append(np.asarray(w)[: len(rows)])
  return np.concatenate(embs).astype(np.float32), np.concatenate(weights).astype(np.float32)


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
  emb, weights = encode_catalogue(config, model, params, catalogue, preprocessor)
  return build_searcher(
    config, catalogue, preprocessor, emb, params=params, modal_weights=weights, **kwargs
  )
