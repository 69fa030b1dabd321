r"""Base configuration: text encoders of the shape of all-MiniLM-L6-v2, a small ResNet.

Run:
  python -m tools.train --config=configs/base.py --workdir=/tmp/make_base

Every other config imports this one and overrides a few fields, so this file is the
reference for what each field means.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the base config. `arg` is unused (kept for `config_flags` call syntax)."""
  del arg
  c = ml_collections.ConfigDict()
  c.seed = 0  # Seeds parameter init, masking and dropout (data shuffling has its own seed).
  # Layout of the training loop (make_jax/train/layouts.py): 'single' (jax.jit on one
  # device), 'pmap' (jax.pmap over the local devices), 'pjit' (jax.jit over the `mesh`).
  c.parallelism = 'single'
  # 'pjit' placement of params and optimiser state (make_jax/train/state.py): 'replicated',
  # 'fsdp' (embed dim over `data`), 'tensor' (vocab/mlp/heads over `model`), 'fsdp_tensor'.
  c.param_sharding = 'replicated'

  # --- Data (SPEC section 1) -------------------------------------------------------------
  c.data = ml_collections.ConfigDict()
  c.data.name = 'synthetic_products'  # TFDS builder name: synthetic_products | fashion_products.
  c.data.builder_config = (
    'en'  # Synthetic: en, zh, en_small, zh_small, en_n<count>; fashion: default, hide_colour.
  )
  # Where the records come from: 'tfds' (a TFDS dataset, built on first use) or 'memory'
  # (synthetic_products generated in memory, without TensorFlow: make_jax/datasets/in_memory.py;
  # same records, another order).
  c.data.source = 'tfds'
  c.data.data_dir = ''  # TFDS data_dir; '' means TFDS's default (~/tensorflow_datasets).
  c.data.manual_dir = '../shared/data'  # Where fashion_products finds its zip archive.
  c.data.train_split = 'train'  # Split of (query, product) click pairs to train on.
  c.data.global_batch_size = 256  # Examples per step over all hosts and devices.
  c.data.shuffle_seed = 0  # Seed of the per-epoch shuffle (independent of `seed`).
  c.data.num_epochs = None  # None: repeat forever; the trainer stops at num_steps.
  c.data.image_size = 64  # Images are resized to (image_size, image_size, 3) uint8.
  c.data.worker_count = 0  # Input featurising threads (0: in the calling thread).
  # Sequence packing (make_jax/input/packing.py): each batch's queries and titles share rows
  # of their field's length, a token attending to its own text only; the same outputs for
  # fewer tokens. One device (parallelism='single') only. The row count is rounded up to a
  # multiple of pack_row_multiple, so the step compiles for a few shapes.
  c.data.pack_text = False
  c.data.pack_row_multiple = 8
  # Readers the global batch is split into (0: one per process). Fixed, it fixes the data
  # order whatever the process count (a 1-host run then equals a 2-host one).
  c.data.input_shards = 0

  # --- Text preprocessing (SPEC section 2) -----------------------------------------------
  c.text = ml_collections.ConfigDict()
  c.text.vocab_path = ''  # A BERT vocab.txt; '' means learn one from the training corpus.
  c.text.vocab_size = 30522  # Size of a learned vocabulary (all-MiniLM-L6-v2's size).
  c.text.query_len = 16  # Query tokens incl. [CLS]/[SEP]; longer queries are truncated.
  c.text.title_len = 48  # Title tokens incl. [CLS]/[SEP].
  c.text.sort_words = True  # Sort segmented words lexicographically (SPEC 2.3).
  c.text.strip_accents = False  # Strip accents before WordPiece; True for BERT uncased vocabs.
  # Encode punctuation between words (one piece per mark, as BERT's tokenizer does) for a
  # pretrained checkpoint; words, keywords and qids never include it.
  c.text.keep_punctuation = False

  # --- Model (SPEC section 3) ------------------------------------------------------------
  c.model = ml_collections.ConfigDict()
  c.model.vocab_size = 30522  # Word-embedding rows; must cover the tokenizer's vocabulary.
  c.model.hidden_size = 384  # Transformer width of every encoder.
  c.model.num_layers = 6  # Transformer layers per encoder (query, title, image).
  c.model.num_heads = 12  # Attention heads.
  c.model.mlp_dim = 1536  # Feed-forward width.
  c.model.max_position = 512  # Rows of the position-embedding table (BERT: 512).
  c.model.type_vocab_size = 2  # Token-type rows (BERT checkpoints carry 2).
  c.model.dropout_rate = 0.1  # Hidden and attention dropout.
  c.model.layer_norm_eps = 1e-12  # BERT's LayerNorm epsilon.
  c.model.init_std = 0.02  # Std of the normal weight/embedding init (BERT's; ~1/sqrt(hidden)).
  c.model.dtype = 'float32'  # Compute dtype: float32 on CPU, bfloat16 on accelerators.
  c.model.param_dtype = 'float32'  # Parameters are kept in float32.
  c.model.embed_dim = 256  # d: dimension of the L2-normalised query/product embeddings.
  c.model.resnet_depth = 18  # Image backbone: 18, 50 or 101.
  c.model.resnet_width = 32  # Channels of the first ResNet stage (64 in the standard nets).
  c.model.resnet_small_stem = True  # 3x3/1 stem, no max-pool (stride 8, not 32): small images.
  # The convolutions' kernel gradient: 'per_tap' (one matmul per kernel tap, 3.5x faster on
  # CPU: make_jax/models/conv.py), 'xla' (XLA's own; cuDNN on GPU), 'auto': per_tap on CPU.
  c.model.conv_kernel_gradient = 'auto'
  c.model.image_grid = 4  # Regions per side: the feature map is pooled to 4x4 = 16 regions.
  c.model.image_num_layers = 6  # Transformer layers of the image encoder.
  c.model.modal_adaptation = True  # MA on; off: title and image averaged with equal weights.
  c.model.fusion_layers = 1  # MA fusion layers over the concatenated title+image sequence.
  # QPM/QPC embeddings from a second pass over the unmasked query, title and regions (the
  # ResNet runs once); False: one pass, embeddings from the MLM/MPM-masked inputs (cheaper,
  # but a short query whose only keyword is masked cannot be matched).
  c.model.retrieval_from_unmasked = True
  # Product tower reads the image (MAKE). False: the text-only two-tower, the product is the
  # projected title [CLS] alone (no image encoder, fusion or MA; weights (1, 0)); the image
  # losses (loss.weights mpm, mpm_r) must then be 0.
  c.model.product_image = True
  # The pretrained start (SPEC 8): at step 0 a model imported from a sentence-embedding
  # checkpoint ranks products as the checkpoint does on its own (configs/finetune.py).
  # Token outputs -> one vector: 'cls' (the [CLS] output) or 'mean' (the mean of the real
  # tokens, as all-MiniLM-L6-v2 was trained); --init_from a sentence-transformers
  # directory sets it from the checkpoint's 1_Pooling/config.json.
  c.model.pooling = 'cls'
  # 'normal' (random projections) or 'identity': the query/title projections start as the
  # identity (needs embed_dim == hidden_size) and the image projection at zero.
  c.model.projection_init = 'normal'
  # True: the projected title and image vectors are the MA fusion layers' outputs. False:
  # the fusion only feeds the gate, and the product embedding mixes the encoders' own
  # pooled vectors (a pretrained title tower then reaches the embedding unchanged).
  c.model.fusion_feeds_embedding = True
  # a_image of every product at step 0 (gate kernel 0, bias (0, logit w)), learned from
  # there; -1: a randomly initialised gate.
  c.model.initial_image_weight = -1.0
  # True (needs loss.weights.qpm_image > 0): the product embedding's image part is the image
  # matching head's vector times a learned scale that starts at 0, instead of a projection
  # of its own.
  c.model.image_from_match_head = False

  # --- Masking for MLM / MPM and Keyword Enhancement (SPEC sections 3, 4) ---------------
  c.masking = ml_collections.ConfigDict()
  c.masking.mlm_prob = 0.15  # Share of (non-keyword) tokens chosen for MLM prediction.
  c.masking.keyword_enhancement = True  # KE on: keywords are masked with keyword_prob.
  c.masking.keyword_prob = 0.5  # Chance that a keyword token is chosen (KE on).
  c.masking.mask_token_prob = 0.8  # Of chosen tokens: replaced by [MASK] (BERT's 80/10/10).
  c.masking.random_token_prob = 0.1  # Of chosen tokens: replaced by a random token.
  c.masking.mpm_prob = 0.15  # Share of the 16 image regions masked for MPM / MPM_R.

  # --- Losses (SPEC sections 4, 5) -------------------------------------------------------
  c.loss = ml_collections.ConfigDict()
  c.loss.weights = ml_collections.ConfigDict(
    dict(mlm=1.0, mpm=0.0, mpm_r=1.0, qpm=1.0, qpc=1.0, qpm_image=0.0)
  )  # Weighted sum of the tasks; 0 switches a task off (ablations). qpm_image: QPM of the
  # queries against the image tower alone (its own head), training it by itself.
  c.loss.qpm_temperature = 0.05  # Initial QPM temperature: s = (u.v)/T - log p.
  c.loss.qpm_learn_temperature = True  # Train the QPM temperature (kept positive).
  c.loss.logp_correction = True  # Subtract log p(v) from every score (eq. 3).
  c.loss.w_mbns = 0.25  # w1: weight of memory-bank negatives (eq. 3).
  c.loss.w_batch = 1.0  # w2: weight of in-batch / cross-device negatives (eq. 3).
  c.loss.cdns_start_fraction = 0.5  # CDNS switches on after this share of num_steps.
  c.loss.bank_batches = 8  # Q: global batches kept in the MBNS queue (0: no MBNS).
  # Queue entries count as negatives after this share of num_steps. 0 follows the paper,
  # which starts from a pretrained encoder; from a random start a queue counted at once
  # collapses the product embeddings (docs/results.md), so the results rows use 0.5.
  c.loss.bank_start_fraction = 0.0
  c.loss.mpm_r_tau = 0.1  # Initial MPM_R temperature tau (trainable, kept positive).
  c.loss.mpm_r_cross_device = True  # MPM_R denominator spans every device's images.
  c.loss.mpm_stop_gradient_target = True  # Region targets v are constants for MPM/MPM_R.
  c.loss.qpc_scale = 30.0  # AM-Softmax scale of QPC.
  c.loss.qpc_margin = 0.2  # AM-Softmax additive margin of QPC's positive.

  # --- Optimiser and schedule (SPEC section 6) -------------------------------------------
  c.optim = ml_collections.ConfigDict()
  c.optim.learning_rate = 1e-4  # Peak learning rate.
  c.optim.warmup_fraction = 0.2  # Linear warm-up over this share of steps, then linear decay.
  c.optim.b1 = 0.9  # AdamW beta1.
  c.optim.b2 = 0.98  # AdamW beta2.
  c.optim.weight_decay = 0.01  # AdamW decoupled weight decay.
  c.optim.grad_clip_norm = 1.0  # Global gradient-norm clip (0: none).
  # A pretrained start (SPEC 8): > 0 gives the top-level modules `pretrained_modules` (the
  # imported text encoders) an AdamW group of their own with this peak rate and warm-up
  # share; everything else learns at `learning_rate`. 0: one group.
  c.optim.pretrained_learning_rate = 0.0
  c.optim.pretrained_warmup_fraction = 0.1
  c.optim.pretrained_modules = ('query_encoder', 'title_encoder')

  # --- Training loop ---------------------------------------------------------------------
  c.train = ml_collections.ConfigDict()
  c.train.num_steps = 10_000  # Total optimiser steps (schedules and the CDNS switch use it).
  c.train.log_every = 50  # Steps between metric logs.
  c.train.checkpoint_every = 1000  # Steps between checkpoints.
  c.train.keep_checkpoints = 3  # Checkpoints kept.
  c.train.eval_every = 1000  # Steps between held-out Recall@K evaluations (0: none).
  c.train.eval_split = 'validation'  # Split whose queries are evaluated against the catalogue.
  c.train.eval_max_queries = 1000  # Distinct queries evaluated (the smallest qids).

  # --- Sharding --------------------------------------------------------------------------
  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1  # Devices on the data axis (-1: all).
  c.mesh.model = 1  # Devices on the model axis (parameter sharding).
  return c
