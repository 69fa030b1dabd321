"""Synthetic product catalogue and click log, generated from a seed (no TFDS, no download).

Why synthetic data: the tests and the quickstart need a dataset that is small, private,
instant and has the properties the model is about (SPEC section 1):

* Every product has a brand, category, colour, shape and pattern. Its 32x32 RGB image
  draws the shape, filled with the colour in the pattern, on a cream background, so
  colour, shape and pattern words of the title and the queries agree with the pixels.
* For `hide_colour_share` of the products the colour word is left out of the title; the
  image and the queries still carry it, so a text-only model cannot answer every query.
* Clicks follow a Zipf-skewed popularity (`clicks.zipf_probabilities`), so `log p`
  differs by orders of magnitude between head and tail products. Train holds
  `num_pairs` (query, clicked product) pairs whose query is a train query.
* A query names some attributes (QUERY_TEMPLATES); it is satisfied by every product with
  those values. Validation and test hold, for every query that `clicks.evaluation_split`
  puts there, one record per satisfying product (the query's target set, complete;
  queries of more than `max_targets` products stay in train), one word order per query.
* English (`en`) titles and queries are space-separated; Chinese (`zh`) ones are written
  without spaces, so word segmentation is needed to find the words.

Everything is a deterministic function of `SyntheticSpec` (seed included). Product
attributes are drawn vectorised; titles are built per product and images on demand
(`draw_image`), so catalogues of millions of products fit in memory.
"""

import dataclasses
import io
from collections.abc import Iterator

import numpy as np
from PIL import Image

from make_jax.datasets import clicks

# Colour name (en, zh) and the exact RGB value its pixels get in the image.
COLOURS = (
  ('red', '红色', (220, 30, 30)),
  ('blue', '蓝色', (30, 60, 220)),
  ('green', '绿色', (30, 160, 60)),
  ('yellow', '黄色', (240, 210, 20)),
  ('black', '黑色', (20, 20, 20)),
  ('white', '白色', (255, 255, 255)),
  ('purple', '紫色', (130, 40, 170)),
  ('orange', '橙色', (250, 130, 10)),
  ('pink', '粉色', (250, 120, 180)),
  ('grey', '灰色', (128, 128, 128)),
)
SHAPES = (('round', '圆形'), ('square', '方形'), ('triangle', '三角'), ('diamond', '菱形'))
PATTERNS = (('plain', '纯色'), ('striped', '条纹'), ('dotted', '波点'), ('checked', '格子'))
CATEGORIES = (
  ('dress', '连衣裙'),
  ('shirt', '衬衫'),
  ('sneakers', '运动鞋'),
  ('handbag', '手提包'),
  ('hat', '帽子'),
  ('skirt', '半身裙'),
  ('jacket', '夹克'),
  ('scarf', '围巾'),
  ('watch', '手表'),
  ('sweater', '毛衣'),
  ('jeans', '牛仔裤'),
  ('socks', '袜子'),
)
BRANDS = (
  ('aurora', '极光'),
  ('bolt', '闪电'),
  ('cedar', '雪松'),
  ('delta', '三角洲'),
  ('ember', '余烬'),
  ('fjord', '峡湾'),
  ('granite', '花岗'),
  ('harbor', '港湾'),
  ('iris', '鸢尾'),
  ('juniper', '杜松'),
  ('kestrel', '红隼'),
  ('lumen', '流明'),
  ('maple', '枫叶'),
  ('nimbus', '云雨'),
  ('onyx', '玛瑙'),
  ('pioneer', '先锋'),
  ('quartz', '石英'),
  ('river', '河流'),
  ('summit', '巅峰'),
  ('tundra', '苔原'),
  ('umber', '赭石'),
  ('vertex', '顶点'),
  ('willow', '柳树'),
  ('zephyr', '西风'),
)
FILLERS = (
  ('new', '新款'),
  ('classic', '经典'),
  ('summer', '夏季'),
  ('winter', '冬季'),
  ('slim', '修身'),
  ('casual', '休闲'),
  ('premium', '高级'),
  ('soft', '柔软'),
  ('light', '轻薄'),
  ('vintage', '复古'),
)
BACKGROUND = (236, 228, 210)  # Cream: distinct from every colour in COLOURS.

