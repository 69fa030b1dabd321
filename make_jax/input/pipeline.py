"""From a TFDS split to host batches, resumable to the example (SPEC sections 1, 6).

Why a small index-permutation iterator rather than tf.data: the position must be saved
with the checkpoint so that a resumed run sees exactly the examples it would have seen,
bad records must be skipped and counted, and multi-host runs must read disjoint shards.
Reading an array_record split by index makes all three simple and exact.

* Host shard: host h of P reads the contiguous records [h*n//P, (h+1)*n//P) (the
  `tfds.even_splits` rule), so hosts are disjoint and together cover the split.
* Epoch e visits the first n//P records of a permutation of the host's shard seeded by
  (shuffle_seed, e, h): every host has the same number of records per epoch (no host
  waits at a collective for one that ran dry); when n % P != 0 a host with a larger
  shard leaves a different random record out each epoch.
* Batches are consecutive runs of `batch_size` good records of that stream (they may
  straddle epochs). A record whose featurisation fails with `SkipRecord` (undecodable
  image, empty title, empty query) is skipped and counted in `stats`; the batch is
  filled from the next records, so shapes stay fixed.
* State = (epoch, offset in the epoch, skip counts): `get_state()` / `set_state()`, a
  JSON-serialisable dict to checkpoint next to the train state. It also records the
  split size, shuffle seed and host layout, and `set_state` refuses a state written for
  other ones (the same offsets would name other records).
* `worker_count` threads featurise records (PIL decoding and the Rust tokenizer release
  the GIL); record order, and so the batches, do not depend on it.

Batch layout (contract 2): query_ids, query_mask, query_keyword [B, Lq] int32;
title_ids, title_mask, title_keyword [B, Lt] int32; image [B, S, S, 3] uint8;
image_missing [B] bool; product_id [B] int32; log_p [B] float32.
"""

import concurrent.futures
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from make_jax.input import reading
from make_jax.input.featurize import Batch, PairEncoder, SkipRecord, make_featurizer


def host_batch_size(
  global_batch_size: int, process_count: int, local_device_count: int | None = None
) -> int:
  """global_batch_size // process_count, checked to split evenly over hosts and devices.

  Raises:
    ValueError: not positive, or not divisible by the host count or (per host) by the
      local device count.
  """
  if global_batch_size <= 0:
    raise ValueError(f'global_batch_size must be positive, got {global_batch_size}')
  if global_batch_size % process_count:
    raise ValueError(
      f'global_batch_size {global_batch_size} is not divisible by the number of hosts '
      f'{process_count}'
    )
  per_host = global_batch_size // process_count
  if local_device_count and per_host % local_device_count:
    raise ValueError(
      f'Per-host batch size {per_host} (global_batch_size {global_batch_size} / '
      f'{process_count} hosts) is not divisible by the {local_device_count} local devices'
    )
  return per_host


