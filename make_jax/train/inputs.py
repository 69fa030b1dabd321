"""What a training run reads: the dataset, its text preprocessor, and sharded host input.

Why a module of its own: the trainer and the quickstart must tokenise exactly as the run
that wrote a workdir did, and every host must read its own part of each global batch.

* Text: `cfg.text.vocab_path`, else `<workdir>/vocab.txt`, else a vocabulary learned from
  the training titles and queries and saved there (process 0 learns it, everyone loads the
  file; learning is deterministic, so a rerun learns the same one). The domain
  dictionary of the dataset (`builder.info.metadata['domain_words']`, when the dataset and
  `TextPreprocessor` have it) is passed through and written, normalised, to
  `<workdir>/domain_words.txt`.
* Input shards: the global batch is made of `cfg.data.input_shards` shards (0: one per
  process), each an `InputPipeline` reading its own part of the split; a process reads
  `input_shards / process_count` consecutive shards and concatenates their batches in
  order. Fixing `input_shards` fixes the data order whatever the number of processes, so a
  two-process run equals a one-process run batch for batch, and a checkpoint can move to
  another host count. The checkpointed input position is the list of every shard's state.
"""

import json
import pathlib
from collections.abc import Iterator
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from make_jax import atomic_file
from make_jax.input import pipeline as input_pipeline
from make_jax.input import reading
from make_jax.parallel import mesh as mesh_lib
from make_jax.text import vocab as vocab_lib
from make_jax.text.preprocess import TextPreprocessor


def _text(value: Any) -> str:
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def corpus(builder: Any, split: str) -> Iterator[str]:
  """Titles and queries of `split`, read without decoding images."""
  for record in reading.records(reading.undecoded_source(builder, split)):
    yield _text(record['title'])
    yield _text(record['query'])


def sync(name: str) -> None:
  """A barrier across processes on the coordination service (nothing on one process).

  Not a collective: a process that is still learning the vocabulary or building the
  dataset can be minutes behind, longer than gloo's 30 s connect timeout.
  """
  mesh_lib.wait_for_all_processes(f'inputs_{name}')


def load_preprocessor(
  config: ml_collections.ConfigDict, builder: Any, workdir: str | pathlib.Path
) -> TextPreprocessor:
  """The run's `TextPreprocessor` (see the module docstring); process 0 writes the files.

  Raises:
    ValueError: `cfg.text.vocab_path` is set but does not exist.
  """
  workdir = pathlib.Path(workdir)
  text = config.text
  path = pathlib.Path(text.vocab_path) if text.vocab_path else workdir / 'vocab.txt'
  if text.vocab_path and not path.exists():
    raise ValueError(f'cfg.text.vocab_path {text.vocab_path} does not exist')
  if not path.exists() and jax.process_index() == 0:
    logging.info('Learning a %d-token vocabulary into %s', text.vocab_size, path)
    tokens = vocab_lib.build_vocab(
      corpus(builder, config.data.train_split), text.vocab_size, strip_accents=text.strip_accents
    )
    vocab_lib.save_vocab(tokens, path)
  sync('vocabulary')
  domain_words = tuple((builder.info.metadata or {}).get('domain_words', ()))
  preprocessor = TextPreprocessor.from_config(text, path, domain_words)
  if jax.process_index() == 0:
    if not path.parent.samefile(workdir) or path.name != 'vocab.txt':
      _write_if_changed(workdir / 'vocab.txt', path.read_bytes())
    # The dictionary as the segmenter holds it (normalised, sorted): serving must use it too.
    words = '\n'.join(preprocessor.domain_words)
    _write_if_changed(workdir / 'domain_words.txt', (words + '\n' if words else '').encode())
  return preprocessor


def _write_if_changed(path: pathlib.Path, data: bytes) -> None:
  """Writes atomically unless the file already holds `data` (a resume leaves it alone)."""
  if path.is_file() and path.read_bytes() == data:
    return
  atomic_file.write_bytes(path, data)


def num_input_shards(config: ml_collections.ConfigDict) -> int:
  """Shards of the global batch (cfg.data.input_shards; 0: one per process).

  Raises:
    ValueError: not a multiple of the process count, or the batch does not split over it.
  """
  shards = int(config.data.get('input_shards', 0)) or jax.process_count()
  if shards % jax.process_count():
    raise ValueError(
      f'data.input_shards={shards} is not a multiple of the {jax.process_count()} processes'
    )
  input_pipeline.host_batch_size(config.data.global_batch_size, shards)
  return shards


class ShardedInput:
  """This process's input shards, batched together; position = every shard's state."""

  def __init__(
    self,
    config: ml_collections.ConfigDict,
    preprocessor: TextPreprocessor,
    builder: Any,
    *,
    local_device_count: int,
  ):
    self.num_shards = num_input_shards(config)
    per_process = self.num_shards // jax.process_count()
    input_pipeline.host_batch_size(
      config.data.global_batch_size, jax.process_count(), local_device_count
    )
    first = jax.process_index() * per_process
    self.shard_ids = list(range(first, first + per_process))
    self.pipelines = [
      input_pipeline.create_pipeline(
        config,
        preprocessor,
        builder=builder,
        process_index=shard,
        process_count=self.num_shards,
        local_device_count=1,
      )
      for shard in self.shard_ids
    ]

  def __next__(self) -> dict[str, np.ndarray]:
    batches = [next(p) for p in self.pipelines]
    if len(batches) == 1:
      return batches[0]
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}

  def __iter__(self):
    return self

  def local_states(self) -> list[dict[str, Any]]:
    """This process's shards' positions, in shard order."""
    return [p.get_state() for p in self.pipelines]

  def global_states(self) -> list[dict[str, Any]]:
    """Every shard's position (gathered from all processes; a collective)."""
    local = self.local_states()
    if jax.process_count() == 1:
      return local
    data = np.frombuffer(json.dumps(local).encode(), np.uint8)
    sizes = multihost_utils.process_allgather(np.asarray([data.size], np.int64))
    padded = np.zeros(int(np.max(sizes)), np.uint8)
    padded[: data.size] = data
    everything = multihost_utils.process_allgather(padded)
    out = []
    for row, size in zip(np.asarray(everything), np.asarray(sizes).reshape(-1), strict=True):
      out.extend(json.loads(bytes(row[: int(size)]).decode()))
    return out

  def restore(self, states: list[dict[str, Any]]) -> None:
    """Continues from `global_states()` of a checkpoint with the same number of shards.

    Raises:
      ValueError: the checkpoint was written with another number of input shards.
    """
    if len(states) != self.num_shards:
      raise ValueError(
        f'The checkpoint has {len(states)} input shards but this run reads '
        f'{self.num_shards}: set data.input_shards={len(states)} to resume it'
      )
    for shard, pipeline in zip(self.shard_ids, self.pipelines, strict=True):
      pipeline.set_state(states[shard])

  @property
  def stats(self) -> dict[str, int]:
    """Records skipped so far by this process, by reason."""
    total: dict[str, int] = {}
    for p in self.pipelines:
      for k, v in p.stats.items():
        total[k] = total.get(k, 0) + v
    return total

  def close(self) -> None:
    for p in self.pipelines:
      p.close()
