r"""Paper-scale configuration (SPEC section 6): 12 layers, 768 hidden, 12 heads per encoder.

Run on an accelerator cluster:
  python -m tools.train --config=configs/paper.py --workdir=gs://bucket/make_paper

ResNet-101 image backbone, bfloat16 compute, AdamW(0.9, 0.98), lr 1e-4 warmed up over 20%
of the steps then linearly decayed to 0.
"""

import ml_collections

from configs import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the paper-scale config."""
  c = base.get_config(arg)
  c.data.global_batch_size = 4096
  c.data.image_size = 224
  c.text.vocab_size = 21128  # Size of the Chinese BERT vocabulary the paper adopts.
  c.text.title_len = 64
  c.model.vocab_size = 21128
  c.model.hidden_size = 768
  c.model.num_layers = 12
  c.model.num_heads = 12
  c.model.mlp_dim = 3072
  c.model.embed_dim = 256
  c.model.resnet_depth = 101
  c.model.resnet_width = 64
  c.model.resnet_small_stem = False  # Standard 7x7/2 stem: 224 px -> 7x7 final map.
  c.model.image_num_layers = 12
  c.model.dtype = 'bfloat16'
  c.loss.bank_batches = 16
  c.train.num_steps = 200_000
  return c
