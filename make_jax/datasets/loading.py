"""Finding and preparing a dataset builder by (name, config) without the TFDS CLI.

Why: the CLI (`tools/build_data.py`), the input pipeline and the tests name a dataset
the way `cfg.data` does (`name`, `builder_config`, `data_dir`, `manual_dir`); this turns
that into a TFDS builder, including synthetic sizes that are not predefined configs
(`en_n1000000`).
"""

import os

import tensorflow_datasets as tfds

from make_jax.datasets import fashion_products, synthetic_products

BUILDERS = {
  'synthetic_products': synthetic_products.SyntheticProducts,
  'fashion_products': fashion_products.FashionProducts,
}


def get_builder(
  name: str,
  builder_config: str | tfds.core.BuilderConfig = '',
  data_dir: str | os.PathLike = '',
) -> tfds.core.DatasetBuilder:
  """The builder of dataset `name` with `builder_config` (a name or a config object).

  Raises:
    ValueError: unknown dataset or config name.
  """
  if name not in BUILDERS:
    raise ValueError(f'Unknown dataset {name!r}: use one of {sorted(BUILDERS)}')
  cls = BUILDERS[name]
  config = builder_config or cls.DEFAULT_CONFIG_NAME
  if isinstance(config, str):
    if name == 'synthetic_products':
      config = synthetic_products.config_for_name(config)
    elif config not in {c.name for c in cls.BUILDER_CONFIGS}:
      known = [c.name for c in cls.BUILDER_CONFIGS]
      raise ValueError(f'Unknown {name} config {config!r}: use one of {known}')
  return cls(config=config, data_dir=os.fspath(data_dir) or None)


def prepare(
  name: str,
  builder_config: str | tfds.core.BuilderConfig = '',
  data_dir: str | os.PathLike = '',
  manual_dir: str | os.PathLike = '',
) -> tfds.core.DatasetBuilder:
  """Builds the dataset if it is not built yet (no-op otherwise) and returns its builder."""
  builder = get_builder(name, builder_config, data_dir)
  download_config = tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir) or None)
  builder.download_and_prepare(download_config=download_config)
  return builder