class InputPipeline:
  """An iterator of host batches over a random-access source, with a restorable position."""

  def __init__(
    self,
    source: Sequence[Mapping[str, Any]],
    featurize: Callable[[Mapping[str, Any]], Batch],
    *,
    batch_size: int,
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
    worker_count: int = 0,
  ):
    """Sets up the host shard.

    Args:
      source: random-access records (a `tfds` data source, or any sequence of dicts).
      featurize: record -> example dict (see `make_featurizer`); raises `SkipRecord`.
      batch_size: examples per host batch (see `host_batch_size`).
      seed: shuffle seed (cfg.data.shuffle_seed).
      shuffle: permute each epoch (False: records in shard order, e.g. for export).
      num_epochs: stop after this many passes; None repeats forever.
      process_index: this host (default jax.process_index()).
      process_count: hosts (default jax.process_count()).
      worker_count: featurising threads (0: in the calling thread).
    """
    self._process_index = jax.process_index() if process_index is None else process_index
    self._process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= self._process_index < self._process_count:
      raise ValueError(
        f'process_index {self._process_index} is not in [0, process_count={self._process_count})'
      )
    if batch_size <= 0:
      raise ValueError(f'batch_size must be positive, got {batch_size}')
    n = len(source)
    self._num_records = n
    self._epoch_len = n // self._process_count
    if self._epoch_len == 0:
      raise ValueError(f'The split has {n} records, fewer than the {self._process_count} hosts')
    lo = self._process_index * n // self._process_count
    hi = (self._process_index + 1) * n // self._process_count
    self._shard = np.arange(lo, hi)
    self._source = source
    self._featurize = featurize
    self._batch_size = batch_size
    self._seed = seed
    self._shuffle = shuffle
    self._num_epochs = num_epochs
    self._pool = concurrent.futures.ThreadPoolExecutor(worker_count) if worker_count > 0 else None
    self._epoch = 0
    self._offset = 0
    self._stats = Counter()
    self._order_epoch = -1
    self._order = self._shard

  # --- Position -------------------------------------------------------------------------

  def get_state(self) -> dict[str, Any]:
    """The position after the last batch returned (JSON-serialisable), with what it is a
    position in: the split size, the shuffle seed and the host layout."""
    return {
      'epoch': self._epoch,
      'offset': self._offset,
      'num_records': self._num_records,
      'seed': self._seed,
      'process_index': self._process_index,
      'process_count': self._process_count,
      'skipped': dict(self._stats),
    }

  def set_state(self, state: Mapping[str, Any]) -> None:
    """Continues from a position saved by `get_state` of a pipeline on the same shard.

    Raises:
      ValueError: the state was written for another split size, shuffle seed or host
        layout (the message names each difference), or its position is invalid.
    """
    mine = {
      'num_records': ('split size', self._num_records),
      'seed': ('shuffle seed', self._seed),
      'process_index': ('host index', self._process_index),
      'process_count': ('host count', self._process_count),
    }
    wrong = [
      f'{what} {state.get(key)!r} (this pipeline: {value!r}; key {key!r})'
      for key, (what, value) in mine.items()
      if state.get(key) != value
    ]
    if wrong:
      raise ValueError(
        'Pipeline state was written for another input: ' + '; '.join(wrong) + '. A '
        'position is only meaningful on the same split, seed and host layout.'
      )
    try:
      epoch, offset = int(state['epoch']), int(state['offset'])
    except (KeyError, TypeError, ValueError) as e:
      raise ValueError(f'Pipeline state position is invalid: {dict(state)}') from e
    if not 0 <= offset <= self._epoch_len or epoch < 0:
      raise ValueError(f'Pipeline state position is invalid: {dict(state)}')
    self._epoch = epoch
    self._offset = offset
    self._stats = Counter({k: int(v) for k, v in state.get('skipped', {}).items()})

  @property
  def stats(self) -> dict[str, int]:
    """Records skipped so far, by reason (counted since the start of the run)."""
    return dict(self._stats)

  @property
  def steps_per_epoch(self) -> int:
    """Full batches per pass over this host's shard (ignoring skipped records)."""
    return self._epoch_len // self._batch_size

  # --- Iteration ------------------------------------------------------------------------

  def _epoch_order(self, epoch: int) -> np.ndarray:
    if epoch != self._order_epoch:
      if self._shuffle:
        rng = np.random.default_rng([self._seed, epoch, self._process_index])
        self._order = rng.permutation(self._shard)[: self._epoch_len]
      else:
        self._order = self._shard[: self._epoch_len]
      self._order_epoch = epoch
    return self._order

  def _next_indices(self, count: int) -> list[int]:
    """Takes up to `count` record indices from the stream, advancing the position."""
    out = []
    while len(out) < count:
      if self._offset == self._epoch_len:
        self._epoch, self._offset = self._epoch + 1, 0
      if self._num_epochs is not None and self._epoch >= self._num_epochs:
        break
      order = self._epoch_order(self._epoch)
      take = min(count - len(out), self._epoch_len - self._offset)
      out.extend(order[self._offset : self._offset + take].tolist())
      self._offset += take
    return out

  def _featurize_one(self, index: int) -> Batch | str:
    try:
      return self._featurize(self._source[index])
    except SkipRecord as e:
      return e.args[0] if e.args else 'skipped'

  def __iter__(self) -> Iterator[Batch]:
    return self

  def __next__(self) -> Batch:
    examples = []
    state = (self._epoch, self._offset, Counter(self._stats))
    while len(examples) < self._batch_size:
      indices = self._next_indices(self._batch_size - len(examples))
      if not indices:
        # Out of epochs: drop the partial batch; the position stays before it.
        self._epoch, self._offset, self._stats = state
        raise StopIteration
      if self._pool is not None:
        results = list(self._pool.map(self._featurize_one, indices))
      else:
        results = [self._featurize_one(i) for i in indices]
      for r in results:
        if isinstance(r, str):
          self._stats[r] += 1
        else:
          examples.append(r)
    return {k: np.stack([ex[k] for ex in examples]) for k in examples[0]}

  def close(self) -> None:
    """Stops the featurising threads."""
    if self._pool is not None:
      self._pool.shutdown()


