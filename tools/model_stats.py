r"""Prints parameter counts (per encoder, total) and FLOPs per example of each config's model.

  python -m tools.model_stats                       # tiny, base, paper
  python -m tools.model_stats --configs=tiny,base --batch_size=2 --xla=false

FLOPs are those of training: the forward is the training forward over a batch as masking
leaves it (masked pass for MLM / MPM plus the unmasked retrieval pass, MLM logits at the
predicted positions only), and fwd+bwd is the real train step of make_jax/train/step.py
(masking, both passes, losses, gradient, AdamW). Two counts, nothing estimated:
- *model FLOPs*: matmuls and convolutions, counted on the jaxpr after dead-code elimination
  (`make_jax.train.flops.model_flops`); the numerator of the benchmarks' "MFU (model FLOPs)";
- *XLA FLOPs* (`--xla`): XLA's cost analysis of the compiled function, elementwise work and
  the optimiser included.
Everything is traced on abstract shapes (`jax.eval_shape`), so no parameters are allocated.
Output: a Markdown table.
"""

import importlib
import types

import jax
import numpy as np
from absl import app, flags
from flax.linen import meta

from make_jax.input import featurize
from make_jax.models.make_model import build_model, example_batch
from make_jax.train import flops, masking, optimizer
from make_jax.train import step as train_step

_CONFIGS = flags.DEFINE_list('configs', ['tiny', 'base', 'paper'], 'Config modules in configs/.')
_BATCH = flags.DEFINE_integer('batch_size', 2, 'Batch size the FLOPs are measured at.')
_XLA = flags.DEFINE_bool('xla', True, 'Also compile and report XLA cost-analysis FLOPs.')

GROUPS = {
  'query enc.': ('query_encoder',),
  'title enc.': ('title_encoder',),
  'image enc. (ResNet)': ('image_encoder/resnet',),
  'image enc. (rest)': ('image_encoder',),
  'MA + proj.': ('fusion', 'gate_hidden', 'gate_out', 'modality_embeddings', '_proj'),
  'heads': ('mlm_', 'mpm_', 'log_'),
}


def _xla_flops(fn, *args) -> float:
  return flops.compiled_flops(jax.jit(fn).lower(*args).compile())


def stats(name: str, batch_size: int, xla: bool) -> dict[str, float]:
  """Parameter counts by group and training FLOPs per example of configs/<name>.py."""
  config = importlib.import_module(f'configs.{name}').get_config()
  config.data.global_batch_size = batch_size
  model = build_model(config)
  zeros = example_batch(config, batch_size)
  raw = {k: jax.ShapeDtypeStruct(zeros[k].shape, zeros[k].dtype) for k in featurize.BATCH_KEYS}
  tokens = types.SimpleNamespace(
    pad_id=0, cls_id=2, sep_id=3, mask_id=4, vocab_size=config.model.vocab_size
  )

  def mask(b):
    return masking.mask_batch_by_example(
      b,
      jax.random.key(0),
      config.masking,
      pad_id=0,
      cls_id=2,
      sep_id=3,
      mask_id=4,
      vocab_size=tokens.vocab_size,
      num_regions=config.model.image_grid**2,
    )

  masked = jax.eval_shape(mask, raw)
  init = lambda b: model.init({'params': jax.random.key(0)}, b, train=False)
  params = meta.unbox(jax.eval_shape(init, masked))['params']
  counts = dict.fromkeys(GROUPS, 0)
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    key = '/'.join(str(getattr(p, 'key', p)) for p in path)
    group = next(g for g, pats in GROUPS.items() if any(p in key for p in pats))
    counts[group] += int(np.prod(leaf.shape))
  row = {g: float(c) for g, c in counts.items()}
  row['total'] = float(sum(counts.values()))
  tx = optimizer.make_optimizer(config.optim, config.train.num_steps)
  state = jax.eval_shape(
    lambda p: train_step.create_train_state(model, p, tx, config, jax.random.key(1)), params
  )
  step = train_step.make_train_step(model, tx, config, tokens)

  def fwd(p, b):
    return model.apply({'params': p}, b, train=True, rngs={'dropout': jax.random.key(2)})

  row['model fwd'] = flops.model_flops(fwd, params, masked) / batch_size
  row['model step'] = flops.model_flops(step, state, raw) / batch_size
  if xla:
    row['XLA fwd'] = _xla_flops(fwd, params, masked) / batch_size
    row['XLA step'] = _xla_flops(step, state, raw) / batch_size
  return row


def _fmt(x: float) -> str:
  for unit, scale in (('G', 1e9), ('M', 1e6), ('K', 1e3)):
    if x >= scale:
      return f'{x / scale:.2f}{unit}'
  return f'{x:.0f}'


def main(argv):
  del argv
  flop_cols = ['model fwd', 'model step', 'XLA fwd', 'XLA step']
  cols = [*GROUPS, 'total', *flop_cols]
  print(
    '| config | '
    + ' | '.join(f'params: {c}' if c not in flop_cols else f'FLOPs/ex: {c}' for c in cols)
    + ' | step/fwd (model) |'
  )
  print('|' + '---|' * (len(cols) + 2))
  for name in _CONFIGS.value:
    row = stats(name, _BATCH.value, _XLA.value)
    ratio = f'{row["model step"] / row["model fwd"]:.2f}'
    cells = [_fmt(row[c]) if c in row else '-' for c in cols]
    print(f'| {name} | ' + ' | '.join(cells) + f' | {ratio} |', flush=True)


if __name__ == '__main__':
  app.run(main)
