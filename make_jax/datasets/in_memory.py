"""The synthetic dataset served from memory: the `synthetic_products` records without TensorFlow.

Why: an accelerator machine may carry JAX and flax but not TensorFlow or TFDS
(`benchmarks/device_check.py` runs there). `SyntheticInMemory` stands in for the TFDS
builder wherever the trainer and the evaluator read one (`config.data.source='memory'`):
the same splits, `info.metadata` and records, generated from the same `SyntheticSpec`, so
the records equal what the TFDS builder stores, byte for byte
(`tests/test_datasets_in_memory.py`), in generation order (TFDS stores each split
shuffled by key, so a run reads them in another order). Records are made when they are
read; each product's PNG is encoded once and kept.

Records look as a TFDS data source returns them with the image left encoded (the only
way this project reads one): text as UTF-8 bytes, scalars as Python numbers, the image as
its PNG bytes.
"""

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from make_jax.datasets import clicks, synthetic, synthetic_configs

NAME = 'synthetic_products'
SPLITS = ('catalogue', *clicks.SPLITS)


@dataclasses.dataclass(frozen=True)
class SplitInfo:
  """What the readers ask of a TFDS split info."""

  name: str
  num_examples: int


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the readers ask of a TFDS `DatasetInfo`: the splits and the metadata."""

  splits: Mapping[str, SplitInfo]
  metadata: Mapping[str, Any]


class MemorySource(Sequence):
  """Random access to one split's records (`len`, `[i]`, `__getitems__`), made on read."""

  def __init__(self, dataset: 'SyntheticInMemory', split: str):
    self._dataset = dataset
    self._split = split
    self._len = dataset.info.splits[split].num_examples

  def __len__(self) -> int:
    return self._len

  def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
    index = int(index)
    if not -self._len <= index < self._len:
      raise IndexError(f'record {index} of a {self._len}-record split')
    return self._dataset.record(self._split, index % self._len)

  def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
    return [self[i] for i in indices]


class SyntheticInMemory:
  """A `synthetic_products` config as an in-memory dataset with a TFDS builder's reading API.

  Args:
    builder_config: a config name (`en_small`, `en`, `en_n5000`, ...; see
      `synthetic_configs.spec_for_name`) or a `SyntheticSpec`.
  """

  name = NAME
  data_dir = '(in memory)'

  def __init__(self, builder_config: str | synthetic.SyntheticSpec = 'en'):
    spec = builder_config
    if isinstance(spec, str):
      spec = synthetic_configs.spec_for_name(spec or 'en')
    self.spec = spec
    self.generated = synthetic.generate(spec)
    counts = {'catalogue': spec.num_products}
    counts |= {s: len(self.generated.pairs[s]['query']) for s in clicks.SPLITS}
    self.info = DatasetInfo(
      splits={s: SplitInfo(s, n) for s, n in counts.items()},
      metadata=synthetic_configs.metadata(self.generated),
    )
    self._products: dict[int, dict[str, Any]] = {}

  def is_prepared(self) -> bool:
    """Always: the data is generated when the dataset is made."""
    return True

  def as_data_source(self, split: str, decoders: Any = None) -> MemorySource:
    """The split's records; `decoders` is accepted for the TFDS signature (images stay PNG).

    Raises:
      ValueError: an unknown split.
    """
    del decoders
    if split not in self.info.splits:
      raise ValueError(f'Split {split!r} not in {list(self.info.splits)}')
    return MemorySource(self, split)

  def _product(self, product: int) -> dict[str, Any]:
    cached = self._products.get(product)
    if cached is None:
      cached = self._products[product] = _as_stored(self.generated.product_features(product))
    return cached

  def record(self, split: str, index: int) -> dict[str, Any]:
    """Record `index` of `split`, as the TFDS builder stores it."""
    cat = self.generated
    if split == 'catalogue':
      query = {'query': ''} | {k: '' for k in synthetic_configs.INTENT_FEATURES}
      product = index
    else:
      pairs = cat.pairs[split]
      query = {'query': pairs['query'][index]}
      query |= {f'query_{f}': pairs[f'query_{f}'][index] for f in synthetic.INTENT_FIELDS}
      product = int(pairs['product_id'][index])
    return _as_stored(query) | self._product(product)


# `features.pair_features`' scalar features as a TFDS data source returns them: Python
# numbers (log_p the float32 value).
_SCALARS = {'product_id': int, 'log_p': lambda v: float(np.float32(v)), 'image_missing': bool}


def _as_stored(example: Mapping[str, Any]) -> dict[str, Any]:
  """An example as a TFDS data source returns it: text as bytes, scalars as Python numbers."""
  out = {}
  for key, value in example.items():
    if key in _SCALARS:
      out[key] = _SCALARS[key](value)
    elif isinstance(value, str):
      out[key] = value.encode('utf-8')
    else:
      out[key] = value
  return out
