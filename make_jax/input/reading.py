"""Reading every record of a prepared TFDS split in chunks, images left as encoded bytes.

Why: vocabulary learning, the query log, evaluation and the figures read whole splits
(44k catalogue records and more) without needing pixels. Decoding is skipped, and
records come from `__getitems__` in chunks, which reads array_record files several
times faster than one index at a time. TensorFlow Datasets is imported only when a
source is opened.
"""

from collections.abc import Iterator, Mapping
from typing import Any

from make_jax.datasets import in_memory


def undecoded_source(builder: Any, split: str) -> Any:
  """`builder`'s random-access data source of `split`, its 'image' feature as encoded bytes.

  `builder` is a TFDS builder or an `in_memory.SyntheticInMemory` (whose images are PNG
  bytes already; no TensorFlow is imported for it).
  """
  if isinstance(builder, in_memory.SyntheticInMemory):
    return builder.as_data_source(split)
  import tensorflow_datasets as tfds  # Heavy: only when a split is read.

  return builder.as_data_source(split, decoders={'image': tfds.decode.SkipDecoding()})


def records(source: Any, chunk: int = 1024) -> Iterator[Mapping[str, Any]]:
  """Every record of a data source, in order, read `chunk` records at a time."""
  for start in range(0, len(source), chunk):
    yield from source.__getitems__(list(range(start, min(start + chunk, len(source)))))
