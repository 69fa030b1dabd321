r"""Prints parameter counts (per encoder, total) and FLOPs per example of each config's model.

  python -m tools.model_stats                       # tiny, base, paper
  python -m tools.model_stats --configs=tiny,base --batch_size=2

FLOPs come from XLA's compiled cost analysis of the jitted forward pass (batch of
`--batch_size`, divided by it) and of the forward+backward pass of a scalar built from
every output (`--backward`); nothing is estimated. Output: a Markdown table.
"""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax.linen import meta

from make_jax.models.make_model import build_model, example_batch

_CONFIGS = flags.DEFINE_list('configs', ['tiny', 'base', 'paper'], 'Config modules in configs/.')
_BATCH = flags.DEFINE_integer('batch_size', 2, 'Batch size the FLOPs are measured at.')
_BACKWARD = flags.DEFINE_bool('backward', True, 'Also measure forward+backward FLOPs.')

GROUPS = {
  'query enc.': ('query_encoder',),
  'title enc.': ('title_encoder',),
  'image enc. (ResNet)': ('image_encoder/resnet',),
  'image enc. (rest)': ('image_encoder',),
  'MA + proj.': ('fusion', 'gate_hidden', 'gate_out', 'modality_embeddings', '_proj'),
  'heads': ('mlm_', 'mpm_', 'log_'),
}


def _flops(fn, *args) -> float:
  cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  if isinstance(cost, list | tuple):  # Older JAX returned one dict per computation.
    cost = cost[0]
  return float(cost['flops'])


def stats(name: str, batch_size: int, backward: bool) -> dict[str, float]:
  """Parameter counts by group and FLOPs per example of configs/<name>.py."""
  config = importlib.import_module(f'configs.{name}').get_config()
  model = build_model(config)
  batch = example_batch(config, batch_size)
  # A training batch (as `mask_batch` leaves it): the labels make the model run its
  # retrieval pass over the unmasked inputs too, so the FLOPs are those of a train step.
  for field in ('query', 'title'):
    batch[f'mlm_{field}_labels'] = batch[f'{field}_ids']
    batch[f'mlm_{field}_weights'] = np.zeros(batch[f'{field}_ids'].shape, np.float32)
  abstract = meta.unbox(jax.eval_shape(lambda: model.init(jax.random.key(0), batch)))['params']
  counts = dict.fromkeys(GROUPS, 0)
  for path, leaf in jax.tree_util.tree_flatten_with_path(abstract)[0]:
    key = '/'.join(str(getattr(p, 'key', p)) for p in path)
    group = next(g for g, pats in GROUPS.items() if any(p in key for p in pats))
    counts[group] += int(np.prod(leaf.shape))
  row = {g: float(c) for g, c in counts.items()}
  row['total'] = float(sum(counts.values()))
  fwd = lambda p, b: model.apply({'params': p}, b)
  row['fwd'] = _flops(fwd, abstract, batch) / batch_size
  if backward:

    def scalar(p, b):
      return sum(jnp.sum(v) for v in jax.tree.leaves(fwd(p, b)))

    row['fwd+bwd'] = _flops(jax.grad(scalar), abstract, batch) / batch_size
  return row


def _fmt(x: float) -> str:
  for unit, scale in (('G', 1e9), ('M', 1e6), ('K', 1e3)):
    if x >= scale:
      return f'{x / scale:.2f}{unit}'
  return f'{x:.0f}'


def main(argv):
  del argv
  cols = [*GROUPS, 'total', 'fwd', 'fwd+bwd']
  print(
    '| config | '
    + ' | '.join(f'params: {c}' if c in GROUPS or c == 'total' else f'FLOPs/ex {c}' for c in cols)
    + ' | bwd/fwd |'
  )
  print('|' + '---|' * (len(cols) + 2))
  for name in _CONFIGS.value:
    row = stats(name, _BATCH.value, _BACKWARD.value)
    ratio = f'{row["fwd+bwd"] / row["fwd"]:.2f}' if 'fwd+bwd' in row else '-'
    cells = [_fmt(row[c]) if c in row else '-' for c in cols]
    print(f'| {name} | ' + ' | '.join(cells) + f' | {ratio} |', flush=True)


if __name__ == '__main__':
  app.run(main)
