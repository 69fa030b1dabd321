"""Mocked queries of the fashion catalogue: training clicks and evaluation target sets.

The catalogue has no query log. Like the paper's "mocked query" for products without
logs, a query is a template over a product's attributes (gender, colour, article type,
brand, usage, season), lower-cased:

* A template applies to a product when every field it names has a value ('' and 'NA'
  say nothing) and no word repeats (`casual shoes casual`: usage Casual with article
  type Casual Shoes is never made).
* A query is known by its key, the sorted set of its words (`clicks.query_key`). The
  products that satisfy a key are all products some template turns into that key (so
  `sports shoes` is satisfied by the article type Sports Shoes, whatever else names it).
* Train: (query, clicked product) pairs. The clicked product is drawn from a Zipf-skewed
  popularity, the template uniformly among those that apply, the words in random
  order; a click whose key is an evaluation query is dropped and drawn again, until
  `num_pairs` train pairs.
* Validation / test: every key of the catalogue that `clicks.evaluation_split` puts there,
  with one record per product that satisfies it (its target set, complete: keys with
  more than `max_targets` products stay in train). One word order per query. These
  splits depend on the catalogue and the shares only, not on the clicks.

Records carry the query intents (INTENT_FEATURES): the value of each attribute the
query names for that record's product, '' for the others.
"""

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

from make_jax.datasets import clicks
from make_jax.datasets.fashion import MISSING

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
# Query intent feature -> product attribute it names ('' in a record when not named).
INTENT_FEATURES = {
  'query_brand': 'brand',
  'query_category': 'articleType',
  'query_colour': 'baseColour',
  'query_gender': 'gender',
  'query_usage': 'usage',
  'query_season': 'season',
}

Template = tuple[str, ...]
FIELDS = tuple(sorted({f for t in QUERY_TEMPLATES for f in t}))


@dataclasses.dataclass(frozen=True)
class MockSpec:
  """How the queries are mocked."""

  num_pairs: int = 60_000  # Train (query, clicked product) pairs.
  validation_share: float = 0.06  # Share of query keys in validation.
  test_share: float = 0.06  # Share of query keys in test.
  max_targets: int = 100  # Broader queries (more satisfying products) stay in train.
  zipf_exponent: float = 1.0  # Popularity skew over the catalogue.
  seed: int = 0


def templates_of(product: dict[str, object]) -> list[tuple[Template, list[str], str]]:
  """(template, words, key) of every template that applies to `product`, in template
  order."""
  field_words = {}
  for field in FIELDS:
    value = str(product[field])
    field_words[field] = None if value in MISSING else value.lower().split()
  out = []
  for fields in QUERY_TEMPLATES:
    words = []
    for f in fields:
      if field_words[f] is None:
        break
      words += field_words[f]
    else:
      unique = set(words)
      if len(unique) == len(words):
        out.append((fields, words, ' '.join(sorted(unique))))
  return out


def query_table(
  products: Sequence[dict[str, object]],
) -> tuple[dict[str, dict[int, Template]], list[list[tuple[Template, list[str], str]]]]:
  """(table, usable): every query key of the catalogue -> {product index: the first
  template that makes the key from that product}, products ascending; and
  `templates_of` of every product."""
  table = defaultdict(dict)
  usable = []
  cache = {}
  for i, product in enumerate(products):
    attributes = tuple(product[f] for f in FIELDS)
    if attributes not in cache:
      cache[attributes] = templates_of(product)
    usable.append(cache[attributes])
    for fields, _, key in usable[-1]:
      table[key].setdefault(i, fields)
  return dict(table), usable


def _record(product: dict[str, object], fields: Template, query: str, index: int) -> dict:
  intents = {k: (str(product[f]) if f in fields else '') for k, f in INTENT_FEATURES.items()}
  return {'query': query, 'index': index} | intents


def mock_queries(
  products: Sequence[dict[str, object]], spec: MockSpec
) -> tuple[dict[str, list[dict]], np.ndarray, dict[str, object]]:
  """The records of the three query splits (see the module docstring).

  Args:
    products: product dicts with 'brand' and the attribute columns.
    spec: sizes, shares, cap, skew and seed.

  Returns:
    (records, log_p, stats): records[split] is a list of dicts with 'query', 'index'
    (into `products`) and the INTENT_FEATURES keys; log_p float32 [len(products)] per
    `clicks.train_log_p`; stats of the query splits for the builder's metadata.
  """
  if spec.num_pairs < 1:
    raise ValueError(f'num_pairs must be >= 1, got {spec.num_pairs}')
  salt = str(spec.seed)
  table, usable = query_table(products)
  split_of = {
    key: clicks.evaluation_split(
      key.split(),
      len(targets),
      spec.validation_share,
      spec.test_share,
      spec.max_targets,
      salt,
    )
    for key, targets in table.items()
  }
  records = {s: [] for s in clicks.SPLITS}
  rng = np.random.default_rng([spec.seed, 53])
  for key in sorted(table):
    split = split_of[key]
    if split == 'train':
      continue
    words = key.split()
    query = ' '.join(words[k] for k in rng.permutation(len(words)))
    for i, fields in table[key].items():
      records[split].append(_record(products[i], fields, query, i))

  rng = np.random.default_rng([spec.seed, 41])
  n = len(products)
  probs = clicks.zipf_probabilities(n, spec.zipf_exponent, rng)
  dropped = Counter()
  train = records['train']
  while len(train) < spec.num_pairs:
    for i in rng.choice(n, size=spec.num_pairs - len(train), p=probs).tolist():
      if not usable[i]:
        dropped['no_template'] += 1  # Not even an article type: no query names it.
        continue
      fields, words, key = usable[i][rng.integers(len(usable[i]))]
      if split_of[key] != 'train':
        dropped['evaluation_query'] += 1
        continue
      query = ' '.join(words[k] for k in rng.permutation(len(words)))
      train.append(_record(products[i], fields, query, i))
    if dropped['no_template'] > 10 * spec.num_pairs + 1000:
      raise ValueError('The catalogue has almost no product a query template applies to')
  log_p = clicks.train_log_p(np.asarray([r['index'] for r in train], np.int64), n)
  stats = {
    'queries': {s: clicks.query_stats([r['query'] for r in records[s]]) for s in clicks.SPLITS},
    'catalogue_queries': len(table),
    'broad_queries_in_train': sum(len(t) > spec.max_targets for t in table.values()),
    'dropped_clicks': dict(dropped),
  }
  return records, log_p, stats
