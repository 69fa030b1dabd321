"""`Catalogue`: the products searched, by row: id, title, attribute values and images.

The one catalogue type of the package. The evaluation set holds one sorted by product id
(`evaluation/eval_set.EvalSet`), the in-training evaluator one beside its featurised
inputs (`retrieval/evaluator.FeaturisedCatalogue`), serving one in the export's row order
(`serving/search.Searcher`). A row is a product: `ids[r]`, `titles[r]` and
`attributes[field][r]` describe the same one, and `rows_of_ids` maps product ids back to
rows (-1 where absent) by binary search over a sorted copy of the ids. `InvertedIndex`
maps attribute values to the rows that hold them (relevance control's filters).

Built from product dicts (`from_products`), from the fashion zip directly
(`from_fashion_zip`: the same rules as the `fashion_products` builder, styles.csv repaired,
brand from the title) or from a generated synthetic dataset (`from_synthetic`).
"""

import dataclasses
import os
import threading
import zipfile
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from make_jax.datasets import fashion, synthetic, synthetic_configs

ImageLoader = Callable[[int], bytes | None]  # product id -> JPEG/PNG bytes, or None.


def rows_of_ids(sorted_ids: np.ndarray, order: np.ndarray, ids: np.ndarray) -> np.ndarray:
  """Row of each of `ids` (int64, -1 where absent) by binary search.

  sorted_ids: the rows' product ids sorted; order: `np.argsort` of the rows' ids (so
  `sorted_ids = row_ids[order]`).
  """
  ids = np.asarray(ids, np.int64)
  if not len(sorted_ids):
    return np.full(ids.shape, -1, np.int64)
  pos = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
  return np.where(sorted_ids[pos] == ids, order[pos], -1).astype(np.int64)


@dataclasses.dataclass
class Catalogue:
  """Products by row.

  Attributes:
    ids: int64 [N] product ids, unique.
    titles: [N] titles.
    attributes: field -> object [N] of the rows' values (text).
    dataset: the dataset the products come from ('' when unknown); serving reads which
      fields relevance control filters on from it.
    image_loader: product id -> image bytes, or None (no images).
  """

  ids: np.ndarray
  titles: list[str]
  attributes: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  dataset: str = ''
  image_loader: ImageLoader | None = None

  def __post_init__(self):
    self.ids = np.asarray(self.ids, np.int64).reshape(-1)
    self.titles = list(self.titles)
    self.attributes = {f: _column(c) for f, c in self.attributes.items()}
    n = len(self.ids)
    if len(self.titles) != n or any(len(c) != n for c in self.attributes.values()):
      raise ValueError('ids, titles and every attribute column must have one entry per row')
    self._order = np.argsort(self.ids, kind='stable')
    self._sorted = self.ids[self._order]
    if n > 1 and (np.diff(self._sorted) == 0).any():
      raise ValueError('product ids must be unique')

  def __len__(self) -> int:
    return len(self.ids)

  def rows_of_ids(self, ids: np.ndarray) -> np.ndarray:
    """Row of each product id (int64, same shape), -1 for ids not in the catalogue."""
    return rows_of_ids(self._sorted, self._order, ids)

  def take(self, rows: np.ndarray) -> 'Catalogue':
    """The catalogue of the given rows, in their order (e.g. the export's order)."""
    rows = np.asarray(rows, np.int64)
    return dataclasses.replace(
      self,
      ids=self.ids[rows],
      titles=[self.titles[r] for r in rows.tolist()],
      attributes={f: c[rows] for f, c in self.attributes.items()},
    )

  def image(self, product_id: int) -> bytes | None:
    """The product's image bytes, or None (unknown id, no loader or no image)."""
    if self.image_loader is None or self.rows_of_ids(np.array([product_id]))[0] < 0:
      return None
    return self.image_loader(int(product_id))


def _column(values: Sequence[str] | np.ndarray) -> np.ndarray:
  column = np.empty(len(values), dtype=object)
  column[:] = list(values)
  return column