# --- From a config -----------------------------------------------------------------------


def create_pipeline(
  config: ml_collections.ConfigDict,
  preprocessor: PairEncoder,
  *,
  split: str | None = None,
  builder: Any = None,
  process_index: int | None = None,
  process_count: int | None = None,
  local_device_count: int | None = None,
  shuffle: bool = True,
  require_query: bool = True,
) -> InputPipeline:
  """The training input of `config` (cfg.data, cfg.text): a host-sharded `InputPipeline`.

  Args:
    config: the full config (uses config.data and config.text).
    preprocessor: the `TextPreprocessor`.
    split: the TFDS split (default config.data.train_split).
    builder: a prepared TFDS builder (default: from config.data; it must be built, e.g.
      with `python -m tools.build_data`).
    process_index: this host (default jax.process_index()).
    process_count: hosts (default jax.process_count()).
    local_device_count: devices per host the batch must split over (default
      jax.local_device_count()).
    shuffle: permute each epoch.
    require_query: skip records with an empty query (set False for the catalogue).

  Raises:
    ValueError: the batch size does not split over hosts/devices, or the dataset is
      not built.
  """
  data = config.data
  process_count = jax.process_count() if process_count is None else process_count
  local_device_count = (
    jax.local_device_count() if local_device_count is None else local_device_count
  )
  batch_size = host_batch_size(data.global_batch_size, process_count, local_device_count)
  if builder is None:
    # Imported here: the TFDS builders pull in TensorFlow, which the rest of this module
    # (and a trainer fed from elsewhere) does not need.
    from make_jax.datasets import loading

    builder = loading.get_builder(data.name, data.builder_config, data.data_dir)
    if not builder.is_prepared():
      raise ValueError(
        f'Dataset {data.name}/{data.builder_config} is not built in {builder.data_dir}: '
        f'run python -m tools.build_data --dataset={data.name} '
        f'--builder_config={data.builder_config}'
      )
  split = split or data.train_split
  if split not in builder.info.splits:
    raise ValueError(f'Split {split!r} not in {list(builder.info.splits)}')
  source = reading.undecoded_source(builder, split)
  featurize = make_featurizer(
    preprocessor,
    image_size=data.image_size,
    query_len=config.text.query_len,
    title_len=config.text.title_len,
    attribute_features=builder.info.metadata.get('attribute_features', ()),
    require_query=require_query,
  )
  return InputPipeline(
    source,
    featurize,
    batch_size=batch_size,
    seed=data.shuffle_seed,
    shuffle=shuffle,
    num_epochs=data.num_epochs,
    process_index=process_index,
    process_count=process_count,
    worker_count=data.worker_count,
  )
