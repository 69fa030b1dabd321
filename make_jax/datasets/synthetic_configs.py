"""The synthetic dataset's named configs and metadata, shared by its TFDS builder
(`synthetic_products`) and its in-memory twin (`in_memory`); no TensorFlow."""

import dataclasses
import re
from typing import Any

import numpy as np

from make_jax.datasets import clicks, synthetic

# Which product feature a query intent is judged against (P_rel / P_cate, SPEC 9).
INTENT_FEATURES = {f'query_{f}': f for f in synthetic.INTENT_FIELDS}
# Product attributes whose values count for Keyword Enhancement (SPEC 3).
ATTRIBUTE_FEATURES = ('brand', 'category', 'colour', 'shape', 'pattern')

# The named configs: (language, products, train pairs).
PREDEFINED = {
  'en': ('en', 20_000, 200_000),
  'zh': ('zh', 20_000, 200_000),
  'en_small': ('en', 1_000, 5_000),
  'zh_small': ('zh', 1_000, 5_000),
}


def spec_for_name(name: str) -> synthetic.SyntheticSpec:
  """The spec of a config name: a predefined one, or `<en|zh>_n<num_products>` (pairs = 10x).

  Raises:
    ValueError: the name is neither predefined nor of the `<lang>_n<count>` form.
  """
  if name in PREDEFINED:
    language, products, pairs = PREDEFINED[name]
    return synthetic.SyntheticSpec(language=language, num_products=products, num_pairs=pairs)
  m = re.fullmatch(r'(en|zh)_n(\d+)', name)
  if not m:
    raise ValueError(
      f'Unknown synthetic_products config {name!r}: use one of {", ".join(PREDEFINED)} or '
      '<en|zh>_n<count>'
    )
  n = int(m.group(2))
  return synthetic.SyntheticSpec(language=m.group(1), num_products=n, num_pairs=10 * n)


def metadata(cat: synthetic.Generated) -> dict[str, Any]:
  """The dataset's `info.metadata` (see synthetic_products): counts, query statistics,
  domain words, which features are intents and attributes."""
  spec = cat.spec
  counts = {s: len(cat.pairs[s]['query']) for s in clicks.SPLITS}
  query_stats = {s: clicks.query_stats(cat.pairs[s]['query']) for s in clicks.SPLITS}
  clicked = np.bincount(cat.pairs['train']['product_id'], minlength=spec.num_products) > 0
  return {
    'spec': dataclasses.asdict(spec),
    'num_products': spec.num_products,
    'pairs': counts,
    'num_queries': {s: query_stats[s]['queries'] for s in clicks.SPLITS},
    'query_splits': query_stats,
    'domain_words': synthetic.domain_words(spec.language),
    'colour_hidden_titles': int(cat.colour_hidden.sum()),
    'never_clicked_products': int((~clicked).sum()),
    'missing_images': 0,
    'intent_features': INTENT_FEATURES,
    'attribute_features': list(ATTRIBUTE_FEATURES),
    'log_p_rule': 'log(train clicks / train pairs); never clicked: log(0.5 / train pairs)',
  }
