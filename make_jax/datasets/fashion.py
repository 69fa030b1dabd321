"""Reading the fashion catalogue zip and mocking its click log (no TFDS here).

The Kaggle "Fashion Product Images (Small)" archive (data/README.md) has a catalogue but
no queries. This module turns it into what the `fashion_products` builder writes, and
keeps every rule testable on its own:

* `read_styles`: styles.csv rows -> product dicts. A row with more than 10 fields
  (unquoted commas inside productDisplayName) is repaired by joining the extra fields
  back into the title; a row with fewer fields or a non-integer id is skipped. Both are
  counted. Empty cells stay '' (year: 0).
* `brand_of_titles`: the brand is the title's leading words before the first gender
  word (Men, Women, Boys, Girls, Unisex, ...), at most 4: the first word, extended one
  word at a time while the longer prefix still starts at least 30% (and >= 10) of the
  titles that start with the shorter one. So "Peter England Men ..." -> "Peter England",
  "United Colors of Benetton Women ..." -> "United Colors of Benetton", but "Turtle Check
  Men ..." -> "Turtle" (few Turtle titles go on with "Check").
* `load_image`: the stored JPEG when it is RGB 60x80 (bytes kept as they are); greyscale
  or other modes converted to RGB, other sizes resized to 60x80 (W x H), both
  re-encoded; a missing file gives a black image and image_missing=True; an
  undecodable file is treated as missing. Each case is counted.
* `hide_colour`: removes the colour phrase from a title (whole words, any case).
* `mock_queries`: like the paper's "mocked query" for products without logs: a query is
  a template over the clicked product's attributes (gender, colour, article type, brand,
  usage, season), lower-cased, words in random order; the clicked product is drawn from
  a Zipf-skewed popularity (`clicks`) and the template among those whose fields the
  product has. Pairs are split by the query's word set, so test queries are never
  train queries; evaluation judges them against the whole catalogue.
"""

import csv
import dataclasses
import io
import re
import zipfile
from collections import Counter
from collections.abc import Sequence

import numpy as np
from absl import logging
from PIL import Image

from make_jax.datasets import clicks

STYLES_PATH = 'myntradataset/styles.csv'
IMAGE_PATH = 'myntradataset/images/{}.jpg'
COLUMNS = (
  'id',
  'gender',
  'masterCategory',
  'subCategory',
  'articleType',
  'baseColour',
  'season',
  'year',
  'usage',
  'productDisplayName',
)
IMAGE_WIDTH, IMAGE_HEIGHT = 60, 80  # The catalogue's native size (PIL order: W, H).
GENDER_WORDS = frozenset(
  {'men', 'women', 'boys', 'girls', 'unisex', 'kids', "men's", "women's", 'mens', 'womens'}
)
# Query templates over product attributes ('brand' is derived from the title).
QUERY_TEMPLATES = (
  ('articleType',),
  ('brand',),
  ('baseColour', 'articleType'),
  ('gender', 'articleType'),
  ('brand', 'articleType'),
  ('usage', 'articleType'),
  ('season', 'articleType'),
  ('gender', 'baseColour', 'articleType'),
  ('brand', 'gender', 'articleType'),
  ('brand', 'baseColour', 'articleType'),
)
# Query intent feature -> product attribute it names ('' in a pair when not named).
INTENT_FEATURES = {
  'query_brand': 'brand',
  'query_category': 'articleType',
  'query_colour': 'baseColour',
  'query_gender': 'gender',
  'query_usage': 'usage',
  'query_season': 'season',
}


def read_styles(csv_bytes: bytes) -> tuple[list[dict[str, object]], Counter]:
  """Parses styles.csv into product dicts (see the module docstring for the rules).

  Returns:
    (products, counts): products in file order with the COLUMNS as keys ('title' for
    productDisplayName, int 'id' and 'year'); counts of 'rows', 'malformed_rows_fixed',
    'malformed_rows_skipped', 'empty_cells'.
  """
  counts = Counter()
  reader = csv.reader(io.StringIO(csv_bytes.decode('utf-8-sig')))
  header = next(reader, None)
  if header is None or [h.strip() for h in header] != list(COLUMNS):
    raise ValueError(f'styles.csv header is {header!r}, expected {list(COLUMNS)!r}')
  products = []
  for line_no, fields in enumerate(reader, start=2):
    if not fields:
      continue
    counts['rows'] += 1
    if len(fields) > len(COLUMNS):
      # Unquoted commas in the last column (the title): join them back.
      fields = [*fields[: len(COLUMNS) - 1], ','.join(fields[len(COLUMNS) - 1 :])]
      counts['malformed_rows_fixed'] += 1
    if len(fields) < len(COLUMNS) or not fields[0].strip().isdigit():
      logging.warning('styles.csv line %d skipped (malformed): %r', line_no, fields)
      counts['malformed_rows_skipped'] += 1
      continue
    row = dict(zip(COLUMNS, (f.strip() for f in fields), strict=True))
    counts['empty_cells'] += sum(1 for v in row.values() if not v)
    row['id'] = int(row['id'])
    row['year'] = int(row['year']) if row['year'].isdigit() else 0
    row['title'] = row.pop('productDisplayName')
    products.append(row)
  return products, counts


def _prefix(title: str) -> list[str]:
  out = []
  for word in title.split()[:4]:
    if word.lower() in GENDER_WORDS:
      break
    out.append(word)
  return out


