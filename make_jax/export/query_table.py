"""The offline qid -> top-K products table, built by a Beam pipeline (SPEC 7.3).

Why: online, a logged query should cost one hash and one lookup. The pipeline reads a
query log, merges word orders (`querylog.DistinctQueries`: one row per distinct sorted-word
sequence, the most frequent surface form kept), encodes each query with the query tower
(`RunInference`), searches the index in batches, and groups rows into shards by the top
bits of the qid; each shard is written by one worker as sorted arrays:

  shard-XXXXX/qid.npy uint32 [n]   sorted (ties by key)
             ids.npy int64 [n, K]  scores.npy float32 [n, K]   (-1 / -inf pad)
             count.npy int64 [n]
             key_offsets.npy int64 [n+1] + keys.bin       sorted words (utf-8, \\x1f-joined)
             surface_offsets.npy int64 [n+1] + surface.bin the surface form shown

A reader memory-maps one shard's arrays and binary-searches the qid: nothing is read in
full. The key is stored because two word sequences may share a 32-bit qid; a lookup
compares it. The directory is published by one rename with a manifest naming the index
and model it came from.
"""

import json
import logging
import os
import pathlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
import ml_collections
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import RunInference

from make_jax import rundir
from make_jax.export import manifest as manifest_lib
from make_jax.export import querylog
from make_jax.export import scann_index as index_lib
from make_jax.export.model_handler import MakeModelHandler, ParamsLoader
from make_jax.export.runner import pipeline_options
from make_jax.text import vocab as vocab_lib

NAMESPACE = 'make_jax.query_table'


