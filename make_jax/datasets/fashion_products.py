"""TFDS builder `fashion_products`: the real Myntra catalogue with mocked query clicks.

Source: `fashion-product-images-small.zip` in the TFDS manual_dir (read in place with
zipfile, never extracted). Rules for brands, image defects and hidden colours are in
`make_jax.datasets.fashion`, those of the mocked queries in `fashion_queries`.

Splits (one feature dict for all):
  catalogue             every product of styles.csv once (query and intents '').
  train                 mocked (query, clicked product) pairs, denormalised.
  validation/test       per distinct query, one record for each product that satisfies
                        it (the query's target set, complete; queries with more than
                        `mock.max_targets` products stay in train). A query's split is
                        fixed by its word set: evaluation queries are never train
                        queries. Evaluation groups records by query and ranks the whole
                        catalogue split.

`info.metadata`: `num_queries` (distinct queries per split), `query_splits` (records,
the largest query's records and share per split), `brands` (count, top 20),
`domain_words` (sorted brands, categories and colours, for the segmenter), `defects`.

`log_p` = log(train clicks of the product / train pairs); validation, test and
catalogue records carry the product's value; never-clicked products log(0.5 / train
pairs). Images are stored as 80x60 (H x W) RGB JPEG, the native size.

Defects are handled and counted, in the build log and in `info.metadata['defects']`:
missing images (black image, image_missing=True), undecodable images (same), greyscale
and other-mode images (converted to RGB), odd sizes (fitted into 60x80, proportions kept,
padded white), malformed
styles.csv rows (repaired or skipped), empty attribute cells.

Configs: `default` (no hidden colours) and `hide_colour` (the colour phrase removed
from 30% of the titles that contain it, so only the image tells), or a custom
`FashionProductsConfig(hide_colour_share=..., mock=fashion_queries.MockSpec(num_pairs=...))`.
"""

import dataclasses
import zipfile
from collections import Counter
from collections.abc import Sequence

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from make_jax.datasets import clicks, fashion, fashion_queries, features

ARCHIVE = 'fashion-product-images-small.zip'
ATTRIBUTE_FEATURES = fashion.ATTRIBUTES


@dataclasses.dataclass(kw_only=True)
class FashionProductsConfig(tfds.core.BuilderConfig):
  """A builder config: hidden-colour share and the click-mocking spec."""

  hide_colour_share: float = 0.0  # Share of colour-bearing titles whose colour is removed.
  hide_seed: int = 0  # Seeds which titles lose their colour.
  mock: fashion_queries.MockSpec = dataclasses.field(default_factory=fashion_queries.MockSpec)


