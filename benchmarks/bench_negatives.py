r"""The cost of CDNS and MBNS inside the real train step, against in-batch negatives only.

  python -m benchmarks.bench_negatives                     # results config, pmap, 8 devices
  python -m benchmarks.bench_negatives --config=tiny --batch_size=16 --bank_batches=16

Four variants of the trainer's own step (make_jax/train/layouts.py: masking, both passes,
every loss, gradient, AdamW, queue push; state donated, batch placed as the loop places it),
each compiled once, on one fixed random batch:

  in-batch    each query's negatives are its device's other products;
  CDNS        the global batch's products, gathered from every device (on from step 0);
  MBNS        in-batch plus a queue of `--bank_batches` global batches (counted from step 0);
  CDNS+MBNS   both.

benchmarks/bench_losses.py times the QPM loss alone at large batch; this is the same
question inside the whole step at the config's own scale, where the negatives compete with
the encoders. The variants are timed round-robin with the matmul probe between every two
timings (make_jax/train/flops.py), so a slow minute of the shared machine hits them alike:
printed are ms per step and MFU (model FLOPs of the variant's step) as median [min-max] over
rounds, and each variant's time over in-batch's *in the same round*, median [range].
"""

import importlib

from benchmarks import host_devices

host_devices.split_host_from_argv(default=8)  # Before JAX is imported.

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmarks import step_setup  # noqa: E402
from make_jax.models import make_model  # noqa: E402
from make_jax.train import flops, layouts, optimizer  # noqa: E402
from make_jax.train import state as state_lib  # noqa: E402
from make_jax.train import step as train_step  # noqa: E402

_CONFIG = flags.DEFINE_string('config', 'results', 'Config module in configs/.')
_BATCH = flags.DEFINE_integer('batch_size', 64, 'Global batch size.')
_LAYOUT = flags.DEFINE_enum('layout', 'pmap', list(layouts.LAYOUTS), 'Training layout.')
_BANK = flags.DEFINE_integer('bank_batches', 8, 'MBNS queue length Q in global batches.')
flags.DEFINE_integer('devices', 8, 'XLA CPU devices to split the host into (read at start).')
_ROUNDS = flags.DEFINE_integer('rounds', 5, 'Interleaved rounds (each times every variant).')
_STEPS = flags.DEFINE_integer('steps_per_round', 2, 'Steps per timing.')

# name -> (cdns_start_fraction, bank_batches): None takes --bank_batches, 0 is no queue.
_VARIANTS = {
  'in-batch': (1.0, 0),
  'CDNS': (0.0, 0),
  'MBNS': (1.0, None),
  'CDNS+MBNS': (0.0, None),
}


def _variant(name: str, cdns_fraction: float, bank: int):
  config = importlib.import_module(f'configs.{_CONFIG.value}').get_config()
  config.data.global_batch_size = _BATCH.value
  config.parallelism = _LAYOUT.value
  config.loss.cdns_start_fraction = cdns_fraction
  config.loss.bank_batches = bank
  config.loss.bank_start_fraction = 0.0
  if bank:
    config.loss.w_mbns = config.loss.w_mbns or 0.25
  model = make_model.build_model(config)
  tx = optimizer.make_optimizer(config.optim, config.train.num_steps)
  tokens = step_setup.special_tokens(config.model.vocab_size)
  host_batch = jax.tree.map(np.asarray, step_setup.random_batch(config, _BATCH.value))
  layout = layouts.make_layout(config, model, tx, tokens)
  holder = {'state': layout.init(jax.random.key(0))}
  batch = layout.put_batch(host_batch)

  def run_step():
    holder['state'], metrics = layout.step(holder['state'], batch)
    jax.block_until_ready(metrics)

  # Model FLOPs of the single-device step of this variant: the same work in every layout.
  state = jax.eval_shape(state_lib.init_fn(model, tx, config), jax.random.key(0))
  single = train_step.make_train_step(model, tx, config, tokens)
  work = flops.model_flops(single, state, host_batch)
  run_step()  # Compile.
  run_step()  # The queue is non-empty from the second step on.
  negatives = _BATCH.value // len(layout.local_devices) - 1
  if cdns_fraction == 0.0:
    negatives = _BATCH.value - 1
  negatives += bank * _BATCH.value
  print(
    f'{name:10s} compiled: {work / 1e9:7.2f} GFLOP/step (model), ~{negatives} negatives/query, '
    f'queue {bank * _BATCH.value * config.model.embed_dim * 4 / 2**20:.2f} MiB per device',
    flush=True,
  )
  return run_step, work


def main(argv):
  del argv
  print(
    f'config {_CONFIG.value}, global batch {_BATCH.value}, layout {_LAYOUT.value} on '
    f'{len(jax.devices())} {jax.devices()[0].platform} devices, queue Q={_BANK.value}',
    flush=True,
  )
  fns, work = {}, {}
  for name, (fraction, bank) in _VARIANTS.items():
    fns[name], work[name] = _variant(name, fraction, _BANK.value if bank is None else bank)
  rounds = flops.interleave(fns, rounds=_ROUNDS.value, calls_per_round=_STEPS.value)
  base = rounds.seconds['in-batch']
  print(f'{_ROUNDS.value} rounds x {_STEPS.value} steps; median [min-max] over rounds')
  print(f'{"variant":10s} {"ms/step":>22s} {"MFU (model)":>20s} {"vs in-batch, per round":>26s}')
  for name in fns:
    s = rounds.stats(name, work[name])
    r = flops.median_range('r', [t / b for t, b in zip(rounds.seconds[name], base, strict=True)])
    print(
      f'{name:10s} {s["s"] * 1e3:8.1f} [{s["s_min"] * 1e3:.0f}-{s["s_max"] * 1e3:.0f}]'
      f'   {100 * s["mfu"]:5.1f}% [{100 * s["mfu_min"]:.1f}-{100 * s["mfu_max"]:.1f}]'
      f'   {r["r"]:6.3f}x [{r["r_min"]:.3f}-{r["r_max"]:.3f}]',
      flush=True,
    )
  probe = rounds.stats('in-batch')
  print(
    f'probe (2048^3 float32 matmul): {probe["peak"] / 1e9:.0f} GFLOP/s '
    f'[{probe["peak_min"] / 1e9:.0f}-{probe["peak_max"] / 1e9:.0f}]'
  )


if __name__ == '__main__':
  app.run(main)
