r"""Fine-tuning MAKE from all-MiniLM-L6-v2 on fashion_products: the pretrained start (SPEC 8).

  python -m tools.train --config=configs/finetune.py --init_from=minilm --workdir=/tmp/ft

`--init_from=minilm` (or any HuggingFace BERT directory) imports the checkpoint into the
query and title encoders and takes its vocabulary, accent rule and pooling
(`bert_import.config_for_checkpoint`). The start loses nothing: the text projections are
the identity (embed_dim = hidden size), the image projection starts at zero and Modal
Adaptation at a_image = 0.05 with the fusion feeding only the gate, so at step 0 the query
and product embeddings are the checkpoint's own mean-pooled sentence embeddings
(tests/test_pretrained_start.py). Words keep their order and the punctuation between them is
encoded, as the checkpoint's own tokenizer does (the qid is still the hash of the sorted
words).

The recipe: two AdamW groups, the imported encoders at 2e-5 with a 10% warm-up, the new
parts (projections, gate, fusion, image tower, temperature) at 1e-3; QPM (the log-p
corrected softmax, temperature 0.05 learned) plus QPC; no MLM (all-MiniLM-L6-v2 ships no
MLM head, and predicting masked tokens pulls a sentence encoder away from its embedding);
no MPM (nothing image-side is pretrained to reconstruct). One pass per step: nothing is
masked, so the retrieval pass is the only pass.

Scale for 2 CPU cores: one device (`single`: the whole batch is every query's in-batch
negatives, which is what CDNS gives on many devices), batch 64, queries of 12 tokens and
titles of 24 (the fashion titles' 99th percentile in MiniLM's tokens is 17), packed
(`data.pack_text`: a batch's 64 queries share ~30 rows of 12, its titles ~29 rows of 24), 32 px
images through a narrow ResNet-18 and one image-transformer layer: 800 steps; on 2 shared
cores ~1.35 s a step for MAKE (~20 min a run) and ~0.8 s for the text-only two-tower
(~13 min), measured by `tools.results` (docs/results.md). For one accelerator:
`--config=configs/finetune.py:accelerator` (batch 512, bfloat16, 64 px images through a
ResNet-18 of width 32 and 6 image layers, 600 steps; see the estimate there).
"""

import ml_collections

from configs import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the fine-tuning config; arg 'accelerator' scales it for one GPU/TPU."""
  c = base.get_config()
  c.parallelism = 'single'
  c.data.name = 'fashion_products'
  c.data.builder_config = 'default'
  c.data.global_batch_size = 64
  c.data.image_size = 32
  c.data.pack_text = True  # Packed text rows: ~45% of the padded tokens, the same outputs.
  c.text.query_len = 12
  c.text.title_len = 24
  c.text.sort_words = False
  c.text.keep_punctuation = True
  # all-MiniLM-L6-v2's shape (configs/base.py's text encoders), embeddings of its width.
  c.model.embed_dim = 384
  c.model.pooling = 'mean'
  c.model.projection_init = 'identity'
  c.model.fusion_feeds_embedding = False
  c.model.initial_image_weight = 0.05
  c.model.resnet_depth = 18
  c.model.resnet_width = 8
  c.model.image_num_layers = 1
  c.model.retrieval_from_unmasked = False
  c.masking.mlm_prob = 0.0
  c.masking.keyword_enhancement = False
  c.masking.mpm_prob = 0.0
  c.loss.weights = ml_collections.ConfigDict(
    dict(mlm=0.0, mpm=0.0, mpm_r=0.0, qpm=1.0, qpc=1.0, qpm_image=0.0)
  )
  c.loss.cdns_start_fraction = 0.0
  c.loss.bank_batches = 0
  c.optim.learning_rate = 1e-3
  c.optim.warmup_fraction = 0.1
  c.optim.pretrained_learning_rate = 2e-5
  c.optim.pretrained_warmup_fraction = 0.1
  c.train.num_steps = 800
  c.train.log_every = 50
  c.train.checkpoint_every = 200
  c.train.eval_every = 0
  c.train.eval_split = 'validation'
  if arg == 'accelerator':
    c.model.dtype = 'bfloat16'
    c.data.global_batch_size = 512
    c.data.image_size = 64
    c.model.resnet_width = 32
    c.model.image_num_layers = 6
    # 600 steps of 512 = 307k examples, ~5 epochs of the 60k train pairs (the CPU scale
    # sees 51k, under one). 7.2 model GFLOP per example (2.998 at the CPU scale): at the
    # 604 examples/s per 16.45 GFLOP that the base step reached on one H200 (1.3% MFU,
    # issue 22's measurement) this is ~4 min of steps; not yet run on an accelerator.
    c.optim.pretrained_learning_rate = 5e-5  # Larger batch: a larger rate (sqrt scaling).
    c.train.num_steps = 600
    c.train.checkpoint_every = 200
  elif arg:
    raise ValueError(f'configs/finetune.py takes no argument or "accelerator"; got {arg!r}')
  return c
