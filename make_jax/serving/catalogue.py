"""The catalogue serving shows and filters: ids, titles, attributes and images by row.

Rows are the rows of the exported embedding matrix, so a row found by the index, the
table (through `rows_of_ids`) and the inverted index is the same product. Built from
the fashion zip directly (`from_fashion_zip`, the same rules as the `fashion_products`
builder: styles.csv repaired, brand from the title) or from any product dicts.
"""

import dataclasses
import os
import threading
import zipfile
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from make_jax.datasets import fashion, synthetic
from make_jax.serving import index
from make_jax.serving import query_understanding as qu


@dataclasses.dataclass
class Catalogue:
  """Products by row: id, title, attributes and (optionally) an image loader."""

  dataset: str  # 'fashion_products' or 'synthetic_products': picks the restricted fields.
  ids: np.ndarray  # int64 [N] product ids, unique.
  titles: list[str]
  attributes: dict[str, list[str]]  # field -> value of every row.
  image_loader: Callable[[int], bytes | None] | None = None  # product id -> JPEG/PNG bytes.

  def __post_init__(self):
    self.ids = np.asarray(self.ids, np.int64)
    n = len(self.ids)
    if len(self.titles) != n or any(len(c) != n for c in self.attributes.values()):
      raise ValueError('ids, titles and every attribute column must have one entry per row')
    if len(np.unique(self.ids)) != n:
      raise ValueError('product ids must be unique')
    self._order = np.argsort(self.ids, kind='stable')
    self._sorted = self.ids[self._order]

  def __len__(self) -> int:
    return len(self.ids)

  @property
  def restricted_fields(self) -> tuple[str, ...]:
    """The fields relevance control filters on (those of the dataset this catalogue has)."""
    fields = qu.RESTRICTED_FIELDS.get(self.dataset, ('brand', 'category'))
    return tuple(f for f in fields if f in self.attributes)

  def restricted_columns(self) -> dict[str, list[str]]:
    """field -> value of every row, for the restricted fields."""
    return {f: self.attributes[f] for f in self.restricted_fields}

  def rows_of_ids(self, ids: np.ndarray) -> np.ndarray:
    """Row of each product id (int64), -1 for ids not in the catalogue."""
    return index.rows_of_ids(self._sorted, self._order, ids)

  def take(self, rows: np.ndarray) -> 'Catalogue':
    """The catalogue of the given rows, in their order (e.g. the export's order)."""
    rows = np.asarray(rows, np.int64)
    return Catalogue(
      dataset=self.dataset,
      ids=self.ids[rows],
      titles=[self.titles[r] for r in rows],
      attributes={f: [c[r] for r in rows] for f, c in self.attributes.items()},
      image_loader=self.image_loader,
    )

  def image(self, product_id: int) -> bytes | None:
    """The product's image bytes, or None (unknown id, no loader or no image)."""
    if self.image_loader is None or self.rows_of_ids(np.array([product_id]))[0] < 0:
      return None
    return self.image_loader(int(product_id))

  @classmethod
  def from_products(
    cls,
    dataset: str,
    products: Sequence[Mapping[str, object]],
    fields: Sequence[str],
    image_loader: Callable[[int], bytes | None] | None = None,
  ) -> 'Catalogue':
    """From product dicts with 'id', 'title' and the attribute `fields`."""
    return cls(
      dataset=dataset,
      ids=np.array([int(p['id']) for p in products], np.int64),
      titles=[str(p['title']) for p in products],
      attributes={f: [str(p.get(f, '')) for p in products] for f in fields},
      image_loader=image_loader,
    )

  @classmethod
  def from_fashion_zip(cls, path: str | os.PathLike, limit: int | None = None) -> 'Catalogue':
    """The fashion catalogue from its Kaggle zip (images read lazily from the zip).

    Brands are derived from all titles (as the builder does) before `limit` keeps the
    first rows.
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
    fields = ('brand', 'gender', 'masterCategory', 'subCategory', 'articleType', 'baseColour')
    return cls.from_products(
      'fashion_products', products, fields + ('season', 'usage'), _ZipImages(path)
    )

  @classmethod
  def from_synthetic(cls, cat: synthetic.Catalogue) -> 'Catalogue':
    """A generated `synthetic` catalogue (ids = row numbers; PNG images drawn on demand)."""
    fields = ('brand', 'category', 'colour', 'shape', 'pattern')
    n = cat.spec.num_products
    return cls(
      dataset='synthetic_products',
      ids=np.arange(n, dtype=np.int64),
      titles=list(cat.titles),
      attributes={f: [cat.word(f, i) for i in range(n)] for f in fields},
      image_loader=lambda i: synthetic.encode_png(synthetic.draw_image(cat, i)),
    )


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
