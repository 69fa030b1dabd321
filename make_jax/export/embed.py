"""Export: catalogue (or query log) -> embedding shards + manifest, as a Beam pipeline.

Why (SPEC 7.1, 7.6): a catalogue of hundreds of millions of products does not fit one
machine, so export is a Beam pipeline: index ranges of the TFDS split are read and
featurised by the training featuriser, `RunInference` runs the product tower with
`MakeModelHandler`, and elements are grouped into shards (by id modulo the shard count),
each written by one worker as `shard-XXXXX-of-YYYYY.npz`: `ids` int64 [n] (product ids, or
qids for queries), `embedding` float32 [n, d], and `modal_weights` float32 [n, 2]
(a_title, a_image) for products or `count` int64 [n] for queries. The driver then counts
the shards, writes `manifest.json` (checkpoint step, config fingerprint, dim, count, dtype,
skipped records) and publishes the directory by one rename. The DirectRunner runs it on
this machine; the same code runs on Dataflow, Flink or Spark (with paths on a filesystem
that every worker and the driver share).
"""

import io
import logging
import os
import pathlib
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
import ml_collections
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import RunInference

from make_jax import atomic_file
from make_jax.export import manifest as manifest_lib
from make_jax.export import querylog
from make_jax.export.model_handler import MakeModelHandler, ParamsLoader
from make_jax.export.runner import pipeline_options
from make_jax.text import vocab as vocab_lib

NAMESPACE = 'make_jax.export'


class _ReadAndFeaturize(beam.DoFn):
  """(start, stop) -> featurised catalogue records [start, stop) of the TFDS split."""

  def __init__(self, config, vocab_path, split, data_dir):
    self._config, self._vocab_path, self._split, self._data_dir = (
      config,
      vocab_path,
      split,
      data_dir,
    )

  def setup(self):
    import tensorflow_datasets as tfds

    from make_jax.datasets import loading
    from make_jax.input import featurize

    c = self._config
    builder = loading.get_builder(c.data.name, c.data.builder_config, self._data_dir)
    self._source = builder.as_data_source(
      self._split, decoders={'image': tfds.decode.SkipDecoding()}
    )
    self._skip = featurize.SkipRecord
    self._featurize = featurize.make_featurizer(
      querylog.text_preprocessor(c, self._vocab_path),
      image_size=c.data.image_size,
      query_len=c.text.query_len,
      title_len=c.text.title_len,
      require_query=False,
    )

  def process(self, span: tuple[int, int]) -> Iterator[dict[str, Any]]:
    for record in self._source.__getitems__(list(range(*span))):
      try:
        ex = self._featurize(record)
      except self._skip as e:
        Metrics.counter(NAMESPACE, f'skipped_{e.args[0]}').inc()
        continue
      Metrics.counter(NAMESPACE, 'products_read').inc()
      yield {
        'id': int(ex['product_id']),
        **{k: ex[k] for k in ('title_ids', 'title_mask', 'image', 'image_missing')},
      }


def _write_shard(item: tuple[Any, Iterable[Any]], directory: str, num_shards: int) -> None:
  """Writes one shard's elements, sorted by id, as an .npz (atomically)."""
  shard, elements = item
  rows = sorted(elements, key=lambda e: e['id'])
  arrays = {
    'ids': np.array([e['id'] for e in rows], np.int64),
    'embedding': np.stack([e['embedding'] for e in rows]).astype(np.float32),
  }
  if 'modal_weights' in rows[0]:
    arrays['modal_weights'] = np.stack([e['modal_weights'] for e in rows]).astype(np.float32)
  if 'count' in rows[0]:
    arrays['count'] = np.array([e['count'] for e in rows], np.int64)
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  atomic_file.write_bytes(
    os.path.join(directory, f'shard-{shard:05d}-of-{num_shards:05d}.npz'), buf.getvalue()
  )
  Metrics.counter(NAMESPACE, 'shards_written').inc()


