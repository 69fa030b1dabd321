"""Sharded losses equal the single-device global computation (SPEC section 5, the scaling trap).

8 fake CPU devices (tests/conftest.py). A small linear "model" produces every output the losses
read (embeddings, MLM logits, MPM/MPM_R predictions, temperatures), so the comparison covers the
gradient with respect to its parameters (the trainer's `reduce_gradients` path) and with respect
to the per-device inputs, under `jax.pmap` and under `jax.shard_map` inside `jax.jit` (gradient
taken inside the shard_map, and outside it). Deliberately wrong variants (a gather without
gradient; a psum-ed loss differentiated on every device) are shown to be caught.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from test_loss_reference import naive_mpm_r, naive_qpc, naive_qpm

from configs import base
from make_jax.losses import compute_losses, reduce_gradients
from make_jax.losses.memory_bank import MemoryBank
from make_jax.parallel import collectives

N_DEV, PER_DEV, DIN, D, LQ, LT, V, R, DR = 8, 2, 5, 4, 3, 4, 6, 3, 2
GB = N_DEV * PER_DEV
NUM_STEPS = 10  # cdns_start_fraction 0.5 -> CDNS from step 5.


def loss_cfg(**weights):
  cfg = base.get_config().loss
  cfg.weights.update(weights)
  cfg.bank_batches = 3
  cfg.qpm_temperature = 0.3
  return cfg


ALL_TERMS = dict(mlm=1.0, mpm=0.5, mpm_r=1.0, qpm=1.0, qpc=0.3)


def linear_model(params, x):
  """A linear stand-in for MakeModel producing the outputs of contract 4."""

  def unit(a):
    return a / jnp.linalg.norm(a, axis=-1, keepdims=True)

  return {
    # + zero inputs: their gradients are the gradients w.r.t. the embeddings themselves.
    'query_emb': unit(x['xq'] @ params['wq']) + x['dq'],
    'product_emb': unit(x['xp'] @ params['wp']) + x['dp'],
    'mlm_query_logits': x['tq'] @ params['wv'],
    'mlm_title_logits': x['tt'] @ params['wv'],
    'mpm_pred': x['regions'] @ params['wm'],
    'mpm_r_pred': x['regions'] @ params['wr'],
    'mpm_target': x['regions'],
    'qpm_temperature': jnp.exp(params['log_t']),
    'mpm_r_tau': jnp.exp(params['log_tau']),
  }


def make_data(seed=0):
  rng = np.random.default_rng(seed)
  params = {
    'wq': rng.normal(size=(DIN, D)),
    'wp': rng.normal(size=(DIN, D)),
    'wv': rng.normal(size=(DIN, V)),
    'wm': rng.normal(size=(DR, DR)),
    'wr': rng.normal(size=(DR, DR)),
    'log_t': np.log(0.3),
    'log_tau': np.log(0.5),
  }
  ids = rng.integers(0, 10, size=GB)  # 16 draws from 10 ids: duplicates across devices.
  missing = np.zeros(GB, bool)
  missing[[3, 12]] = True
  mpm_mask = (rng.uniform(size=(GB, R)) < 0.5) & ~missing[:, None]
  x = {
    'xq': rng.normal(size=(GB, DIN)),
    'xp': rng.normal(size=(GB, DIN)),
    'tq': rng.normal(size=(GB, LQ, DIN)),
    'tt': rng.normal(size=(GB, LT, DIN)),
    'regions': rng.normal(size=(GB, R, DR)),
    'dq': np.zeros((GB, D)),
    'dp': np.zeros((GB, D)),
  }
  batch = {
    'log_p': np.log(rng.uniform(0.01, 0.3, size=GB)),
    'product_id': ids.astype(np.int32),
    'mlm_query_labels': rng.integers(0, V, size=(GB, LQ)).astype(np.int32),
    'mlm_query_weights': (rng.uniform(size=(GB, LQ)) < 0.5).astype(np.float64),
    'mlm_title_labels': rng.integers(0, V, size=(GB, LT)).astype(np.int32),
    'mlm_title_weights': (rng.uniform(size=(GB, LT)) < 0.5).astype(np.float64),
    'mpm_mask': mpm_mask.astype(np.float64),
    'image_missing': missing,
  }
  bank = MemoryBank.create(3, GB, D, jnp.asarray(0.0).dtype)  # float64 under x64.
  for k in range(2):  # Partly filled; queued ids overlap the batch's.
    emb = rng.normal(size=(GB, D))
    emb /= np.linalg.norm(emb, axis=-1, keepdims=True)
    bank = bank.push(
      jnp.asarray(emb),
      jnp.asarray(rng.normal(size=GB) - 3),
      jnp.asarray(rng.integers(0, 20, size=GB) + k),
    )
  return (
    jax.tree.map(jnp.asarray, params),
    jax.tree.map(jnp.asarray, x),
    jax.tree.map(jnp.asarray, batch),
    bank,
  )


def _share_fn(cfg, axis_name, wrong_psum=False):
  def fn(params, x, batch, bank, step):
    share, metrics = compute_losses(
      linear_model(params, x),
      batch,
      cfg,
      step=step,
      num_steps=NUM_STEPS,
      bank=bank,
      axis_name=axis_name,
    )
    if wrong_psum:  # The scaling trap: a global loss differentiated on every device.
      share = jax.lax.psum(share, axis_name)
    return share, metrics

  return fn


def _single(cfg, params, x, batch, bank, step):
  fn = _share_fn(cfg, None)
  (_, metrics), grads = jax.jit(jax.value_and_grad(fn, argnums=(0, 1), has_aux=True))(
    params, x, batch, bank, step
  )
  return metrics, grads[0], grads[1]


def _split(tree):
  return jax.tree.map(lambda a: a.reshape((N_DEV, PER_DEV) + a.shape[1:]), tree)


def _merge(tree):
  return jax.tree.map(lambda a: a.reshape((GB,) + a.shape[2:]), tree)


def _pmap(cfg, params, x, batch, bank, step, wrong_psum=False):
  fn = _share_fn(cfg, 'data', wrong_psum)

  def per_device(params, x, batch, bank, step):
    (_, metrics), (g_params, g_x) = jax.value_and_grad(fn, argnums=(0, 1), has_aux=True)(
      params, x, batch, bank, step
    )
    return metrics, reduce_gradients(g_params, 'data'), g_x

  out = jax.pmap(per_device, axis_name='data', in_axes=(None, 0, 0, None, None))(
    params, _split(x), _split(batch), bank, step
  )
  metrics, g_params, g_x = out
  return jax.tree.map(lambda a: a[0], metrics), jax.tree.map(lambda a: a[0], g_params), _merge(g_x)


def _mesh():
  return jax.make_mesh((N_DEV,), ('data',))


def _shard_map_grad_inside(cfg, params, x, batch, bank, step, check_vma=True):
  mesh = _mesh()
  fn = _share_fn(cfg, 'data')

  def per_device(params, x, batch, bank, step):
    (_, metrics), (g_params, g_x) = jax.value_and_grad(fn, argnums=(0, 1), has_aux=True)(
      params, x, batch, bank, step
    )
    return metrics, reduce_gradients(g_params, 'data'), g_x

  sharded = lambda t: jax.device_put(t, NamedSharding(mesh, P('data')))
  replicated = lambda t: jax.device_put(t, NamedSharding(mesh, P()))
  f = jax.jit(
    jax.shard_map(
      per_device,
      mesh=mesh,
      in_specs=(P(), P('data'), P('data'), P(), P()),
      out_specs=(P(), P(), P('data')),
      check_vma=check_vma,  # Without replication typing, reduce_gradients must psum.
    )
  )
  return f(
    replicated(params), sharded(x), sharded(batch), replicated(bank), replicated(jnp.asarray(step))
  )


def _shard_map_grad_outside(cfg, params, x, batch, bank, step):
  mesh = _mesh()
  fn = _share_fn(cfg, 'data')

  def per_device(params, x, batch, bank, step):
    share, metrics = fn(params, x, batch, bank, step)
    return jax.lax.psum(share, 'data'), metrics

  global_loss = jax.shard_map(
    per_device, mesh=mesh, in_specs=(P(), P('data'), P('data'), P(), P()), out_specs=(P(), P())
  )
  grad_fn = jax.jit(jax.value_and_grad(global_loss, argnums=(0, 1), has_aux=True))
  sharded = lambda t: jax.device_put(t, NamedSharding(mesh, P('data')))
  replicated = lambda t: jax.device_put(t, NamedSharding(mesh, P()))
  (loss, metrics), (g_params, g_x) = grad_fn(
    replicated(params), sharded(x), sharded(batch), replicated(bank), replicated(jnp.asarray(step))
  )
  np.testing.assert_allclose(float(loss), float(metrics['loss']), rtol=1e-10)
  return metrics, g_params, g_x


def _assert_same(got, want, rtol=1e-9):
  g_metrics, g_params, g_x = got
  w_metrics, w_params, w_x = want
  # One device counts every batch negative as local; sharded, most are cross-device.
  split = ('qpm_negatives_local', 'qpm_negatives_cross_device')
  if split[0] in w_metrics:
    np.testing.assert_allclose(
      float(g_metrics[split[0]] + g_metrics[split[1]]), float(w_metrics[split[0]]), rtol=rtol
    )
  for k in w_metrics:
    if k in split:
      continue
    np.testing.assert_allclose(
      np.asarray(g_metrics[k]), np.asarray(w_metrics[k]), rtol=rtol, atol=1e-12, err_msg=k
    )
  for path, a in jax.tree_util.tree_leaves_with_path(w_params):
    b = g_params
    for key in path:
      b = b[key.key]
    np.testing.assert_allclose(
      np.asarray(b), np.asarray(a), rtol=rtol, atol=1e-12, err_msg=f'param {path}'
    )
  for k in w_x:
    np.testing.assert_allclose(
      np.asarray(g_x[k]), np.asarray(w_x[k]), rtol=rtol, atol=1e-12, err_msg=f'input {k}'
    )


@pytest.mark.parametrize(
  'path', ['pmap', 'shard_map_grad_inside', 'shard_map_unchecked', 'shard_map_grad_outside']
)
def test_sharded_loss_and_gradients_equal_single_device(path):
  with jax.enable_x64(True):
    cfg = loss_cfg(**ALL_TERMS)
    params, x, batch, bank = make_data()
    step = 5  # CDNS on: every query sees the global batch and the queue.
    want = _single(cfg, params, x, batch, bank, step)
    assert float(want[0]['qpm_negatives_local']) > 0 and float(want[0]['qpm_negatives_bank']) > 0
    for k in ('dq', 'dp', 'regions'):  # Embedding and region gradients are not trivially zero.
      assert np.abs(np.asarray(want[2][k])).max() > 1e-3, k
    assert abs(float(want[1]['log_t'])) > 1e-3 and abs(float(want[1]['log_tau'])) > 1e-3
    run = {
      'pmap': _pmap,
      'shard_map_grad_inside': _shard_map_grad_inside,
      'shard_map_unchecked': functools.partial(_shard_map_grad_inside, check_vma=False),
      'shard_map_grad_outside': _shard_map_grad_outside,
    }[path]
    got = run(cfg, params, x, batch, bank, step)
    assert float(got[0]['qpm_negatives_cross_device']) > float(got[0]['qpm_negatives_local']) > 0
    _assert_same(got, want)


def _stop_gradient_gather(x, axis_name):
  if axis_name is None:
    return x
  return jax.lax.all_gather(jax.lax.stop_gradient(x), axis_name, axis=0, tiled=True)


def test_comparison_catches_a_gather_without_gradient_and_the_scaling_trap(monkeypatch):
  with jax.enable_x64(True):
    cfg = loss_cfg(mlm=0.0, mpm=0.0, mpm_r=0.0, qpm=1.0, qpc=0.0)
    params, x, batch, bank = make_data(1)
    want = _single(cfg, params, x, batch, bank, 5)
    _assert_same(_pmap(cfg, params, x, batch, bank, 5), want)  # The right one passes ...
    # ... a psum-ed loss differentiated on every device scales the gradients ...
    with pytest.raises(AssertionError, match='param|input'):
      _assert_same(_pmap(cfg, params, x, batch, bank, 5, wrong_psum=True), want)
    # ... and a gather that drops the cross-device gradient is caught.
    monkeypatch.setattr(collectives, 'all_gather', _stop_gradient_gather)
    with pytest.raises(AssertionError, match='param|input'):
      _assert_same(_pmap(cfg, params, x, batch, bank, 5), want)


def test_cdns_switches_on_at_the_configured_step_without_recompiling():
  with jax.enable_x64(True):
    cfg = loss_cfg(mlm=0.0, mpm=0.0, mpm_r=0.0, qpm=1.0, qpc=1.0)
    params, x, batch, bank = make_data(2)
    traces = []

    def per_device(params, x, batch, bank, step):
      traces.append(1)
      return compute_losses(
        linear_model(params, x),
        batch,
        cfg,
        step=step,
        num_steps=NUM_STEPS,
        bank=bank,
        axis_name='data',
      )[1]

    f = jax.pmap(per_device, axis_name='data', in_axes=(None, 0, 0, None, None))
    out = {
      s: jax.tree.map(
        lambda a: float(a[0]), f(params, _split(x), _split(batch), bank, jnp.asarray(s))
      )
      for s in (4, 5)
    }
    assert len(traces) == 1  # `step` is traced: the switch does not recompile.
    assert out[4]['qpm_negatives_cross_device'] == 0.0 and out[4]['qpm_cdns_on'] == 0.0
    assert out[5]['qpm_negatives_cross_device'] > 0.0 and out[5]['qpm_cdns_on'] == 1.0
    assert out[4]['qpm_negatives_local'] == out[5]['qpm_negatives_local']

    # Before the switch: each query sees only its device's rows (and the queue).
    m = linear_model(params, x)
    b_emb, b_logp, b_ids, b_valid = (np.asarray(a) for a in bank.negatives())
    dev = np.repeat(np.arange(N_DEV), PER_DEV)
    for s, on in ((4, False), (5, True)):
      ref, st = naive_qpm(
          np.asarray(m['query_emb']), np.asarray(m['product_emb']), np.asarray(batch['log_p']),
          np.asarray(batch['product_id']), 0.3, device_of_row=dev, cdns_on=on,
          bank=(b_emb, b_logp, b_ids, b_valid),
      )  # fmt: skip
      np.testing.assert_allclose(out[s]['qpm'], ref, rtol=1e-9)
      assert out[s]['qpm_negatives_cross_device'] == pytest.approx(st['n_cross'] / GB)
      assert out[s]['qpm_negatives_local'] == pytest.approx(st['n_local'] / GB)

    # QPC follows the same schedule: before the switch each device's queries are classified
    # among its own products only (the mean of per-device QPCs), from it among the global batch.
    qpc_args = lambda rows: (
      np.asarray(m['query_emb'])[rows], np.asarray(m['product_emb'])[rows],
      np.asarray(batch['product_id'])[rows], cfg.qpc_scale, cfg.qpc_margin,
    )  # fmt: skip
    per_device = [naive_qpc(*qpc_args(dev == d)) for d in range(N_DEV)]
    np.testing.assert_allclose(out[4]['qpc'], np.mean(per_device), rtol=1e-9)
    np.testing.assert_allclose(out[5]['qpc'], naive_qpc(*qpc_args(slice(None))), rtol=1e-9)
    assert abs(out[5]['qpc'] - out[4]['qpc']) > 1e-3


def test_mpm_r_per_device_denominator_when_cross_device_is_off():
  with jax.enable_x64(True):
    cfg = loss_cfg(mlm=0.0, mpm=0.0, mpm_r=1.0, qpm=0.0, qpc=0.0)
    cfg.mpm_r_cross_device = False
    params, x, batch, bank = make_data(3)

    def per_device(params, x, batch):
      return compute_losses(
        linear_model(params, x),
        batch,
        cfg,
        step=0,
        num_steps=NUM_STEPS,
        bank=bank,
        axis_name='data',
      )[1]

    got = jax.pmap(per_device, axis_name='data', in_axes=(None, 0, 0))(
      params, _split(x), _split(batch)
    )
    m = linear_model(params, x)
    ref = naive_mpm_r(
        np.asarray(m['mpm_target']), np.asarray(m['mpm_r_pred']), np.asarray(batch['mpm_mask']),
        np.asarray(batch['image_missing']), 0.5, device_of_image=np.repeat(np.arange(N_DEV), PER_DEV),
    )  # fmt: skip
    np.testing.assert_allclose(float(got['mpm_r'][0]), ref, rtol=1e-9)
    cross = naive_mpm_r(
        np.asarray(m['mpm_target']), np.asarray(m['mpm_r_pred']), np.asarray(batch['mpm_mask']),
        np.asarray(batch['image_missing']), 0.5,
    )  # fmt: skip
    assert abs(cross - ref) > 1e-3