def from_products(
  products: Sequence[Mapping[str, object]],
  fields: Sequence[str],
  *,
  dataset: str = '',
  image_loader: ImageLoader | None = None,
) -> Catalogue:
  """From product dicts with 'id', 'title' and the attribute `fields` (missing: '')."""
  return Catalogue(
    ids=np.array([int(p['id']) for p in products], np.int64),
    titles=[str(p['title']) for p in products],
    attributes={f: [str(p.get(f, '')) for p in products] for f in fields},
    dataset=dataset,
    image_loader=image_loader,
  )


def from_fashion_zip(path: str | os.PathLike, limit: int | None = None) -> Catalogue:
  """The fashion catalogue from its Kaggle zip (images read lazily from the zip).

  Brands are derived from all titles (as the builder does) before `limit` keeps the first
  rows.
  """
  with zipfile.ZipFile(path) as zf:
    products, _ = fashion.read_styles(zf.read(fashion.STYLES_PATH))
  brands, _ = fashion.brand_of_titles(
    [p['title'] for p in products], [p['baseColour'] for p in products]
  )
  for p, brand in zip(products, brands, strict=True):
    p['brand'] = brand
  if limit is not None:
    products = products[:limit]
  return from_products(
    products, fashion.ATTRIBUTES, dataset='fashion_products', image_loader=_ZipImages(path)
  )


def from_synthetic(generated: synthetic.Generated) -> Catalogue:
  """A generated synthetic dataset's products (ids = row numbers; PNGs drawn on demand)."""
  n = generated.spec.num_products
  return Catalogue(
    ids=np.arange(n, dtype=np.int64),
    titles=generated.titles,
    attributes={
      f: [generated.word(f, i) for i in range(n)] for f in synthetic_configs.ATTRIBUTE_FEATURES
    },
    dataset='synthetic_products',
    image_loader=lambda i: synthetic.encode_png(synthetic.draw_image(generated, i)),
  )


class InvertedIndex:
  """Attribute value -> sorted catalogue rows (serving's relevance control filters with it).

  A filter is clauses `((field, (value, ...)), ...)`: values ORed within a field, fields
  ANDed; `rows` gives the rows that satisfy one.
  """

  def __init__(self, columns: Mapping[str, Sequence[str]]):
    """columns: field -> the value of every catalogue row (all of one length)."""
    lengths = {len(c) for c in columns.values()}
    if len(lengths) > 1:
      raise ValueError(f'attribute columns differ in length: {lengths}')
    self.num_rows = lengths.pop() if lengths else 0
    self._postings: dict[str, dict[str, np.ndarray]] = {}
    for field, column in columns.items():
      rows: dict[str, list[int]] = defaultdict(list)
      for i, v in enumerate(column):
        rows[v].append(i)
      self._postings[field] = {v: np.asarray(r, np.int64) for v, r in rows.items()}

  def value_counts(self) -> dict[str, dict[str, int]]:
    """field -> {value: number of rows}."""
    return {f: {v: len(r) for v, r in p.items()} for f, p in self._postings.items()}

  def rows(self, clauses: Sequence[tuple[str, Sequence[str]]]) -> np.ndarray | None:
    """Sorted rows that satisfy `clauses`; None for no clause (everything)."""
    if not clauses:
      return None
    out = None
    for field, values in clauses:
      postings = self._postings.get(field, {})
      parts = [postings[v] for v in values if v in postings]
      rows = np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
      out = rows if out is None else np.intersect1d(out, rows, assume_unique=True)
      if not len(out):
        break
    return out

  def consistent(self, pairs: Sequence[tuple[str, str]]) -> bool:
    """Whether some row satisfies the pairs (ORed within a field, ANDed across)."""
    by_field: dict[str, list[str]] = {}
    for field, value in pairs:
      by_field.setdefault(field, []).append(value)
    rows = self.rows(tuple(by_field.items()))
    return rows is None or len(rows) > 0


class _ZipImages:
  """Reads `myntradataset/images/<id>.jpg` from the zip on demand (thread-safe)."""

  def __init__(self, path: str | os.PathLike):
    self._path = path
    self._zip: zipfile.ZipFile | None = None
    self._lock = threading.Lock()

  def __call__(self, product_id: int) -> bytes | None:
    with self._lock:
      if self._zip is None:
        self._zip = zipfile.ZipFile(self._path)
      try:
        return self._zip.read(fashion.IMAGE_PATH.format(product_id))
      except KeyError:
        return None