def _encode_and_write(pcoll, handler, tmp: pathlib.Path, num_shards: int):
  return (
    pcoll
    | 'Encode' >> RunInference(handler)
    | 'ToShard' >> beam.Map(lambda e: (e['id'] % num_shards, e))
    | 'GroupShards' >> beam.GroupByKey()
    | 'WriteShards' >> beam.Map(_write_shard, str(tmp), num_shards)
  )


def _finish(tmp: pathlib.Path, base: dict[str, Any], result: Any) -> dict[str, Any]:
  """Counts the written shards and writes the manifest into `tmp`."""
  shards = sorted(p.name for p in tmp.glob('shard-*.npz'))
  count, dim = 0, None
  for name in shards:
    with np.load(tmp / name) as z:
      count += len(z['ids'])
      dim = int(z['embedding'].shape[1])
  counters = querylog.metric_totals(result, NAMESPACE)
  counters.update(querylog.metric_totals(result))
  manifest = {
    **base,
    'dim': dim,
    'count': count,
    'dtype': 'float32',
    'shards': shards,
    'counters': counters,
    'created': manifest_lib.now(),
  }
  manifest_lib.write(tmp, manifest)
  return manifest


def _base_manifest(kind, config, vocab_path, loader, source) -> dict[str, Any]:
  _, step = loader()
  return {
    'kind': kind,
    'checkpoint_step': step,
    'config_fingerprint': manifest_lib.config_fingerprint(
      config, vocab_lib.load_vocab_file(vocab_path)
    ),
    'embed_dim': config.model.embed_dim,
    'source': source,
  }


def export_catalogue(
  config: ml_collections.ConfigDict,
  vocab_path: str,
  out_dir: str | os.PathLike,
  *,
  loader: ParamsLoader,
  split: str = 'catalogue',
  batch_size: int = 64,
  num_devices: int = 1,
  num_shards: int = 4,
  read_chunk: int = 256,
  limit: int | None = None,
  pipeline_args: Sequence[str] = (),
  max_bad_fraction: float = 0.01,
) -> dict[str, Any]:
  """Exports the product embeddings of `config.data`'s `split` to `out_dir`.

  Args:
    config: the model's full config (data.name/builder_config/data_dir, text, model).
    vocab_path: the vocab.txt the model was trained with.
    out_dir: the export directory (replaced atomically when the pipeline has finished).
    loader: () -> (params, step), e.g. `model_handler.make_loader(config, workdir)`.
    split: the TFDS split holding every product once.
    batch_size: the encoder's compiled batch (divisible by num_devices).
    num_devices: local devices the batch is sharded over.
    num_shards: output files.
    read_chunk: records per read task (the unit of parallelism of the read).
    limit: export only the first `limit` records (for tests and benchmarks).
    pipeline_args: Beam options, e.g. ['--runner=DataflowRunner', ...]; DirectRunner if empty.
    max_bad_fraction: the export fails (the previous one left as it was) when more than
      this share of the records is skipped (counted by reason: `skipped_<reason>`).

  Returns:
    The manifest written.
  """
  from make_jax.datasets import loading

  data = config.data
  builder = loading.get_builder(data.name, data.builder_config, data.data_dir)
  n = builder.info.splits[split].num_examples
  n = min(n, limit) if limit is not None else n
  spans = [(s, min(s + read_chunk, n)) for s in range(0, n, read_chunk)]
  handler = MakeModelHandler(
    config, loader, tower='product', batch_size=batch_size, num_devices=num_devices
  )
  source = {'dataset': data.name, 'builder_config': data.builder_config, 'split': split}
  with manifest_lib.staging_dir(out_dir) as tmp:
    base = _base_manifest('product_embeddings', config, vocab_path, loader, source)
    logging.info('Exporting %d %s records into %s', n, split, out_dir)
    with beam.Pipeline(options=pipeline_options(pipeline_args)) as p:
      records = (
        p
        | 'Spans' >> beam.Create(spans)
        | 'Reshuffle' >> beam.Reshuffle()
        | 'ReadFeaturize' >> beam.ParDo(_ReadAndFeaturize(config, vocab_path, split, data.data_dir))
      )
      _encode_and_write(records, handler, tmp, num_shards)
    querylog.check_bad_share(
      querylog.metric_totals(p.result, NAMESPACE),
      max_bad_fraction,
      f'catalogue {data.name}/{data.builder_config} {split}',
      good=('products_read',),
    )
    manifest = _finish(tmp, base, p.result)
  return manifest


