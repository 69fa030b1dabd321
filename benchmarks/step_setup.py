"""The base training step as the benchmarks time it: one builder, so every benchmark times the same.

`build(config_name, batch_size)` gives the model, params, a random raw batch (contract 2:
random token ids, pixels, distinct product ids), the batch as the step masks it, a fresh
train state and the jitted pieces every benchmark times:

- `fwd(params, masked)`: the *training* forward (dropout on; masked pass plus retrieval
  pass, every output), not the cheaper inference forward;
- `fwd_bwd(params, masked, state)`: the loss of that forward and its gradient (no masking,
  no optimiser);
- `train(state, batch)`: the real step of make_jax/train/step.py (masking, both passes,
  every loss, gradient, AdamW, queue push).

It uses only names that have been stable since the train step landed (`build_model`,
`example_batch`, `masking.mask_batch_by_example`, `create_train_state`, `make_train_step`,
`make_optimizer`), so `benchmarks/baseline_worker.py` can run it against an older checkout.
"""

import dataclasses
import importlib
import types
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax.linen import meta

from make_jax.losses.total import compute_losses
from make_jax.models.make_model import build_model, example_batch
from make_jax.train import masking, optimizer
from make_jax.train import step as train_step


@dataclasses.dataclass
class StepSetup:
  """Everything needed to time the step and its parts (see the module docstring)."""

  config: ml_collections.ConfigDict
  model: Any
  params: Any
  batch: dict[str, jax.Array]
  masked: dict[str, jax.Array]
  state: Any
  tx: Any
  tokens: Any
  fwd: Callable[..., Any]
  fwd_bwd: Callable[..., Any]
  train: Callable[..., Any]


# Contract 2: what the input pipeline hands the train step (`featurize.BATCH_KEYS`). Spelled
# out here because benchmarks/baseline_worker.py runs this file against the package of an
# older commit, which may not have that constant.
RAW_KEYS = (
  'query_ids',
  'query_mask',
  'query_keyword',
  'title_ids',
  'title_mask',
  'title_keyword',
  'image',
  'image_missing',
  'product_id',
  'log_p',
)


def random_batch(config: ml_collections.ConfigDict, batch_size: int) -> dict[str, jax.Array]:
  """A raw batch (contract 2) of random ids and pixels; product ids distinct (no accidental hits)."""
  zeros = example_batch(config, batch_size)
  rs = np.random.RandomState(0)
  batch = {k: np.asarray(zeros[k]) for k in RAW_KEYS}
  vocab = config.model.vocab_size
  batch['query_ids'] = rs.randint(5, vocab, batch['query_ids'].shape).astype(np.int32)
  batch['title_ids'] = rs.randint(5, vocab, batch['title_ids'].shape).astype(np.int32)
  batch['query_keyword'] = (rs.rand(*batch['query_keyword'].shape) < 0.3).astype(np.int32)
  batch['title_keyword'] = (rs.rand(*batch['title_keyword'].shape) < 0.1).astype(np.int32)
  batch['image'] = rs.randint(0, 256, batch['image'].shape).astype(np.uint8)
  batch['product_id'] = np.arange(batch_size, dtype=np.int32)
  batch['log_p'] = np.log(rs.uniform(1e-4, 1e-2, batch_size)).astype(np.float32)
  return jax.tree.map(jnp.asarray, batch)


def special_tokens(vocab_size: int) -> types.SimpleNamespace:
  """Special-token ids as a learned vocabulary numbers them (its SPECIAL_TOKENS come first)."""
  return types.SimpleNamespace(pad_id=0, cls_id=2, sep_id=3, mask_id=4, vocab_size=vocab_size)


def build(config_name: str, batch_size: int, seed: int = 0) -> StepSetup:
  """Model, params, batches, state and jitted fwd / fwd_bwd / train of configs/<config_name>."""
  config = importlib.import_module(f'configs.{config_name}').get_config()
  config.data.global_batch_size = batch_size
  model = build_model(config)
  batch = random_batch(config, batch_size)
  tokens = special_tokens(config.model.vocab_size)
  num_regions = config.model.image_grid**2
  mask = jax.jit(
    lambda b, r: masking.mask_batch_by_example(
      b,
      r,
      config.masking,
      pad_id=tokens.pad_id,
      cls_id=tokens.cls_id,
      sep_id=tokens.sep_id,
      mask_id=tokens.mask_id,
      vocab_size=tokens.vocab_size,
      num_regions=num_regions,
    )
  )
  masked = mask(batch, jax.random.key(seed + 2))
  init = jax.jit(lambda r, b: model.init({'params': r}, b, train=False))
  params = meta.unbox(init(jax.random.key(seed), masked))['params']
  tx = optimizer.make_optimizer(config.optim, config.train.num_steps)
  state = train_step.create_train_state(model, params, tx, config, jax.random.key(seed + 1))
  dropout = {'dropout': jax.random.key(seed + 3)}

  def fwd(p, b):
    return model.apply({'params': p}, b, train=True, rngs=dropout)

  def fwd_bwd(p, b, s):
    def loss(p):
      share, _ = compute_losses(
        fwd(p, b), b, config.loss, step=s.step, num_steps=config.train.num_steps, bank=s.bank
      )
      return share

    return jax.value_and_grad(loss)(p)

  step = train_step.make_train_step(model, tx, config, tokens)
  return StepSetup(
    config=config,
    model=model,
    params=params,
    batch=batch,
    masked=masked,
    state=state,
    tx=tx,
    tokens=tokens,
    fwd=jax.jit(fwd),
    fwd_bwd=jax.jit(fwd_bwd),
    train=jax.jit(step),
  )


def compiled(fn: Callable[..., Any], *args: Any) -> Any:
  """`fn` (jitted) lowered and compiled for `args`."""
  return fn.lower(*args).compile()
