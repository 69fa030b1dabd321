"""Reading the fashion catalogue zip: products, brands, images, hidden colours (no TFDS).

The Kaggle "Fashion Product Images (Small)" archive (data/README.md) has a catalogue but
no queries. This module turns it into the products the `fashion_products` builder writes
(queries are mocked in `fashion_queries`), and keeps every rule testable on its own:

* `read_styles`: styles.csv rows -> product dicts. A row with more than 10 fields
  (unquoted commas inside productDisplayName) is repaired by joining the extra fields
  back into the title; a row with fewer fields or a non-integer id is skipped. Both are
  counted. Empty cells stay '' (year: 0).
* `brand_of_titles`: the brand is the title's leading words before the first gender
  word (Men, Woman, Boys, Kids, Unisex, Infant, ...), at most 4 and never the title's
  last word. Words are compared without case. From the first word, the brand grows one
  word at a time while the longer prefix still starts at least 30% (and >= 10) of the
  titles that start with the shorter one ("Peter England Men ..." -> "Peter England";
  "Turtle Check Men ..." -> "Turtle": few Turtle titles go on with "Check"). Checked
  against the colour vocabulary (the words and values of baseColour):
  - a brand that only names a colour grows regardless ("Red Chief", "Pink Floyd"), and
    is dropped ('') if it cannot ("Black Men Shirt");
  - a colour word joins only if it is not the colour of most products whose titles
    start that way ("Avirate Black Dress" -> "Avirate"; "Do u speak green" stays);
  - a brand does not end with a connector ('&', 'and', 'of', ...).
  Spellings that differ only in case and punctuation ("PUMA"/"Puma", "Reid&Taylor"/
  "Reid & Taylor", "U.S.Polo Assn."/"U.S. Polo Assn.") are one brand, written the way
  most titles write it.
* `load_image`: the stored JPEG when it is RGB 60x80 (bytes kept as they are); greyscale
  or other modes converted to RGB, other sizes scaled to fit 60x80 with their
  proportions kept and padded, centred, with PAD_RGB (white, the photos' background),
  both re-encoded; a missing file gives a black image and image_missing=True; an
  undecodable file is treated as missing. Each case is counted.
* `hide_colour`: removes the colour phrase from a title (whole words, any case).
"""

import csv
import io
import re
import zipfile
from collections import Counter
from collections.abc import Iterable, Sequence

from absl import logging
from PIL import Image

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
# The product attributes the dataset keeps: the brand (derived from the title) and the
# styles.csv columns that describe the product.
ATTRIBUTES = ('brand',) + tuple(c for c in COLUMNS if c not in ('id', 'year', 'productDisplayName'))
IMAGE_WIDTH, IMAGE_HEIGHT = 60, 80  # The catalogue's native size (PIL order: W, H).
PAD_RGB = (255, 255, 255)  # Padding of odd sizes: the white background of the photos.
# Words that end a brand (case-folded): the audience a title names after its brand.
GENDER_WORDS = frozenset(
  {'men', 'women', 'man', 'woman', 'boys', 'girls', 'boy', 'girl', 'unisex', 'kids', "kid's"}
  | {"men's", "women's", 'mens', 'womens', 'infant', 'infants', 'ladies', 'lady'}
)
MAX_BRAND_WORDS = 4  # 'United Colors of Benetton'.
MIN_BRAND_TITLES = 10  # A longer brand needs this many titles ...
BRAND_SHARE = 0.3  # ... and this share of the titles that start with the shorter one.
CONNECTORS = frozenset({'&', 'and', 'of', '-', '+', 'n', 'by', 'with', 'the'})  # Never last.
MISSING = frozenset({'', 'NA'})  # Attribute cells that say nothing.


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


def _key(text: str) -> str:
  """How brands are compared: case-folded letters and digits only ('Reid&Taylor' ==
  'Reid & Taylor', 'PUMA' == 'Puma')."""
  return ''.join(c for c in text.casefold() if c.isalnum())


