"""Online query encoding for table misses: jitted at fixed shapes, requests batched.

Why: a qid missing from the offline table is encoded on the request path (SPEC 7.5).
One jitted `MakeModel.encode_query` per shape keeps compiles out of serving, so shapes
are fixed: a query's length is rounded up to a *bucket* (e.g. 8, 16 tokens; the longest
is `text.query_len`, where the preprocessor truncates) and a batch's size up to a power
of two <= `max_batch`. `warmup` compiles them all at start.

Concurrent requests are batched: a worker thread takes the first waiting request, waits
up to `max_wait_ms` for more (at most `max_batch`), encodes them in one call at the
bucket of the longest, and hands each caller its row. Padded positions are masked, so a
query's embedding does not depend on the bucket or on its batch (up to float rounding).
"""

import concurrent.futures
import queue
import threading
import time
from collections.abc import Sequence

import jax
import numpy as np

from make_jax.models import make_model
from make_jax.text import preprocess


def _batch_sizes(max_batch: int) -> tuple[int, ...]:
  sizes, b = [], 1
  while b < max_batch:
    sizes.append(b)
    b *= 2
  return (*sizes, max_batch)


class BatchingQueryEncoder:
  """Text -> L2-normalised query embeddings, batched across threads."""

  def __init__(
    self,
    model: make_model.MakeModel,
    params,
    preprocessor: preprocess.TextPreprocessor,
    *,
    query_len: int,
    buckets: Sequence[int] = (8,),
    max_batch: int = 8,
    max_wait_ms: float = 2.0,
  ):
    """Args:
    model, params: the trained model and its parameters.
    preprocessor: the training run's text preprocessor (same vocabulary).
    query_len: the longest query in tokens (config `text.query_len`).
    buckets: shorter lengths to pad to; query_len is always added.
    max_batch: most queries per call.
    max_wait_ms: how long the first request of a batch waits for others.
    """
    if max_batch < 1 or query_len < 2:
      raise ValueError(f'need max_batch >= 1 and query_len >= 2; got {max_batch}, {query_len}')
    self._pre = preprocessor
    self.query_len = query_len
    self.buckets = tuple(sorted({b for b in buckets if 2 <= b < query_len} | {query_len}))
    self.batch_sizes = _batch_sizes(max_batch)
    self.max_batch = max_batch
    self.max_wait = max_wait_ms / 1e3
    self._params = params
    self._fn = jax.jit(
      lambda p, ids, mask: model.apply({'params': p}, ids, mask, method=model.encode_query)
    )
    self.calls = 0  # Model calls made (batches), for metrics and tests.
    self._queue: queue.Queue = queue.Queue()
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, name='query-encoder', daemon=True)
    self._thread.start()

  # --- Direct encoding (the batch CLI, warm-up) ----------------------------------------

  def encode_now(self, texts: Sequence[str | preprocess.Query]) -> np.ndarray:
    """Embeddings float32 [len(texts), d], encoded in this thread (max_batch at a time).

    Each item is a query's text or its `preprocess.Query` (whose words are used as they are).
    """
    out = []
    for start in range(0, len(texts), self.max_batch):
      out.append(self._encode_batch(texts[start : start + self.max_batch]))
    if not out:
      return np.zeros((0, 0), np.float32)
    return np.concatenate(out)

  def _encode_batch(self, texts: Sequence[str | preprocess.Query]) -> np.ndarray:
    word_lists = [
      t.encoding_words if isinstance(t, preprocess.Query) else self._pre.encoding_words(t)
      for t in texts
    ]
    ids, mask = self._pre.encode_words_batch(word_lists, self.query_len)
    longest = int(mask.sum(axis=1).max())
    bucket = next(b for b in self.buckets if b >= longest)
    size = next(s for s in self.batch_sizes if s >= len(texts))
    pad = size - len(texts)
    # Padding rows repeat row 0, so they are well-formed queries (never a masked-out row).
    ids = np.concatenate([ids, np.repeat(ids[:1], pad, 0)])[:, :bucket]
    mask = np.concatenate([mask, np.repeat(mask[:1], pad, 0)])[:, :bucket]
    self.calls += 1
    return np.asarray(self._fn(self._params, ids, mask), np.float32)[: len(texts)]

  def warmup(self) -> None:
    """Compiles every (batch size, bucket) shape."""
    for size in self.batch_sizes:
      for bucket in self.buckets:
        ids = np.full((size, bucket), self._pre.pad_id, np.int32)
        ids[:, 0], ids[:, 1] = self._pre.cls_id, self._pre.sep_id
        mask = np.zeros((size, bucket), np.int32)
        mask[:, :2] = 1
        jax.block_until_ready(self._fn(self._params, ids, mask))

  # --- Batched encoding across threads ------------------------------------------------

  def encode(self, text: str | preprocess.Query, timeout: float | None = 30.0) -> np.ndarray:
    """Embedding float32 [d] of one query (its text or `preprocess.Query`), batched with
    concurrent callers."""
    if self._stop.is_set():
      raise RuntimeError('encoder is closed')
    future: concurrent.futures.Future = concurrent.futures.Future()
    self._queue.put((text, future))
    return future.result(timeout=timeout)

  def _run(self) -> None:
    while not self._stop.is_set():
      try:
        first = self._queue.get(timeout=0.1)
      except queue.Empty:
        continue
      batch = [first]
      deadline = time.monotonic() + self.max_wait
      while len(batch) < self.max_batch:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
          break
        try:
          batch.append(self._queue.get(timeout=remaining))
        except queue.Empty:
          break
      try:
        emb = self._encode_batch([text for text, _ in batch])
      except Exception as e:  # Handed to every waiting caller, the worker goes on.
        for _, future in batch:
          future.set_exception(e)
        continue
      for (_, future), row in zip(batch, emb, strict=True):
        future.set_result(row)

  def close(self) -> None:
    """Stops the worker thread (pending requests fail)."""
    self._stop.set()
    self._thread.join(timeout=5)
    while not self._queue.empty():
      _, future = self._queue.get_nowait()
      future.set_exception(RuntimeError('encoder closed'))
