r"""Training throughput of the three layouts: examples/s and MFU, 'single' vs 'pmap' vs 'pjit'.

  python -m benchmarks.bench_train                       # tiny (batch 16) and base (batch 8)
  python -m benchmarks.bench_train --devices=2 --configs=tiny --batch_sizes=32

Each row is the trainer's own step (make_jax/train/layouts.py: the state donated, the batch
placed as the loop places it) on a fixed random batch, so the input pipeline is not in the
figure. MFU = XLA FLOPs of the single-device step (the same work in every layout) / seconds
per step / peak; on CPU the peak is a float32 matmul probe run interleaved with the timed
rounds (make_jax/train/flops.py), on an accelerator the nominal peak. `--devices` > 1 splits
the host CPU into that many XLA devices (set before JAX starts), so 'pmap' and 'pjit' really
run data parallel; with 1 device the ratios show each layout's overhead.
"""

import importlib

from benchmarks import host_devices

host_devices.split_host_from_argv(default=1)  # Before JAX is imported.

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmarks import step_setup  # noqa: E402
from make_jax.models import make_model  # noqa: E402
from make_jax.train import flops, layouts, optimizer  # noqa: E402
from make_jax.train import state as state_lib  # noqa: E402
from make_jax.train import step as train_step  # noqa: E402

_CONFIGS = flags.DEFINE_list('configs', ['tiny', 'base'], 'Config modules in configs/.')
_BATCHES = flags.DEFINE_list('batch_sizes', ['16', '8'], 'Global batch size per config.')
_LAYOUTS = flags.DEFINE_list('layouts', list(layouts.LAYOUTS), 'Layouts to compare.')
flags.DEFINE_integer('devices', 1, 'XLA CPU devices to split the host into (read at start).')
_ROUNDS = flags.DEFINE_integer('rounds', 5, 'Timed rounds (probe, steps, probe) per layout.')
_STEPS = flags.DEFINE_integer('steps_per_round', 2, 'Steps per timed round.')


def _batch(config, batch_size: int) -> dict[str, np.ndarray]:
  """A random batch of the contract's shapes (distinct products: no accidental hits)."""
  rs = np.random.default_rng(0)
  batch = make_model.example_batch(config, batch_size)
  del batch['mpm_mask']
  for field in ('query', 'title'):
    ids = rs.integers(5, config.model.vocab_size, batch[f'{field}_ids'].shape)
    ids[:, 0] = 2
    batch[f'{field}_ids'] = ids.astype(np.int32)
    batch[f'{field}_keyword'] = (rs.uniform(size=ids.shape) < 0.2).astype(np.int32)
  batch['image'] = rs.integers(0, 256, batch['image'].shape, dtype=np.uint8)
  batch['product_id'] = np.arange(batch_size, dtype=np.int32)
  batch['log_p'] = np.log(rs.uniform(1e-3, 0.1, batch_size)).astype(np.float32)
  return batch


def bench(name: str, batch_size: int, probe: flops.MatmulProbe) -> None:
  config = importlib.import_module(f'configs.{name}').get_config()
  config.data.global_batch_size = batch_size
  config.loss.cdns_start_fraction = 0.0
  model = make_model.build_model(config)
  tx = optimizer.make_optimizer(config.optim, config.train.num_steps)
  host_batch = _batch(config, batch_size)
  tokens = step_setup.special_tokens(config.model.vocab_size)
  # The single-device step's XLA FLOPs: the same work in every layout.
  one = jax.eval_shape(state_lib.init_fn(model, tx, config), jax.random.key(0))
  single = jax.jit(train_step.make_train_step(model, tx, config, tokens))
  work = flops.compiled_flops(single.lower(one, host_batch).compile())
  rates = {}
  for layout_name in _LAYOUTS.value:
    config.parallelism = layout_name
    layout = layouts.make_layout(config, model, tx, tokens)
    holder = {'state': layout.init(jax.random.key(0))}
    batch = layout.put_batch(host_batch)

    def run_step(layout=layout, holder=holder, batch=batch):
      holder['state'], metrics = layout.step(holder['state'], batch)
      jax.block_until_ready(metrics)

    run_step()  # Compile.
    stats = flops.interleaved_mfu(
      run_step, work, rounds=_ROUNDS.value, steps_per_round=_STEPS.value, probe=probe
    )
    rates[layout_name] = batch_size / stats['step_s']
    print(
      f'{name:5s} B={batch_size:<3d} {layout_name:6s} devices={len(layout.local_devices)} '
      f'{rates[layout_name]:8.1f} ex/s  {stats["step_s"] * 1e3:8.1f} ms/step  '
      f'{work / batch_size / 1e9:6.3f} GFLOP/ex  MFU {100 * stats["mfu"]:5.1f}% '
      f'(rounds {100 * stats["mfu_min"]:.1f}-{100 * stats["mfu_max"]:.1f}%, '
      f'probe {stats["peak_flops"] / 1e9:.0f} GFLOP/s)',
      flush=True,
    )
  base = rates.get('single') or next(iter(rates.values()))
  print(
    f'{name:5s} examples/s ratios vs single: '
    + '  '.join(f'{k} {v / base:.2f}x' for k, v in rates.items()),
    flush=True,
  )


def main(argv):
  del argv
  if len(_BATCHES.value) != len(_CONFIGS.value):
    raise app.UsageError('--batch_sizes needs one entry per --configs entry')
  print(f'devices: {jax.devices()}')
  probe = flops.MatmulProbe()
  for name, bs in zip(_CONFIGS.value, _BATCHES.value, strict=True):
    bench(name, int(bs), probe)


if __name__ == '__main__':
  app.run(main)
