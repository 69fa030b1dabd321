r"""Tiny configuration for one CPU: 2-layer encoders, a narrow ResNet-18, small batches.

Run:
  python -m tools.train --config=configs/tiny.py --workdir=/tmp/make_tiny

Used by the quickstart and the tests; a training step runs in well under a second on CPU.
"""

import ml_collections

from configs import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the tiny config."""
  c = base.get_config(arg)
  c.data.builder_config = 'en_small'  # 1k products, 5k pairs: builds in seconds.
  c.data.global_batch_size = 16
  c.data.image_size = 32
  c.text.vocab_size = 2048
  c.text.query_len = 12
  c.text.title_len = 24
  c.model.vocab_size = 2048
  c.model.hidden_size = 64
  c.model.num_layers = 2
  c.model.num_heads = 4
  c.model.mlp_dim = 128
  c.model.init_std = 0.125  # 1/sqrt(64): at 0.02 a 64-wide model starts collapsed.
  c.model.max_position = 64
  c.model.embed_dim = 32
  c.model.resnet_depth = 18
  c.model.resnet_width = 8
  c.model.image_num_layers = 2
  c.model.dropout_rate = 0.0
  c.loss.bank_batches = 4
  c.optim.learning_rate = 1e-3  # A small model on a few hundred steps needs a larger step.
  c.train.num_steps = 300
  c.train.log_every = 10
  c.train.checkpoint_every = 100
  c.train.eval_every = 150
  return c
