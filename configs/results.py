r"""The results table's training scale: a small MAKE on fashion_products that 2 CPU cores train.

Every trained row of the results table (make_jax/evaluation/results.py) starts from this
config and changes only its row's fields, so the rows share data, model width and step
budget. The scale is chosen so that the whole table (two baselines, six trained rows,
each scored on two splits of the 44,446-product catalogue) finishes in under 90 minutes
on 2 CPU cores; docs/results.md gives the measured times.

  python -m tools.results --rows=all --train --config=configs/results.py --out=/tmp/results

Against configs/base.py: 2-layer 128-wide encoders with a learned 8k WordPiece
vocabulary (the fashion titles and mocked queries use a few thousand words), 32x32 images
through a narrow ResNet-18 and one image-transformer layer, a global batch of 64 split
over 8 (fake) devices with `pmap`, so that CDNS has devices to gather negatives from.
"""

import ml_collections

from configs import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the results-table config."""
  c = base.get_config(arg)
  c.parallelism = 'pmap'
  c.data.name = 'fashion_products'
  c.data.builder_config = 'default'
  c.data.global_batch_size = 64
  c.data.image_size = 32
  c.text.vocab_size = 8192
  c.text.query_len = 12
  c.text.title_len = 24
  c.model.vocab_size = 8192
  c.model.hidden_size = 128
  c.model.num_layers = 2
  c.model.num_heads = 4
  c.model.mlp_dim = 512
  c.model.init_std = 0.088  # ~1/sqrt(128): BERT's 0.02 starts a narrow model collapsed.
  c.model.max_position = 64
  c.model.embed_dim = 64
  c.model.resnet_depth = 18
  c.model.resnet_width = 8
  c.model.image_num_layers = 1
  c.model.dropout_rate = 0.0
  c.optim.learning_rate = 1e-3
  c.optim.warmup_fraction = 0.1
  # 400 steps (0.43 epoch): a make row's step takes ~1.05 s on 2 quiet cores (8 fake devices,
  # 433 MFLOP/example at ~25% of the matmul probe), and six trained rows, the baselines and
  # the scoring must fit in 90 minutes. 1,500 steps (the first choice) come to ~26 min a row.
  c.train.num_steps = 400
  c.train.log_every = 50
  c.train.checkpoint_every = 200
  c.train.eval_every = 0  # The driver scores the newest checkpoint on the test splits.
  return c