def colour_vocabulary(colours: Iterable[str]) -> tuple[frozenset[str], frozenset[str]]:
  """(words, phrases): the case-folded words of the catalogue's baseColour values, and the
  brand keys that only name a colour (a whole value, 'navyblue', or one of its words)."""
  values = {c for c in colours if c not in MISSING}
  words = frozenset(w.casefold() for c in values for w in c.split())
  return words, frozenset({_key(c) for c in values} | {_key(w) for w in words})


def _prefix(title: str) -> list[str]:
  # Words before the first gender word; never the title's last word (the product name).
  words = title.split()[:-1]
  out = []
  for word in words[:MAX_BRAND_WORDS]:
    if word.casefold() in GENDER_WORDS:
      break
    out.append(word)
  return out


def brand_of_titles(titles: Sequence[str], colours: Sequence[str]) -> tuple[list[str], Counter]:
  """The brand of every title, by the rule of the module docstring.

  Args:
    titles: product titles.
    colours: each product's baseColour ('' when unknown), for the colour checks.

  Returns:
    (brands, counts): one brand per title ('' when none), spelled as most titles spell it;
    counts of 'colour_only_brand' (titles whose brand would only name a colour: none) and
    'brand_respelled' (titles whose brand is written another way in most titles).
  """
  vocab, colour_keys = colour_vocabulary(colours)
  prefixes = [_prefix(t) for t in titles]
  folded = [[w.casefold() for w in p] for p in prefixes]
  own = [{w.casefold() for w in c.split()} for c in colours]
  starts, own_colour = Counter(), Counter()
  for f, mine in zip(folded, own, strict=True):
    for k in range(1, len(f) + 1):
      starts[tuple(f[:k])] += 1
      own_colour[tuple(f[:k])] += f[k - 1] in mine
  counts = Counter(colour_only_brand=0)
  raw = []
  for p, f in zip(prefixes, folded, strict=True):
    k = min(1, len(f))
    while k < len(f):
      longer = tuple(f[: k + 1])
      colour_only = _key(''.join(f[:k])) in colour_keys
      frequent = starts[longer] >= max(MIN_BRAND_TITLES, BRAND_SHARE * starts[tuple(f[:k])])
      # A colour word joins only if it is not the colour of most of those products.
      describes = f[k] in vocab and 2 * own_colour[longer] >= starts[longer]
      if not (colour_only or frequent) or describes:
        break
      k += 1
    while k > 1 and f[k - 1] in CONNECTORS:
      k -= 1
    if k and _key(''.join(f[:k])) in colour_keys:
      counts['colour_only_brand'] += 1
      k = 0
    raw.append(' '.join(p[:k]))
  spellings = Counter(raw)
  best = {}
  for spelling in sorted(spellings, key=lambda b: (-spellings[b], b)):
    best.setdefault(_key(spelling), spelling)
  brands = [best[_key(b)] for b in raw]
  counts['brand_respelled'] = sum(b != r for b, r in zip(brands, raw, strict=True))
  return brands, counts


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


def fit_and_pad(img: Image.Image, width: int, height: int) -> Image.Image:
  """`img` scaled (bilinear, proportions kept) to fit `width` x `height`, centred on a
  PAD_RGB canvas of exactly that size: a 60x60 photo gets 10 rows above and below."""
  scale = min(width / img.width, height / img.height)
  size = (
    max(1, min(width, round(img.width * scale))),
    max(1, min(height, round(img.height * scale))),
  )
  if size != img.size:
    img = img.resize(size, Image.Resampling.BILINEAR)
  canvas = Image.new('RGB', (width, height), PAD_RGB)
  canvas.paste(img, ((width - size[0]) // 2, (height - size[1]) // 2))
  return canvas


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
    img = fit_and_pad(img, IMAGE_WIDTH, IMAGE_HEIGHT)
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