def brand_of_titles(titles: Sequence[str]) -> list[str]:
  """The brand of every title, by the leading-words rule of the module docstring."""
  prefixes = [_prefix(t) for t in titles]
  starts = Counter()
  for p in prefixes:
    for k in range(1, len(p) + 1):
      starts[tuple(p[:k])] += 1
  brands = []
  for p in prefixes:
    k = min(1, len(p))
    while k < len(p) and starts[tuple(p[: k + 1])] >= max(10, 0.3 * starts[tuple(p[:k])]):
      k += 1
    brands.append(' '.join(p[:k]))
  return brands


def _encode_jpeg(img: Image.Image) -> bytes:
  buf = io.BytesIO()
  img.save(buf, format='JPEG', quality=90)
  return buf.getvalue()


_BLACK_JPEG = None


def black_jpeg() -> bytes:
  """A black 60x80 JPEG: the stored image of a product without one."""
  global _BLACK_JPEG
  if _BLACK_JPEG is None:
    _BLACK_JPEG = _encode_jpeg(Image.new('RGB', (IMAGE_WIDTH, IMAGE_HEIGHT)))
  return _BLACK_JPEG


def load_image(zf: zipfile.ZipFile, product_id: int) -> tuple[bytes, bool, set[str]]:
  """Reads and normalises one product image.

  Returns:
    (jpeg_bytes, missing, defects): an RGB 60x80 JPEG; True when there was no usable
    image (the JPEG is then black); the defects found, a subset of {'missing_image',
    'undecodable_image', 'greyscale_image', 'other_mode_image', 'odd_size_image'}.
  """
  try:
    raw = zf.read(IMAGE_PATH.format(product_id))
  except KeyError:
    return black_jpeg(), True, {'missing_image'}
  try:
    img = Image.open(io.BytesIO(raw))
    img.load()
  except Exception as e:  # noqa: BLE001  PIL raises many types for corrupt files.
    logging.warning('Image of product %d is undecodable (%s): stored as missing', product_id, e)
    return black_jpeg(), True, {'undecodable_image'}
  defects = set()
  if img.mode != 'RGB':
    defects.add('greyscale_image' if img.mode == 'L' else 'other_mode_image')
    img = img.convert('RGB')
  if img.size != (IMAGE_WIDTH, IMAGE_HEIGHT):
    defects.add('odd_size_image')
    img = img.resize((IMAGE_WIDTH, IMAGE_HEIGHT), Image.Resampling.BILINEAR)
  return (_encode_jpeg(img) if defects else raw), False, defects


def hide_colour(title: str, colour: str) -> str:
  """`title` without the words of `colour` (whole words, any case, spaces collapsed)."""
  if not colour:
    return title
  pattern = r'(?<!\w)' + r'\s+'.join(re.escape(w) for w in colour.split()) + r'(?!\w)'
  return ' '.join(re.sub(pattern, ' ', title, flags=re.IGNORECASE).split())


def has_words(title: str, phrase: str) -> bool:
  """Whether `phrase` occurs in `title` as whole words, any case."""
  return bool(phrase) and hide_colour(title, phrase) != ' '.join(title.split())


@dataclasses.dataclass(frozen=True)
class MockSpec:
  """How the click pairs are mocked."""

  num_pairs: int = 60_000  # Pairs over train/validation/test together.
  validation_share: float = 0.05  # Share of query keys in validation.
  test_share: float = 0.05  # Share of query keys in test.
  zipf_exponent: float = 1.0  # Popularity skew over the catalogue.
  seed: int = 0


def mock_queries(
  products: Sequence[dict[str, object]], spec: MockSpec
) -> tuple[dict[str, dict[str, list]], np.ndarray]:
  """Mocks the (query, clicked product) pairs of the three click splits.

  Args:
    products: product dicts with 'brand' and the attribute columns.
    spec: sizes, shares, skew and seed.

  Returns:
    (pairs, log_p): pairs[split] holds lists 'query', 'index' (into `products`) and one per
    INTENT_FEATURES key; log_p float32 [len(products)] per `clicks.train_log_p`.
  """
  if spec.num_pairs < 1:
    raise ValueError(f'num_pairs must be >= 1, got {spec.num_pairs}')
  rng = np.random.default_rng([spec.seed, 41])
  n = len(products)
  probs = clicks.zipf_probabilities(n, spec.zipf_exponent, rng)
  chosen = rng.choice(n, size=spec.num_pairs, p=probs)
  pairs = {s: {'query': [], 'index': [], **{k: [] for k in INTENT_FEATURES}} for s in clicks.SPLITS}
  for i in chosen:
    product = products[i]
    usable = [t for t in QUERY_TEMPLATES if all(product[f] for f in t)]
    if not usable:
      continue  # Not even an article type: no query names this product.
    fields = usable[rng.integers(len(usable))]
    words = [str(product[f]).lower() for f in fields]
    order = rng.permutation(len(words))
    query = ' '.join(words[k] for k in order)
    split = clicks.split_of_query(
      query.split(), spec.validation_share, spec.test_share, salt=str(spec.seed)
    )
    rec = pairs[split]
    rec['query'].append(query)
    rec['index'].append(int(i))
    for key, field in INTENT_FEATURES.items():
      rec[key].append(str(product[field]) if field in fields else '')
  log_p = clicks.train_log_p(np.asarray(pairs['train']['index'], np.int64), n)
  return pairs, log_p