class _Search(beam.DoFn):
  """Batches of encoded queries -> rows with the index's top-K ids and scores."""

  def __init__(self, index_dir: str, fingerprint: str, k: int):
    self._index_dir, self._fingerprint, self._k = index_dir, fingerprint, k

  def setup(self):
    self._index = index_lib.load(self._index_dir, fingerprint=self._fingerprint)

  def process(self, batch: Sequence[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    ids, scores = self._index.search_batched(np.stack([e['embedding'] for e in batch]), self._k)
    Metrics.counter(NAMESPACE, 'queries_searched').inc(len(batch))
    for e, i, s in zip(batch, ids, scores, strict=True):
      yield {
        'key': e['key'],
        'qid': e['qid'],
        'surface': e['surface'],
        'count': e['count'],
        'ids': i,
        'scores': s,
      }


def _blob(strings: list[str]) -> tuple[np.ndarray, bytes]:
  data = [s.encode('utf-8') for s in strings]
  offsets = np.zeros(len(data) + 1, np.int64)
  offsets[1:] = np.cumsum([len(d) for d in data])
  return offsets, b''.join(data)


def _write_shard(item: tuple[Any, Iterable[Any]], directory: str) -> None:
  """Sorts one shard's rows by (qid, key) and writes its arrays into a staging folder."""
  shard, rows = item
  rows = sorted(rows, key=lambda r: (r['qid'], r['key']))
  final = pathlib.Path(directory) / f'shard-{shard:05d}'
  with manifest_lib.staging_dir(final) as tmp:
    np.save(tmp / 'qid.npy', np.array([r['qid'] for r in rows], np.uint32))
    np.save(tmp / 'ids.npy', np.stack([r['ids'] for r in rows]).astype(np.int64))
    np.save(tmp / 'scores.npy', np.stack([r['scores'] for r in rows]).astype(np.float32))
    np.save(tmp / 'count.npy', np.array([r['count'] for r in rows], np.int64))
    for name in ('key', 'surface'):
      offsets, data = _blob([r[name] for r in rows])
      np.save(tmp / f'{name}_offsets.npy', offsets)
      (tmp / {'key': 'keys.bin', 'surface': 'surface.bin'}[name]).write_bytes(data)
  Metrics.counter(NAMESPACE, 'rows_written').inc(len(rows))


def build_query_table(
  config: ml_collections.ConfigDict,
  vocab_path: str,
  query_files: str | Sequence[str],
  index_dir: str | os.PathLike,
  out_dir: str | os.PathLike,
  *,
  loader: ParamsLoader,
  k: int = 100,
  shard_bits: int = 4,
  query_column: int = 0,
  count_column: int = 1,
  batch_size: int = 256,
  num_devices: int = 1,
  pipeline_args: Sequence[str] = (),
  max_bad_fraction: float = 0.01,
) -> dict[str, Any]:
  """Builds the qid table of the query log `query_files` over the index at `index_dir`.

  Args:
    config, vocab_path, loader: the model (as for `embed.export_catalogue`); it must be the
      model the index was built from (the config fingerprint is checked).
    query_files: text files, one query per line (tab-separated columns, see `querylog`).
    index_dir: a saved index.
    out_dir: the table directory (replaced atomically when complete).
    k: products per query.
    shard_bits: 2**shard_bits shards by the qid's top bits.
    max_bad_fraction: the job fails (the previous table left as it was) when more than this
      share of the log's lines is skipped (`querylog.SKIP_REASONS`, counted by reason in
      the manifest's counters).

  Returns:
    The manifest written.
  """
  files = [query_files] if isinstance(query_files, str) else [str(f) for f in query_files]
  fingerprint = manifest_lib.config_fingerprint(config, vocab_lib.load_vocab_file(vocab_path))
  index_manifest = manifest_lib.read(index_dir, 'scann_index')
  manifest_lib.check_compatible(
    index_manifest,
    what=f'index {index_dir}',
    rebuild=index_lib.REBUILD,
    fingerprint=fingerprint,
    dim=config.model.embed_dim,
  )
  _, step = loader()
  handler = MakeModelHandler(
    config, loader, tower='query', batch_size=batch_size, num_devices=num_devices
  )
  shift = 32 - shard_bits
  with manifest_lib.staging_dir(out_dir) as tmp:
    with beam.Pipeline(options=pipeline_options(pipeline_args)) as p:
      _ = (
        p
        | 'Files' >> beam.Create(files)
        | 'Read' >> beam.io.ReadAllFromText(coder=beam.coders.BytesCoder())
        | 'Distinct'
        >> querylog.DistinctQueries(
          config, vocab_path, query_column=query_column, count_column=count_column
        )
        | 'EncodeQueries' >> RunInference(handler)
        | 'Batch' >> beam.BatchElements(min_batch_size=64, max_batch_size=1024)
        | 'Search' >> beam.ParDo(_Search(str(index_dir), fingerprint, k))
        | 'ToShard' >> beam.Map(lambda r: (r['qid'] >> shift, r))
        | 'GroupShards' >> beam.GroupByKey()
        | 'WriteShards' >> beam.Map(_write_shard, str(tmp))
      )
    counters = querylog.metric_totals(p.result)
    querylog.check_bad_share(counters, max_bad_fraction, f'query log {files}')
    counters.update(querylog.metric_totals(p.result, NAMESPACE))
    rows = sum(len(np.load(d / 'qid.npy', mmap_mode='r')) for d in tmp.glob('shard-*'))
    manifest = {
      'kind': 'query_table',
      'checkpoint_step': step,
      'config_fingerprint': fingerprint,
      'dim': config.model.embed_dim,
      'k': k,
      'rows': rows,
      'shard_bits': shard_bits,
      'index': {
        'path': str(pathlib.Path(index_dir).absolute()),
        'created': index_manifest.get('created'),
        'count': index_manifest.get('count'),
        'config': index_manifest.get('config'),
        'search': index_manifest.get('search'),
      },
      'query_files': files,
      'counters': counters,
      'created': manifest_lib.now(),
    }
    manifest_lib.write(tmp, manifest)
  logging.info('Query table %s: %s', out_dir, json.dumps(counters))
  return manifest


class _Shard:
  """One shard's memory-mapped arrays."""

  def __init__(self, directory: pathlib.Path):
    load = lambda name: np.load(directory / name, mmap_mode='r')  # noqa: E731
    self.qid, self.ids, self.scores, self.count = (
      load('qid.npy'),
      load('ids.npy'),
      load('scores.npy'),
      load('count.npy'),
    )
    self.key_offsets, self.surface_offsets = load('key_offsets.npy'), load('surface_offsets.npy')
    self.keys = np.memmap(directory / 'keys.bin', np.uint8, 'r') if self.key_offsets[-1] else b''
    surface = directory / 'surface.bin'
    self.surface = np.memmap(surface, np.uint8, 'r') if self.surface_offsets[-1] else b''
    n = len(self.qid)
    if not (len(self.ids) == len(self.scores) == len(self.count) == n):
      raise ValueError(f'{directory}: arrays of different lengths')
    for offsets, blob in ((self.key_offsets, self.keys), (self.surface_offsets, self.surface)):
      if len(offsets) != n + 1 or offsets[-1] > len(blob):
        raise ValueError(f'{directory}: text offsets do not fit their data')

  def text(self, blob: Any, offsets: np.ndarray, row: int) -> str:
    return bytes(blob[offsets[row] : offsets[row + 1]]).decode('utf-8')


class QueryTable:
  """Read side: opens shards lazily (memory-mapped); looks a query up by key and qid.

  A shard that is damaged (a recorded file missing or of another size, or with `verify=
  'checksums'` of other contents) or that fails to open or read is marked bad, logged with
  its file and the table's rebuild command, and answers no query: its queries miss, so the
  server encodes them online. `bad_shards` names them; `degraded_lookups` counts the
  lookups they turned away.
  """

  def __init__(self, directory: str | os.PathLike, *, verify: str = 'sizes', rebuild: str = ''):
    """Opens the manifest and checks every shard's files (nothing else is read until a
    lookup). A damaged manifest is a `ManifestError`; a damaged shard is only marked bad."""
    self.directory = pathlib.Path(directory)
    self.rebuild = rebuild
    self.manifest = manifest_lib.read(self.directory, 'query_table', verify='none', rebuild=rebuild)
    self._shift = 32 - int(self.manifest['shard_bits'])
    self._shards: dict[int, _Shard | None] = {}
    self.bad_shards: dict[int, str] = {}
    self.degraded_lookups = 0
    records = self.manifest.get('files', {})
    shards = {name.split('/')[0] for name in records if name.startswith('shard-')}
    for name in sorted(shards):
      problems = rundir.damaged_files(
        self.directory, records, checksums=verify == 'checksums', prefix=name + '/'
      )
      if problems:
        self._mark_bad(int(name.removeprefix('shard-')), problems[0])

  def _mark_bad(self, shard: int, why: str) -> None:
    self.bad_shards[shard] = why
    self._shards[shard] = None
    logging.error(
      'query table shard %d is damaged (%s): its queries are answered online. %s',
      shard,
      why,
      self.rebuild,
    )

  def __len__(self) -> int:
    return int(self.manifest['rows'])

  def _shard(self, qid: int) -> _Shard | None:
    s = qid >> self._shift
    if s in self.bad_shards:
      self.degraded_lookups += 1
      return None
    if s not in self._shards:
      path = self.directory / f'shard-{s:05d}'
      try:
        self._shards[s] = _Shard(path) if path.is_dir() else None
      except (OSError, ValueError) as e:
        self._mark_bad(s, f'{path}: {type(e).__name__}: {e}')
        self.degraded_lookups += 1
        return None
    return self._shards[s]

  def lookup_key(self, key: str, qid: int | None = None) -> dict[str, Any] | None:
    """The row of a sorted-word key (`querylog.words_key`), or None if absent (or in a
    damaged shard)."""
    qid = querylog.key_qid(key) if qid is None else qid
    shard = self._shard(qid)
    if shard is None:
      return None
    try:
      return self._find(shard, key, qid)
    except (OSError, ValueError, IndexError) as e:  # UnicodeDecodeError is a ValueError.
      self._mark_bad(qid >> self._shift, f'{self.directory}: {type(e).__name__}: {e}')
      self.degraded_lookups += 1
      return None

  @staticmethod
  def _find(shard: _Shard, key: str, qid: int) -> dict[str, Any] | None:
    lo = int(np.searchsorted(shard.qid, qid, 'left'))
    hi = int(np.searchsorted(shard.qid, qid, 'right'))
    for row in range(lo, hi):  # More than one only on a 32-bit qid collision.
      if shard.text(shard.keys, shard.key_offsets, row) == key:
        return {
          'qid': qid,
          'ids': np.asarray(shard.ids[row]),
          'scores': np.asarray(shard.scores[row]),
          'count': int(shard.count[row]),
          'surface': shard.text(shard.surface, shard.surface_offsets, row),
        }
    return None

  def lookup(self, words: Sequence[str]) -> dict[str, Any] | None:
    """The row of a query's words (any order; from `TextPreprocessor.words`)."""
    return self.lookup_key(querylog.words_key(list(words))) if words else None

  def rows(self) -> Iterator[tuple[str, int]]:
    """Every (key, qid) in the table (reads every shard: for checks, not for serving)."""
    for path in sorted(self.directory.glob('shard-*')):
      shard = _Shard(path)
      for row in range(len(shard.qid)):
        yield shard.text(shard.keys, shard.key_offsets, row), int(shard.qid[row])