def export_queries(
  config: ml_collections.ConfigDict,
  vocab_path: str,
  query_files: str | Sequence[str],
  out_dir: str | os.PathLike,
  *,
  loader: ParamsLoader,
  query_column: int = 0,
  count_column: int = 1,
  batch_size: int = 64,
  num_devices: int = 1,
  num_shards: int = 4,
  pipeline_args: Sequence[str] = (),
  max_bad_fraction: float = 0.01,
) -> dict[str, Any]:
  """Exports the embeddings of the distinct queries (by sorted words) of a query log.

  Ids are qids; `count` is the number of log lines (or summed counts) of each query.
  Arguments as `export_catalogue`; the columns as `querylog.parse_line`; fails as
  `query_table.build_query_table` when more than `max_bad_fraction` of the lines are skipped.
  """
  files = [query_files] if isinstance(query_files, str) else list(query_files)
  handler = MakeModelHandler(
    config, loader, tower='query', batch_size=batch_size, num_devices=num_devices
  )
  with manifest_lib.staging_dir(out_dir) as tmp:
    base = _base_manifest('query_embeddings', config, vocab_path, loader, {'query_files': files})
    with beam.Pipeline(options=pipeline_options(pipeline_args)) as p:
      queries = (
        p
        | 'Files' >> beam.Create(files)
        | 'Read' >> beam.io.ReadAllFromText(coder=beam.coders.BytesCoder())
        | 'Distinct'
        >> querylog.DistinctQueries(
          config, vocab_path, query_column=query_column, count_column=count_column
        )
        | 'KeepTokens'
        >> beam.Map(
          lambda e: {
            'id': e['qid'],
            'count': e['count'],
            'query_ids': e['query_ids'],
            'query_mask': e['query_mask'],
          }
        )
      )
      _encode_and_write(queries, handler, tmp, num_shards)
    counters = querylog.metric_totals(p.result)
    querylog.check_bad_share(counters, max_bad_fraction, f'query log {files}')
    manifest = _finish(tmp, base, p.result)
  return manifest


def read_embeddings(
  directory: str | os.PathLike, *, verify: str = 'sizes', rebuild: str = ''
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], dict[str, Any]]:
  """(ids int64 [n], embeddings float32 [n, d], other arrays, manifest) of an export.

  Rows are sorted by id. `verify` and `rebuild` as `manifest.read`.

  Raises:
    ManifestError: an unfinished directory, or a damaged file (named, with `rebuild`).
  """
  directory = pathlib.Path(directory)
  manifest = manifest_lib.read(directory, verify=verify, rebuild=rebuild)
  parts: dict[str, list[np.ndarray]] = {}
  for name in manifest['shards']:
    try:
      with np.load(directory / name) as z:
        for k in z.files:
          parts.setdefault(k, []).append(z[k])
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
      raise manifest_lib.ManifestError(
        f'damaged artefact: {directory / name}: {type(e).__name__}: {e}. {rebuild}'.rstrip()
      ) from None
  if not parts:
    raise manifest_lib.ManifestError(f'{directory} holds no embeddings')
  arrays = {k: np.concatenate(v) for k, v in parts.items()}
  order = np.argsort(arrays['ids'], kind='stable')
  arrays = {k: v[order] for k, v in arrays.items()}
  ids, emb = arrays.pop('ids'), arrays.pop('embedding')
  return ids, emb, arrays, manifest
