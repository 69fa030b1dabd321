r"""Builds a dataset (TFDS) and prints a few examples and its metadata (defect counts).

  python -m tools.build_data --dataset=synthetic_products --builder_config=en_small \
      --data_dir=/tmp/tfds
  python -m tools.build_data --dataset=fashion_products --manual_dir=../shared/data \
      --data_dir=/tmp/tfds

`--builder_config` also takes synthetic sizes such as `en_n1000000`. This is the
equivalent of `tfds build data/<dataset>` (the shims there hold the same builders).
"""

import json

from absl import app, flags

from make_jax.datasets import loading, preview

_DATASET = flags.DEFINE_string(
  'dataset', 'synthetic_products', 'synthetic_products | fashion_products.'
)
_CONFIG = flags.DEFINE_string('builder_config', '', "Builder config ('' = the default).")
_DATA_DIR = flags.DEFINE_string('data_dir', '', "TFDS data_dir ('' = TFDS's default).")
_MANUAL_DIR = flags.DEFINE_string('manual_dir', '../shared/data', 'Folder holding the fashion zip.')
_SPLIT = flags.DEFINE_string('split', 'train', 'Split to show examples of.')
_NUM = flags.DEFINE_integer('num_examples', 3, 'Examples to print.')


def main(argv):
  del argv
  builder = loading.prepare(_DATASET.value, _CONFIG.value, _DATA_DIR.value, _MANUAL_DIR.value)
  print(f'Built {builder.info.full_name} in {builder.data_dir}')
  print('splits:', {name: s.num_examples for name, s in builder.info.splits.items()})
  print('metadata:', json.dumps(dict(builder.info.metadata), indent=2, ensure_ascii=False))
  for line in preview.describe_examples(builder, _SPLIT.value, _NUM.value):
    print(line)


if __name__ == '__main__':
  app.run(main)
