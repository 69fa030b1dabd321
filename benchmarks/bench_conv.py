r"""The ResNet's convolutions one by one: forward, input gradient and kernel gradient.

  python -m benchmarks.bench_conv                   # base ResNet-18 shapes, batch 32
  python -m benchmarks.bench_conv --batch_size=8 --rounds=3

For each distinct convolution of the base config's ResNet-18 (width 32, 3x3/1 stem, 64x64
images), timed alone and interleaved with the matmul probe (make_jax/train/flops.py):
XLA's forward, XLA's input gradient, XLA's kernel gradient (what `jax.grad` of
`lax.conv_general_dilated` runs) and the kernel gradient as per-tap matmuls
(`make_jax/models/conv.kernel_gradient`, what the ResNet runs since it was found slow).
Prints ms and GFLOP/s per shape (medians over rounds), the per-round speed-up of the
per-tap kernel gradient over XLA's [range], and the totals weighted by how many times each
shape occurs in the network.
"""

import collections
import statistics

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from jax import lax

from make_jax.models import conv
from make_jax.train import flops

_BATCH = flags.DEFINE_integer('batch_size', 32, 'Batch size.')
_ROUNDS = flags.DEFINE_integer('rounds', 5, 'Interleaved rounds.')
_SIZE = flags.DEFINE_integer('image_size', 64, 'Image side (the base config: 64).')
_WIDTH = flags.DEFINE_integer('width', 32, 'Channels of the first stage (the base config: 32).')

DN = ('NHWC', 'HWIO', 'NHWC')


def resnet18_convs(size: int, width: int) -> collections.Counter:
  """(side, c_in, c_out, kernel, stride) -> count, for ResNet-18 with the small stem."""
  shapes = collections.Counter({(size, 3, width, 3, 1): 1})
  side, cin = size, width
  for stage in range(4):
    cout = width * 2**stage
    for block in range(2):
      stride = 2 if (block == 0 and stage > 0) else 1
      shapes[(side, cin, cout, 3, stride)] += 1
      if stride != 1 or cin != cout:
        shapes[(side, cin, cout, 1, stride)] += 1
      side //= stride
      shapes[(side, cout, cout, 3, 1)] += 1
      cin = cout
  return shapes


def _variants(batch, side, cin, cout, k, s):
  rs = np.random.RandomState(0)
  x = jnp.asarray(rs.randn(batch, side, side, cin).astype(np.float32))
  w = jnp.asarray(rs.randn(k, k, cin, cout).astype(np.float32))
  pad = ((k // 2, k // 2),) * 2
  f = lambda x, w: lax.conv_general_dilated(x, w, (s, s), pad, dimension_numbers=DN)
  y = f(x, w)
  g = jnp.asarray(rs.randn(*y.shape).astype(np.float32))
  fns = {
    'forward': (jax.jit(f), (x, w)),
    'input grad': (jax.jit(lambda w, g: jax.linear_transpose(lambda v: f(v, w), x)(g)[0]), (w, g)),
    'kernel grad, XLA': (jax.jit(lambda x, g: jax.vjp(lambda v: f(x, v), w)[1](g)[0]), (x, g)),
    'kernel grad, per tap': (
      jax.jit(lambda x, g: conv.kernel_gradient(x, g, (k, k), (s, s), pad)),
      (x, g),
    ),
  }
  a = fns['kernel grad, XLA'][0](x, g)
  b = fns['kernel grad, per tap'][0](x, g)
  np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * float(jnp.abs(a).max()))
  return fns, 2.0 * y.size * k * k * cin


def main(argv):
  del argv
  shapes = resnet18_convs(_SIZE.value, _WIDTH.value)
  timed, gflop = {}, {}
  for shape in shapes:
    fns, fl = _variants(_BATCH.value, *shape)
    for name, (fn, args) in fns.items():
      call = lambda fn=fn, args=args: jax.block_until_ready(fn(*args))
      call()
      timed[(shape, name)] = call
    gflop[shape] = fl / 1e9
  rounds = flops.interleave({str(key): fn for key, fn in timed.items()}, rounds=_ROUNDS.value)
  names = ('forward', 'input grad', 'kernel grad, XLA', 'kernel grad, per tap')
  print(
    f'ResNet-18 (width {_WIDTH.value}, {_SIZE.value}px, small stem) convolutions at batch '
    f'{_BATCH.value}; {_ROUNDS.value} interleaved rounds; ms (GFLOP/s), medians'
  )
  print(
    f'{"side c_in->c_out k/s":24s} {"x":>2s}  '
    + '  '.join(f'{n:>22s}' for n in names)
    + '  per-tap speed-up [range]'
  )
  totals = collections.Counter()
  for shape, count in shapes.items():
    secs = {n: rounds.seconds[str((shape, n))] for n in names}
    ratio = [a / b for a, b in zip(secs[names[2]], secs[names[3]], strict=True)]
    cells = []
    for n in names:
      t = statistics.median(secs[n])
      totals[n] += count * t
      cells.append(f'{t * 1e3:9.1f} ({gflop[shape] / t:6.1f})'.rjust(22))
    side, cin, cout, k, s = shape
    print(
      f'{f"{side} {cin}->{cout} {k}/{s}":24s} {count:2d}  '
      + '  '.join(cells)
      + f'  {statistics.median(ratio):.2f}x [{min(ratio):.2f}-{max(ratio):.2f}]'
    )
  print(
    f'{"network total (ms)":24s}     '
    + '  '.join(f'{totals[n] * 1e3:22.1f}' for n in names)
    + f'  {totals[names[2]] / totals[names[3]]:.2f}x'
  )
  peak = [p for ps in rounds.peaks.values() for p in ps]
  print(f'matmul probe: median {statistics.median(peak) / 1e9:.0f} GFLOP/s')


if __name__ == '__main__':
  app.run(main)
