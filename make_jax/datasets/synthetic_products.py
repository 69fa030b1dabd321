"""TFDS builder `synthetic_products`: the generated catalogue and click log of `synthetic`.

Splits (all with the same features, TFDS keeps one feature dict per dataset):
  catalogue             every product once; `query` and the `query_*` intents are ''.
  train                 (query, clicked product) pairs, denormalised: the query, its
                        intents and the clicked product's title, image and attributes.
  validation/test       per distinct query, one record for each product that satisfies
                        it (the target set; see `synthetic`), same layout.

`info.metadata`: `num_queries` (distinct queries per split), `query_splits` (records,
the largest query's records and share per split), `domain_words` (the attribute
vocabulary in the config's language, sorted, for the segmenter).

`log_p` is the product's log(train clicks / train pairs); validation, test and catalogue
records carry the same per-product value and never-clicked products log(0.5 / train
pairs) (see `clicks`). Nothing is downloaded: `download_and_prepare` generates the data
from the config's `SyntheticSpec`, so two builds with the same config are identical.

Configs: `en`, `zh` (20k products, 200k pairs), `en_small`, `zh_small` (1k products, 5k
pairs, for tests), or any size through `config_for_name('en_n1000000')` /
`SyntheticProductsConfig(spec=SyntheticSpec(...))`.
"""

import dataclasses

import tensorflow_datasets as tfds
from absl import logging

from make_jax.datasets import clicks, features, synthetic, synthetic_configs

INTENT_FEATURES = synthetic_configs.INTENT_FEATURES
ATTRIBUTE_FEATURES = synthetic_configs.ATTRIBUTE_FEATURES


@dataclasses.dataclass(kw_only=True)
class SyntheticProductsConfig(tfds.core.BuilderConfig):
  """A builder config: a name plus the generation spec."""

  spec: synthetic.SyntheticSpec = dataclasses.field(default_factory=synthetic.SyntheticSpec)


def _config(name: str) -> SyntheticProductsConfig:
  spec = synthetic_configs.spec_for_name(name)
  return SyntheticProductsConfig(
    name=name,
    description=f'{spec.language}: {spec.num_products} products, {spec.num_pairs} click pairs.',
    spec=spec,
  )


def config_for_name(name: str) -> SyntheticProductsConfig:
  """A config by name: a predefined one, or `<en|zh>_n<num_products>` (pairs = 10x).

  Raises:
    ValueError: the name is neither predefined nor of the `<lang>_n<count>` form.
  """
  for config in SyntheticProducts.BUILDER_CONFIGS:
    if config.name == name:
      return config
  return _config(name)


class SyntheticProducts(tfds.core.GeneratorBasedBuilder):
  """Synthetic products with images, Zipf-skewed clicks and hidden-colour titles."""

  VERSION = tfds.core.Version('2.0.0')
  RELEASE_NOTES = {
    '1.0.0': 'First release.',
    '2.0.0': 'Validation/test hold every product that satisfies each distinct query; '
    'train holds num_pairs clicks.',
  }
  BUILDER_CONFIGS = [_config(name) for name in synthetic_configs.PREDEFINED]
  DEFAULT_CONFIG_NAME = 'en'

  def __init__(self, *, file_format: str | None = 'array_record', **kwargs):
    # array_record: random access, which the input pipeline's index sampler needs.
    super().__init__(file_format=file_format, **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    s = self.builder_config.spec.image_size
    return self.dataset_info_from_configs(
      features=features.pair_features(
        intent_features=[f'query_{f}' for f in synthetic.INTENT_FIELDS],
        attribute_features=ATTRIBUTE_FEATURES,
        image=tfds.features.Image(shape=(s, s, 3), encoding_format='png'),
      ),
      metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download.
    spec = self.builder_config.spec
    cat = synthetic.generate(spec)
    stats = synthetic_configs.metadata(cat)
    self.info.metadata.update(stats)
    logging.info(
      'synthetic_products/%s: %s',
      self.builder_config.name,
      {k: v for k, v in stats.items() if k != 'domain_words'},
    )
    return {s: self._generate_examples(cat, s) for s in ('catalogue', *clicks.SPLITS)}

  def _generate_examples(self, cat: synthetic.Generated, split: str):
    yield from cat.examples(split)
