r"""The train step cut into pieces: time share and GFLOP/s of each, against the whole step.

  python -m benchmarks.bench_step_pieces                          # base, batch 32
  python -m benchmarks.bench_step_pieces --config=tiny --batch_size=16 --rounds=3

Each piece is jitted on its own, at the shapes the step gives it, forward *and* backward
(a `jax.vjp` with a fixed random cotangent, gradients for that piece's parameters only):
the ResNet, one text-encoder pass (query, title: the step runs each twice, masked and
clean), one image-transformer pass (also twice), the Modal Adaptation fusion stack, the
heads (MLM at the predicted positions, MPM, MPM_R), the losses (gradient with respect to the
model outputs), AdamW (update + apply), and masking (forward only). Share = pieces' time x
runs per step / the whole step's time; the remainder is what no piece covers (embeddings,
projections, gate, glue, and whatever XLA fuses differently inside the whole step).
Timings are interleaved with the matmul probe (make_jax/train/flops.py): medians [min-max]
over rounds, MFU per round against the probe around it; GFLOP are model FLOPs.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from benchmarks import step_setup
from make_jax.losses.total import compute_losses
from make_jax.models.model_config import ModelConfig
from make_jax.models.resnet import ResNet
from make_jax.models.transformer import TransformerStack
from make_jax.train import flops

_CONFIG = flags.DEFINE_string('config', 'base', 'Config module in configs/.')
_BATCH = flags.DEFINE_integer('batch_size', 32, 'Global batch size (one device).')
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Interleaved rounds.')
_TARGET_S = flags.DEFINE_float('target_s', 0.3, 'Calls per timing are chosen to take about this.')
_CACHE = flags.DEFINE_string(
  'compilation_cache', '/tmp/make_jax_xla_cache', 'Persistent XLA cache directory; "" for none.'
)


def _vjp(f, params, *inputs, seed: int = 0):
  """jit(params -> (f(params, *inputs), d/dparams of <f, random cotangent>)) and its args."""
  out = jax.eval_shape(f, params, *inputs)
  rs = np.random.RandomState(seed)
  ct = jax.tree.map(lambda a: jnp.asarray(np.asarray(rs.randn(*a.shape)).astype(a.dtype)), out)

  def run(p, *x):
    y, pull = jax.vjp(lambda p: f(p, *x), p)
    return y, pull(ct)[0]

  return jax.jit(run), (params, *inputs)


def pieces(s: step_setup.StepSetup) -> dict[str, tuple]:
  """name -> (jitted fn, args, runs per step)."""
  cfg = ModelConfig.from_config(s.config)
  p, b = s.params, s.masked
  drop = {'dropout': jax.random.key(7)}
  bs, h = b['query_ids'].shape[0], cfg.hidden_size
  rs = np.random.RandomState(1)
  hidden = lambda n: jnp.asarray(rs.randn(bs, n, h).astype(np.float32))
  resnet = ResNet(cfg.resnet_depth, cfg.resnet_width, cfg.resnet_small_stem)
  img_stack = TransformerStack(cfg, cfg.image_num_layers)
  fusion = TransformerStack(cfg, cfg.fusion_layers)
  model = s.model
  regions = cfg.num_regions + 1
  out = {
    'ResNet': (
      *_vjp(lambda q, x: resnet.apply({'params': q}, x), p['image_encoder']['resnet'], b['image']),
      1,
    ),
    'query encoder pass': (
      *_vjp(
        lambda q, ids, m: model.apply(
          {'params': q},
          ids,
          m,
          train=True,
          rngs=drop,
          method=lambda md, i, k, train: md.query_encoder(i, k, train=train),
        ),
        p,
        b['query_ids'],
        b['query_mask'],
      ),
      2,
    ),
    'title encoder pass': (
      *_vjp(
        lambda q, ids, m: model.apply(
          {'params': q},
          ids,
          m,
          train=True,
          rngs=drop,
          method=lambda md, i, k, train: md.title_encoder(i, k, train=train),
        ),
        p,
        b['title_ids'],
        b['title_mask'],
      ),
      2,
    ),
    'image transformer pass': (
      *_vjp(
        lambda q, x: img_stack.apply(
          {'params': q}, x, jnp.ones(x.shape[:2], jnp.int32), train=True, rngs=drop
        ),
        p['image_encoder']['stack'],
        hidden(regions),
      ),
      2,
    ),
  }
  if cfg.modal_adaptation:
    lt = b['title_ids'].shape[1]
    out['MA fusion'] = (
      *_vjp(
        lambda q, x: fusion.apply(
          {'params': q}, x, jnp.ones(x.shape[:2], jnp.int32), train=True, rngs=drop
        ),
        p['fusion'],
        hidden(lt + regions),
      ),
      1,
    )

  def heads(md, query, title, img):
    return (
      md.mlm_query_head(query, b['mlm_query_positions'], md.query_encoder.attend),
      md.mlm_title_head(title, b['mlm_title_positions'], md.title_encoder.attend),
      md.mpm_head(img),
      md.mpm_r_head(img),
    )

  out['heads'] = (
    *_vjp(
      lambda q, x, y, z: model.apply({'params': q}, x, y, z, method=heads),
      p,
      hidden(b['query_ids'].shape[1]),
      hidden(b['title_ids'].shape[1]),
      hidden(cfg.num_regions),
    ),
    1,
  )
  outputs = jax.jit(s.fwd)(p, b)
  differentiable = {k: v for k, v in outputs.items() if jnp.issubdtype(v.dtype, jnp.floating)}

  def losses(o, batch, state):
    return compute_losses(
      o, batch, s.config.loss, step=state.step, num_steps=s.config.train.num_steps, bank=state.bank
    )[0]

  out['losses'] = (*_vjp(losses, differentiable, b, s.state), 1)

  def adamw(state, grads):
    updates, opt = s.tx.update(grads, state.opt_state, state.params)
    return optax.apply_updates(state.params, updates), opt

  grads = jax.tree.map(lambda a: jnp.full_like(a, 1e-3), p)
  out['AdamW'] = (jax.jit(adamw), (s.state, grads), 1)
  return out


def main(argv):
  del argv
  if _CACHE.value:
    jax.config.update('jax_compilation_cache_dir', _CACHE.value)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)
  t0 = time.perf_counter()
  s = step_setup.build(_CONFIG.value, _BATCH.value)
  todo = pieces(s)
  todo['(whole train step)'] = (s.train, (s.state, s.batch), 1)
  fns, model, runs = {}, {}, {}
  for name, (fn, args, n) in todo.items():
    traced = fn.trace(*args)
    model[name] = flops.jaxpr_flops(traced.jaxpr)
    compiled = traced.lower().compile()
    call = lambda c=compiled, a=args: jax.block_until_ready(c(*a))
    call()
    t = time.perf_counter()
    call()
    reps = max(1, round(_TARGET_S.value / max(time.perf_counter() - t, 1e-6)))
    fns[name] = lambda call=call, reps=reps: [call() for _ in range(reps)]
    runs[name] = (n, reps)
  print(
    f'{_CONFIG.value} batch {_BATCH.value}; set up in {time.perf_counter() - t0:.0f} s; '
    f'{_ROUNDS.value} interleaved rounds',
    flush=True,
  )
  rounds = flops.interleave(fns, rounds=_ROUNDS.value)
  step = rounds.stats('(whole train step)')['s']
  print(
    'piece                      x/step  ms/call [range]          share  model GFLOP  '
    'GFLOP/s  MFU [range]'
  )
  covered = 0.0
  for name in fns:
    n, reps = runs[name]
    rounds.seconds[name] = [t / reps for t in rounds.seconds[name]]
    st = rounds.stats(name, model[name])
    share = n * st['s'] / step
    if name != '(whole train step)':
      covered += share
    print(
      f'{name:26s} {n:6d}  {st["s"] * 1e3:8.1f} [{st["s_min"] * 1e3:.1f}-{st["s_max"] * 1e3:.1f}]'
      f'  {100 * share:8.1f}%  {model[name] / 1e9:11.2f}  {st["flops_per_s"] / 1e9:7.1f}  '
      f'{100 * st["mfu"]:.1f}% [{100 * st["mfu_min"]:.1f}-{100 * st["mfu_max"]:.1f}]'
    )
  print(f'{"(not covered by a piece)":26s} {"":6s}  {"":24s}  {100 * (1 - covered):7.1f}%')
  print(f'total {time.perf_counter() - t0:.0f} s')


if __name__ == '__main__':
  app.run(main)