# Query templates: which product attributes a query names. The category-only and
# brand-only queries are broad; the others narrow the intent.
QUERY_TEMPLATES = (
  ('category',),
  ('brand',),
  ('colour', 'category'),
  ('brand', 'category'),
  ('pattern', 'category'),
  ('shape', 'category'),
  ('colour', 'pattern', 'category'),
  ('colour', 'shape', 'category'),
  ('brand', 'colour', 'category'),
  ('brand', 'colour', 'pattern', 'category'),
)
# Intent fields of a pair ('' when the query does not name the attribute), for P_rel/P_cate.
INTENT_FIELDS = ('brand', 'category', 'colour')
# Word order of a Chinese title/query (brand, adjectives, category), written without spaces.
_ZH_ORDER = ('brand', 'colour', 'pattern', 'shape', 'category')

_TABLES = {
  'brand': BRANDS,
  'category': CATEGORIES,
  'colour': tuple((c[0], c[1]) for c in COLOURS),
  'shape': SHAPES,
  'pattern': PATTERNS,
}
_LANG = {'en': 0, 'zh': 1}


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
  """What to generate. Every field changes the data; the same spec gives the same data."""

  language: str = 'en'  # 'en' (space-separated) or 'zh' (no spaces).
  num_products: int = 5_000  # Catalogue size.
  num_pairs: int = 50_000  # Train (query, clicked product) pairs.
  validation_share: float = 0.05  # Share of query keys that go to validation.
  test_share: float = 0.05  # Share of query keys that go to test.
  max_targets: int = 100  # Broader queries (more satisfying products) stay in train.
  zipf_exponent: float = 1.1  # Popularity skew: p(rank r) ~ 1 / (r + 1)^s.
  hide_colour_share: float = 0.2  # Share of products whose title omits the colour word.
  image_size: int = 32  # Side of the square RGB image.
  seed: int = 0  # Seeds everything above that is random.

  def validate(self) -> None:
    """Raises ValueError naming the first field that is out of range."""
    if self.language not in _LANG:
      raise ValueError(f"language must be 'en' or 'zh', got {self.language!r}")
    if self.num_products < 1:
      raise ValueError(f'num_products must be >= 1, got {self.num_products}')
    if self.num_pairs < 1:
      raise ValueError(f'num_pairs must be >= 1, got {self.num_pairs}')
    if self.max_targets < 1:
      raise ValueError(f'max_targets must be >= 1, got {self.max_targets}')
    if not 0.0 <= self.hide_colour_share <= 1.0:
      raise ValueError(f'hide_colour_share must be in [0, 1], got {self.hide_colour_share}')
    if self.image_size < 16:
      raise ValueError(f'image_size must be >= 16 to draw shapes, got {self.image_size}')


@dataclasses.dataclass
class Generated:
  """A generated dataset: its products and click log, as the generator drew them.

  Attribute arrays are indexed by product id and hold indices into the attribute tables
  (`word` gives the text); `retrieval.catalogue.from_synthetic` makes the searchable
  `Catalogue` of it.
  """

  spec: SyntheticSpec
  attributes: dict[str, np.ndarray]  # name -> int32 [N] index into the name's table.
  colour_hidden: np.ndarray  # bool [N]: the title omits the colour word.
  titles: list[str]
  log_p: np.ndarray  # float32 [N], clicks.train_log_p of the train pairs.
  # split -> query, product_id, intents: train clicks; validation/test target sets.
  pairs: dict[str, dict[str, np.ndarray | list[str]]]

  def word(self, field: str, product: int) -> str:
    """The word (in the spec's language) of attribute `field` of `product`."""
    return _TABLES[field][self.attributes[field][product]][_LANG[self.spec.language]]

  def product_features(self, product: int) -> dict[str, object]:
    """The product part of an example: title, image and attributes."""
    return {
      'product_id': product,
      'title': self.titles[product],
      'image': encode_png(draw_image(self, product)),
      'image_missing': False,
      'log_p': self.log_p[product],
      'brand': self.word('brand', product),
      'category': self.word('category', product),
      'colour': self.word('colour', product),
      'shape': self.word('shape', product),
      'pattern': self.word('pattern', product),
    }

  def examples(self, split: str) -> Iterator[tuple[int, dict[str, object]]]:
    """Yields (key, example) of a split: 'catalogue' or one of clicks.SPLITS.

    Catalogue examples have an empty query and empty intents; pair examples carry the
    query, its intents and the clicked product's features (denormalised).
    """
    if split == 'catalogue':
      empty = {'query': ''} | {f'query_{f}': '' for f in INTENT_FIELDS}
      for i in range(self.spec.num_products):
        yield i, empty | self.product_features(i)
      return
    pairs = self.pairs[split]
    for j, product in enumerate(pairs['product_id']):
      ex = {'query': pairs['query'][j]}
      ex |= {f'query_{f}': pairs[f'query_{f}'][j] for f in INTENT_FIELDS}
      yield j, ex | self.product_features(int(product))


