r"""Model throughput on this machine: forward and forward+backward examples/s, and MFU.

  python -m benchmarks.bench_model                      # tiny (batch 16) and base (batch 4)
  python -m benchmarks.bench_model --configs=tiny --batch_sizes=32 --repeats=9

In the same run it times a large float32 matmul (`jnp.dot`, n x n) to measure the CPU's
achievable peak FLOP/s, and reports each step's MFU = (XLA cost-analysis FLOPs of the step /
its median time) / that peak. Three rows per config: the forward pass, forward+backward of
a scalar built from every model output, and the real training step of
make_jax/train/step.py (masking, masked + unmasked passes, every loss, AdamW, queue push).
"""

import importlib
import statistics
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax.linen import meta

from make_jax.models.make_model import build_model, example_batch
from make_jax.train import optimizer
from make_jax.train import step as train_step

_CONFIGS = flags.DEFINE_list('configs', ['tiny', 'base'], 'Config modules in configs/.')
_BATCHES = flags.DEFINE_list('batch_sizes', ['16', '4'], 'Batch size per config.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed repeats (the median is reported).')
_MATMUL_N = flags.DEFINE_integer('matmul_n', 2048, 'Size of the peak-measuring matmul.')


def _median_seconds(fn, *args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))  # Compile and warm up.
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def _compiled(fn, *args):
  compiled = jax.jit(fn).lower(*args).compile()
  cost = compiled.cost_analysis()
  if isinstance(cost, list | tuple):
    cost = cost[0]
  return compiled, float(cost['flops'])


def matmul_peak(n: int, repeats: int) -> float:
  """Measured float32 FLOP/s of an n x n x n matmul (2 n^3 FLOPs)."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  f = jax.jit(jnp.dot)
  return 2 * n**3 / _median_seconds(f, a, b, repeats=repeats)


def bench(name: str, batch_size: int, repeats: int, peak: float) -> None:
  config = importlib.import_module(f'configs.{name}').get_config()
  model = build_model(config)
  batch = jax.tree.map(jnp.asarray, example_batch(config, batch_size))
  rs = np.random.RandomState(0)
  batch['query_ids'] = jnp.asarray(rs.randint(5, config.model.vocab_size, batch['query_ids'].shape))
  batch['title_ids'] = jnp.asarray(rs.randint(5, config.model.vocab_size, batch['title_ids'].shape))
  batch['image'] = jnp.asarray(rs.randint(0, 256, batch['image'].shape).astype(np.uint8))
  batch['product_id'] = jnp.arange(batch_size, dtype=jnp.int32)  # Distinct: no accidental hits.
  params = meta.unbox(jax.jit(model.init)(jax.random.key(0), batch))['params']
  fwd = lambda p, b: model.apply({'params': p}, b)

  def scalar(p, b):
    return sum(jnp.sum(v) for v in jax.tree.leaves(fwd(p, b)))

  # The real training step: per-example masking, masked + unmasked passes, every loss,
  # gradient reduction, AdamW and the memory-bank push (make_jax/train/step.py).
  config.data.global_batch_size = batch_size
  tokens = types.SimpleNamespace(
    pad_id=0, cls_id=2, sep_id=3, mask_id=4, vocab_size=config.model.vocab_size
  )
  tx = optimizer.make_optimizer(config.optim, config.train.num_steps)
  state = train_step.create_train_state(model, params, tx, config, jax.random.key(1))
  step = train_step.make_train_step(model, tx, config, tokens)
  for label, fn, args in (
    ('fwd', fwd, (params, batch)),
    ('fwd+bwd', jax.grad(scalar), (params, batch)),
    ('train', step, (state, batch)),
  ):
    compiled, flops = _compiled(fn, *args)
    sec = _median_seconds(compiled, *args, repeats=repeats)
    mfu = flops / sec / peak
    print(
      f'{name:6s} B={batch_size:<3d} {label:8s} {batch_size / sec:9.1f} ex/s  '
      f'{sec * 1e3:8.1f} ms/step  {flops / batch_size / 1e9:7.3f} GFLOP/ex  MFU {100 * mfu:5.1f}%',
      flush=True,
    )


def main(argv):
  del argv
  if len(_BATCHES.value) != len(_CONFIGS.value):
    raise app.UsageError('--batch_sizes needs one entry per --configs entry')
  print(f'devices: {jax.devices()}')
  peak = matmul_peak(_MATMUL_N.value, _REPEATS.value)
  n = _MATMUL_N.value
  print(
    f'float32 matmul peak ({n}x{n} jnp.dot, median of {_REPEATS.value}): {peak / 1e9:.1f} GFLOP/s'
  )
  for name, bs in zip(_CONFIGS.value, _BATCHES.value, strict=True):
    bench(name, int(bs), _REPEATS.value, peak)
  # Re-measure the peak after the model runs: the machine is shared, so report both.
  print(f'float32 matmul peak, measured again: {matmul_peak(n, _REPEATS.value) / 1e9:.1f} GFLOP/s')


if __name__ == '__main__':
  app.run(main)
