r"""QPM step time (loss + gradient) with in-batch, CDNS, MBNS and both negatives, side by side.

Run (8 fake CPU devices unless --fake_devices=0 on an accelerator host):
  python -m benchmarks.bench_losses --global_batch=1024 --dim=256 --bank_batches=16

The four variants are compiled once each and timed round-robin in one process (so load on a
shared machine hits them alike); the report gives medians over --repeats and the ratio to
the in-batch variant. In-batch and CDNS share one compiled program (the CDNS switch is a
traced step, SPEC section 5), so their times differ only by the masked columns. Memory is
computed from shapes (queue, gathered product matrix, score matrices per device) and read
from the compiled program's memory_analysis() where the backend provides it.
"""

import os
import sys

from absl import app, flags

_FAKE = flags.DEFINE_integer('fake_devices', 8, 'Fake CPU devices (0: use the real devices).')
_GB = flags.DEFINE_integer('global_batch', 1024, 'Global batch size.')
_DIM = flags.DEFINE_integer('dim', 256, 'Embedding dimension d.')
_Q = flags.DEFINE_integer('bank_batches', 16, 'MBNS queue length Q in global batches.')
_REPEATS = flags.DEFINE_integer('repeats', 15, 'Timed repeats per variant (median reported).')


def _set_fake_devices(argv):
  # Must happen before JAX is imported; only this script's process is affected.
  for a in argv:
    if a.startswith('--fake_devices='):
      n = int(a.split('=', 1)[1])
      break
  else:
    n = 8
  if n > 0 and '--xla_force_host_platform_device_count' not in os.environ.get('XLA_FLAGS', ''):
    os.environ['XLA_FLAGS'] = (
      os.environ.get('XLA_FLAGS', '') + f' --xla_force_host_platform_device_count={n}'
    ).strip()
    os.environ.setdefault('JAX_PLATFORMS', 'cpu')


def main(argv):
  del argv
  import time

  import jax
  import jax.numpy as jnp
  import numpy as np
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P

  from make_jax.losses import qpm
  from make_jax.losses.memory_bank import MemoryBank

  n_dev = jax.device_count()
  gb, d, q_len = _GB.value, _DIM.value, _Q.value
  if gb % n_dev:
    raise ValueError(f'--global_batch={gb} must be divisible by the {n_dev} devices')
  b = gb // n_dev
  mesh = jax.make_mesh((n_dev,), ('data',))
  rng = np.random.default_rng(0)

  def unit(*shape):
    x = rng.normal(size=shape).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)

  put = lambda x, spec: jax.device_put(x, NamedSharding(mesh, spec))
  query = put(unit(gb, d), P('data'))
  product = put(unit(gb, d), P('data'))
  log_p = put(np.log(rng.uniform(1e-5, 1e-2, gb)).astype(np.float32), P('data'))
  ids = put(rng.integers(0, 10 * gb, gb).astype(np.int32), P('data'))
  bank = MemoryBank.create(q_len, gb, d)
  for _ in range(q_len):  # A full queue.
    bank = bank.push(
      jnp.asarray(unit(gb, d)),
      jnp.asarray(np.log(rng.uniform(1e-5, 1e-2, gb)), jnp.float32),
      jnp.asarray(rng.integers(0, 10 * gb, gb), jnp.int32),
    )
  bank = put(bank, P())
  temperature = put(jnp.float32(0.05), P())
  cdns_start = 100

  def make(with_bank):
    def per_device(q, p, lp, i, t, step, bk):
      def loss(q, p, t):
        return qpm.qpm_loss(
            q, p, lp, i, t, step=step, cdns_start=cdns_start, bank=bk if with_bank else None,
            axis_name='data',
        )  # fmt: skip

      (share, m), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, p, t)
      return (
        m['qpm'],
        grads,
        m['qpm_negatives_local'] + m['qpm_negatives_cross_device'] + m['qpm_negatives_bank'],
      )

    return jax.jit(
      jax.shard_map(
        per_device,
        mesh=mesh,
        in_specs=(P('data'), P('data'), P('data'), P('data'), P(), P(), P()),
        out_specs=(P(), (P('data'), P('data'), P()), P()),
      )
    )

  fns = {False: make(False), True: make(True)}
  variants = {  # name: (uses bank, step)
    'in-batch': (False, 0),
    'CDNS': (False, cdns_start),
    'MBNS': (True, 0),
    'CDNS+MBNS': (True, cdns_start),
  }
  args = {}
  compiled_mem = {}
  for name, (wb, step) in variants.items():
    args[name] = (query, product, log_p, ids, temperature, put(jnp.int32(step), P()), bank)
    if wb not in compiled_mem:
      lowered = fns[wb].lower(*args[name])
      try:
        ma = lowered.compile().memory_analysis()
        compiled_mem[wb] = getattr(ma, 'temp_size_in_bytes', None)
      except Exception:  # Backends without memory analysis report None.
        compiled_mem[wb] = None
  negs = {}
  for name, (wb, _) in variants.items():  # Warm-up (compile) and the negatives per query.
    out = fns[wb](*args[name])
    jax.block_until_ready(out)
    negs[name] = float(out[2])
  times = {name: [] for name in variants}
  for _ in range(_REPEATS.value):
    for name, (wb, _) in variants.items():
      t0 = time.perf_counter()
      jax.block_until_ready(fns[wb](*args[name]))
      times[name].append(time.perf_counter() - t0)

  base = float(np.median(times['in-batch']))
  print(
    f'QPM loss+grad, {n_dev} devices ({jax.devices()[0].platform}), global batch {gb} '
    f'({b}/device), d={d}, queue {q_len} batches = {q_len * gb} entries, '
    f'{_REPEATS.value} repeats'
  )
  print(f'{"variant":<11} {"negatives/query":>16} {"median ms":>10} {"ratio":>7}')
  for name in variants:
    med = float(np.median(times[name]))
    print(f'{name:<11} {negs[name]:>16.1f} {med * 1e3:>10.2f} {med / base:>7.2f}')
  mib = lambda x: f'{x / 2**20:.2f} MiB'
  queue_bytes = sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(bank))
  print('memory (from shapes):')
  print(f'  queue (replicated on every device): {mib(queue_bytes)}')
  print(f'  gathered products per device [{gb}, {d}] f32: {mib(gb * d * 4)}')
  print(f'  batch scores per device [{b}, {gb}] f32: {mib(b * gb * 4)}')
  print(f'  bank scores per device [{b}, {q_len * gb}] f32: {mib(b * q_len * gb * 4)}')
  for wb, val in compiled_mem.items():
    label = 'with queue' if wb else 'no queue'
    print(f'  compiled temp memory ({label}, per-device program): {mib(val) if val else "n/a"}')


if __name__ == '__main__':
  _set_fake_devices(sys.argv)
  app.run(main)