def _title(words: dict[str, str], fillers: list[str], language: str, rng) -> str:
  """A title: brand first, category last, adjectives and fillers shuffled between."""
  middle = [words[f] for f in ('colour', 'pattern', 'shape') if f in words] + fillers
  if language == 'zh':
    # Fixed attribute order, fillers up front, no spaces: segmentation must split it.
    return (
      words['brand'] + ''.join(fillers) + ''.join(words[f] for f in _ZH_ORDER[1:] if f in words)
    )
  rng.shuffle(middle)
  return ' '.join([words['brand'], *middle, words['category']])


def generate(spec: SyntheticSpec) -> Generated:
  """Generates the catalogue (attributes, titles), train clicks and evaluation queries."""
  spec.validate()
  lang = _LANG[spec.language]
  rng = np.random.default_rng([spec.seed, 17])
  n = spec.num_products
  attributes = {
    name: rng.integers(0, len(table), size=n).astype(np.int32) for name, table in _TABLES.items()
  }
  colour_hidden = np.zeros(n, bool)
  colour_hidden[rng.permutation(n)[: round(spec.hide_colour_share * n)]] = True
  num_fillers = rng.integers(0, 3, size=n)
  titles = []
  for i in range(n):
    words = {f: _TABLES[f][attributes[f][i]][lang] for f in _TABLES}
    if colour_hidden[i]:
      del words['colour']
    picks = rng.choice(len(FILLERS), size=num_fillers[i], replace=False)
    titles.append(_title(words, [FILLERS[k][lang] for k in picks], spec.language, rng))

  probs = clicks.zipf_probabilities(n, spec.zipf_exponent, rng)
  product_split, evaluation = _evaluation_queries(spec, attributes)
  pairs = {
    s: {'query': [], 'product_id': []} | {f'query_{f}': [] for f in INTENT_FIELDS}
    for s in clicks.SPLITS
  }
  # Train: clicks, redrawn when the query is an evaluation query.
  products, templates = np.zeros(0, np.int64), np.zeros(0, np.int64)
  while len(products) < spec.num_pairs:
    more = spec.num_pairs - len(products)
    p = rng.choice(n, size=more, p=probs)
    t = rng.integers(0, len(QUERY_TEMPLATES), size=more)
    keep = product_split[t, p] == 0
    products, templates = np.concatenate([products, p[keep]]), np.concatenate([templates, t[keep]])
  for product, t in zip(products.tolist(), templates.tolist(), strict=True):
    words = {f: _TABLES[f][attributes[f][product]][lang] for f in QUERY_TEMPLATES[t]}
    _append(pairs['train'], _query(words, QUERY_TEMPLATES[t], spec.language, rng), product, words)
  # Validation / test: every product that satisfies each evaluation query.
  for key in sorted(evaluation):
    split, t, members = evaluation[key]
    fields = QUERY_TEMPLATES[t]
    words = {f: _TABLES[f][attributes[f][members[0]]][lang] for f in fields}
    query = _query(words, fields, spec.language, rng)
    for product in members.tolist():
      _append(pairs[split], query, product, words)
  for rec in pairs.values():
    rec['product_id'] = np.asarray(rec['product_id'], np.int64)
  log_p = clicks.train_log_p(pairs['train']['product_id'], n)
  return Generated(spec, attributes, colour_hidden, titles, log_p, pairs)


def _query(words: dict[str, str], fields: tuple[str, ...], language: str, rng) -> str:
  if language == 'zh':
    return ''.join(words[f] for f in _ZH_ORDER if f in words)
  order = list(fields)
  rng.shuffle(order)
  return ' '.join(words[f] for f in order)


def _append(rec: dict[str, list], query: str, product: int, words: dict[str, str]) -> None:
  rec['query'].append(query)
  rec['product_id'].append(product)
  for f in INTENT_FIELDS:
    rec[f'query_{f}'].append(words.get(f, ''))