class FashionProducts(tfds.core.GeneratorBasedBuilder):
  """Myntra fashion catalogue (44k products) with mocked, Zipf-skewed query clicks."""

  VERSION = tfds.core.Version('2.0.0')
  RELEASE_NOTES = {
    '1.0.0': 'First release.',
    '2.0.0': 'Brands compared without case and checked against colours; no repeated query '
    'words; validation/test hold every product that satisfies each distinct query; odd '
    'image sizes padded, not stretched.',
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  Place `{ARCHIVE}` (Kaggle "Fashion Product Images (Small)", layout
  myntradataset/styles.csv + myntradataset/images/<id>.jpg) in the manual_dir.
  """
  BUILDER_CONFIGS = [
    FashionProductsConfig(name='default', description='Titles as published.'),
    FashionProductsConfig(
      name='hide_colour',
      description='Colour removed from 30% of the titles that name it.',
      hide_colour_share=0.3,
    ),
  ]
  DEFAULT_CONFIG_NAME = 'default'

  def __init__(self, *, file_format: str | None = 'array_record', **kwargs):
    # array_record: random access, which the input pipeline's index sampler needs.
    super().__init__(file_format=file_format, **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      features=features.pair_features(
        intent_features=fashion_queries.INTENT_FEATURES,
        attribute_features=ATTRIBUTE_FEATURES,
        image=tfds.features.Image(
          shape=(fashion.IMAGE_HEIGHT, fashion.IMAGE_WIDTH, 3), encoding_format='jpeg'
        ),
        extra={'year': tfds.features.Scalar(np.int32)},
      ),
      metadata=tfds.core.MetadataDict(),
      homepage='https://www.kaggle.com/datasets/paramaggarwal/fashion-product-images-small',
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    path = dl_manager.manual_dir / ARCHIVE
    if not path.exists():
      raise FileNotFoundError(f'{path} not found. {self.MANUAL_DOWNLOAD_INSTRUCTIONS}')
    config = self.builder_config
    if not 0.0 <= config.hide_colour_share <= 1.0:
      raise ValueError(f'hide_colour_share must be in [0, 1], got {config.hide_colour_share}')
    with zipfile.ZipFile(path) as zf:
      products, defects = fashion.read_styles(zf.read(fashion.STYLES_PATH))
      for product in products:
        jpeg, missing, found = fashion.load_image(zf, product['id'])
        product['image'], product['image_missing'] = jpeg, missing
        defects.update(found)
    brands, brand_counts = fashion.brand_of_titles(
      [p['title'] for p in products], [p['baseColour'] for p in products]
    )
    for product, brand in zip(products, brands, strict=True):
      product['brand'] = brand

    # Hide the colour in exactly round(share * eligible) titles that name it.
    eligible = [i for i, p in enumerate(products) if fashion.has_words(p['title'], p['baseColour'])]
    rng = np.random.default_rng([config.hide_seed, 43])
    hidden = rng.permutation(len(eligible))[: round(config.hide_colour_share * len(eligible))]
    for k in hidden:
      p = products[eligible[k]]
      p['title'] = fashion.hide_colour(p['title'], p['baseColour'])

    records, log_p, query_stats = fashion_queries.mock_queries(products, config.mock)
    for product, lp in zip(products, log_p, strict=True):
      product['log_p'] = lp
    defects = {
      k: int(defects[k])
      for k in (
        'rows',
        'missing_image',
        'undecodable_image',
        'greyscale_image',
        'other_mode_image',
        'odd_size_image',
        'malformed_rows_fixed',
        'malformed_rows_skipped',
        'empty_cells',
      )
    }
    train_ids = [r['index'] for r in records['train']]
    brand_products = Counter(b for b in brands if b)
    stats = {
      'defects': defects,
      'num_products': len(products),
      'pairs': {s: len(records[s]) for s in clicks.SPLITS},
      'num_queries': {s: query_stats['queries'][s]['queries'] for s in clicks.SPLITS},
      'query_splits': query_stats,
      'brands': {
        'count': len(brand_products),
        'products_without_brand': len(brands) - sum(brand_products.values()),
        'top': brand_products.most_common(20),
        **brand_counts,
      },
      'domain_words': domain_words(products),
      'colour_hide_eligible_titles': len(eligible),
      'colour_hidden_titles': len(hidden),
      'never_clicked_products': int(np.sum(np.bincount(train_ids, minlength=len(products)) == 0)),
      'hide_colour_share': config.hide_colour_share,
      'mock': dataclasses.asdict(config.mock),
      'intent_features': fashion_queries.INTENT_FEATURES,
      'attribute_features': list(ATTRIBUTE_FEATURES),
      'log_p_rule': 'log(train clicks / train pairs); never clicked: log(0.5 / train pairs)',
    }
    for name, count in defects.items():
      logging.info('fashion_products defects: %s = %d', name, count)
    logging.info(
      'fashion_products/%s: %s',
      config.name,
      {k: v for k, v in stats.items() if k not in ('defects', 'domain_words')},
    )
    self.info.metadata.update(stats)
    return {
      'catalogue': self._generate_examples(products, None),
      **{s: self._generate_examples(products, records[s]) for s in clicks.SPLITS},
    }

  def _generate_examples(self, products, records):
    if records is None:
      empty = {'query': ''} | {k: '' for k in fashion_queries.INTENT_FEATURES}
      for p in products:
        yield p['id'], empty | _product_features(p)
      return
    for j, r in enumerate(records):
      ex = {k: v for k, v in r.items() if k != 'index'}
      yield j, ex | _product_features(products[r['index']])


def domain_words(products: Sequence[dict[str, object]]) -> list[str]:
  """Sorted raw values a segmenter should keep whole: brands, categories, colours."""
  fields = ('brand', 'masterCategory', 'subCategory', 'articleType', 'baseColour')
  return sorted({str(p[f]) for p in products for f in fields} - fashion.MISSING)


def _product_features(p: dict[str, object]) -> dict[str, object]:
  return {
    'product_id': p['id'],
    'log_p': p['log_p'],
    'title': p['title'],
    'image': p['image'],
    'image_missing': p['image_missing'],
    'year': p['year'],
    **{f: p[f] for f in ATTRIBUTE_FEATURES},
  }