def _evaluation_queries(
  spec: SyntheticSpec, attributes: dict[str, np.ndarray]
) -> tuple[np.ndarray, dict[str, tuple[str, int, np.ndarray]]]:
  """Which queries evaluate, and the products that satisfy them (vectorised per template).

  Returns:
    (product_split, evaluation): int8 [templates, products], the split (0 train, 1
    validation, 2 test) of the query each template makes from each product; and
    evaluation query key -> (split, template index, ascending product ids).
  """
  lang = _LANG[spec.language]
  names = ('train', 'validation', 'test')
  product_split = np.zeros((len(QUERY_TEMPLATES), spec.num_products), np.int8)
  evaluation, seen = {}, set()
  for t, fields in enumerate(QUERY_TEMPLATES):
    shape = tuple(len(_TABLES[f]) for f in fields)
    codes = np.ravel_multi_index(tuple(attributes[f] for f in fields), shape)
    combos, inverse, counts = np.unique(codes, return_inverse=True, return_counts=True)
    members = np.split(np.argsort(inverse, kind='stable'), np.cumsum(counts)[:-1])
    splits = np.zeros(len(combos), np.int8)
    for u, code in enumerate(combos.tolist()):
      values = np.unravel_index(code, shape)
      words = clicks.query_words(_TABLES[f][v][lang] for f, v in zip(fields, values, strict=True))
      key = clicks.query_key(words)
      if words is None or key in seen:
        raise ValueError(f'Query words of {fields} repeat or collide with another template')
      seen.add(key)
      split = clicks.evaluation_split(
        words,
        int(counts[u]),
        spec.validation_share,
        spec.test_share,
        spec.max_targets,
        salt=str(spec.seed),
      )
      splits[u] = names.index(split)
      if split != 'train':
        evaluation[key] = (split, t, members[u])
    product_split[t] = splits[inverse]
  return product_split, evaluation


def domain_words(language: str) -> list[str]:
  """The attribute vocabulary (brands, categories, colours, shapes, patterns) in
  `language`, sorted: the words a segmenter should keep whole."""
  return sorted({row[_LANG[language]] for table in _TABLES.values() for row in table})


def encode_png(image: np.ndarray) -> bytes:
  """PNG bytes of an RGB image (PIL is several times faster than TFDS's encoder here)."""
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format='PNG', compress_level=1)
  return buf.getvalue()


def draw_image(cat: Generated, product: int) -> np.ndarray:
  """Draws the product's image: its shape, in its colour and pattern, on cream.

  Pixels of the shape that carry the pattern's colour have exactly the RGB of
  `COLOURS[colour]`; the pattern's second tone is the colour mixed half with white (or
  black for white products). Position and size vary per product (seeded by its id).
  """
  s = cat.spec.image_size
  rng = np.random.default_rng([cat.spec.seed, 29, product])
  colour = np.array(COLOURS[cat.attributes['colour'][product]][2], np.uint8)
  shape = SHAPES[cat.attributes['shape'][product]][0]
  pattern = PATTERNS[cat.attributes['pattern'][product]][0]

  img = np.empty((s, s, 3), np.uint8)
  img[:] = BACKGROUND
  noise = rng.integers(-6, 7, size=(s, s, 1))
  img[:] = np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)

  yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
  radius = s * rng.uniform(0.30, 0.42)
  cy, cx = s / 2 + rng.uniform(-0.06, 0.06, size=2) * s
  dy, dx = (yy - cy) / radius, (xx - cx) / radius
  if shape == 'round':
    inside = dy**2 + dx**2 <= 1.0
  elif shape == 'square':
    inside = (np.abs(dy) <= 0.85) & (np.abs(dx) <= 0.85)
  elif shape == 'triangle':
    inside = (dy <= 0.8) & (dy >= -1.0 + 2.0 * np.abs(dx))
  else:  # diamond
    inside = np.abs(dy) + np.abs(dx) <= 1.0

  period = max(2, s // 8)
  iy, ix = yy.astype(np.int32), xx.astype(np.int32)
  if pattern == 'plain':
    primary = np.ones_like(inside)
  elif pattern == 'striped':
    primary = (iy // period) % 2 == 0
  elif pattern == 'dotted':
    primary = ((iy % period) != 0) | ((ix % period) != 0)
  else:  # checked
    primary = ((iy // period) + (ix // period)) % 2 == 0
  other = 0 if colour.min() > 200 else 255
  second = ((colour.astype(np.int16) + other) // 2).astype(np.uint8)
  img[inside & primary] = colour
  img[inside & ~primary] = second
  return img
