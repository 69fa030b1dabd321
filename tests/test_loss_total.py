"""compute_losses: the weighted sum, switching terms off, and clear errors for bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_loss_sharded import ALL_TERMS, NUM_STEPS, linear_model, loss_cfg, make_data

from make_jax.losses import (
  compute_losses,
  mlm_loss,
  mpm_loss,
  mpm_r_loss,
  qpc_loss,
  qpm_loss,
  registry,
)
from make_jax.losses.memory_bank import MemoryBank


def _run(cfg, outputs, batch, bank, step=5):
  # jit: one compilation instead of op-by-op dispatch; errors still raise while tracing.
  f = jax.jit(lambda o, b, k, s: compute_losses(o, b, cfg, step=s, num_steps=NUM_STEPS, bank=k))
  return f(outputs, batch, bank, step)


def test_total_is_the_configured_weighted_sum_of_the_terms():
  cfg = loss_cfg(**ALL_TERMS)
  with jax.enable_x64(True):
    params, x, batch, bank = make_data(4)
    out = linear_model(params, x)
    total, metrics = _run(cfg, out, batch, bank)

    def terms(out, batch, bank):
      sg_target = jax.lax.stop_gradient(out['mpm_target'])
      return {
          'qpm': qpm_loss(
              out['query_emb'], out['product_emb'], batch['log_p'], batch['product_id'],
              out['qpm_temperature'], step=5, cdns_start=5, bank=bank,
          )[0],
          'qpc': qpc_loss(out['query_emb'], out['product_emb'], batch['product_id'], cfg.qpc_scale, cfg.qpc_margin)[0],
          'mlm': mlm_loss(
              out['mlm_query_logits'], batch['mlm_query_labels'], batch['mlm_query_weights'],
              out['mlm_title_logits'], batch['mlm_title_labels'], batch['mlm_title_weights'],
          )[0],
          'mpm': mpm_loss(out['mpm_pred'], sg_target, batch['mpm_mask'])[0],
          'mpm_r': mpm_r_loss(out['mpm_r_pred'], sg_target, batch['mpm_mask'], batch['image_missing'], out['mpm_r_tau'])[0],
      }  # fmt: skip

    direct = jax.jit(terms)(out, batch, bank)
    want = sum(ALL_TERMS[k] * float(v) for k, v in direct.items())
    np.testing.assert_allclose(float(total), want, rtol=1e-12)
    np.testing.assert_allclose(float(metrics['loss']), want, rtol=1e-12)
    for k, v in direct.items():
      np.testing.assert_allclose(float(metrics[k]), float(v), rtol=1e-12, err_msg=k)
      assert float(v) > 0


def test_weight_zero_skips_the_term_and_its_inputs():
  params, x, batch, bank = make_data(5)
  out = linear_model(params, x)
  for key in ('mpm_pred', 'mpm_r_pred', 'mlm_query_logits', 'mlm_title_logits'):
    del out[key]  # Not needed: those terms are off.
  cfg = loss_cfg(mlm=0.0, mpm=0.0, mpm_r=0.0, qpm=1.0, qpc=0.0)
  total, metrics = _run(cfg, out, batch, bank)
  assert 'mlm' not in metrics and 'mpm_r' not in metrics and 'qpc' not in metrics
  np.testing.assert_allclose(float(total), float(metrics['qpm']), rtol=1e-6)
  cfg.weights.mpm_r = 1.0
  with pytest.raises(ValueError, match="'mpm_r' needs model output keys \\['mpm_r_pred'\\]"):
    _run(cfg, out, batch, bank)


def test_stop_gradient_target_follows_the_config():
  params, x, batch, bank = make_data(6)
  cfg = loss_cfg(mlm=0.0, mpm=1.0, mpm_r=1.0, qpm=0.0, qpc=0.0)

  def grad_wrt_target(stop):
    cfg.mpm_stop_gradient_target = stop

    def f(target):
      out = dict(linear_model(params, x), mpm_target=target)
      return _run(cfg, out, batch, bank)[0]

    return np.asarray(jax.grad(f)(x['regions']))

  assert np.all(grad_wrt_target(True) == 0.0)
  assert np.abs(grad_wrt_target(False)).max() > 1e-4


def test_bad_configs_and_inputs_raise_clear_errors():
  params, x, batch, bank = make_data(7)
  out = linear_model(params, x)
  cfg = loss_cfg(qpm=1.0)
  cfg.weights['contrastive'] = 1.0
  with pytest.raises(ValueError, match="unknown loss term 'contrastive'"):
    _run(cfg, out, batch, bank)
  with pytest.raises(ValueError, match='switches every term off'):
    _run(loss_cfg(mlm=0.0, mpm=0.0, mpm_r=0.0, qpm=0.0, qpc=0.0), out, batch, bank)
  with pytest.raises(ValueError, match='weights.qpc must be a number >= 0'):
    _run(loss_cfg(qpc=-1.0), out, batch, bank)
  with pytest.raises(ValueError, match='no memory bank was passed'):
    _run(loss_cfg(), out, batch, None)
  with pytest.raises(ValueError, match='memory bank holds 2 batches'):
    _run(loss_cfg(), out, batch, MemoryBank.create(2, 16, 4))
  no_t = {k: v for k, v in out.items() if k != 'qpm_temperature'}
  with pytest.raises(ValueError, match='qpm_temperature'):
    _run(loss_cfg(), no_t, batch, bank)
  # A fixed temperature comes from the config.
  cfg = loss_cfg(mlm=0.0, mpm=0.0, mpm_r=0.0, qpm=1.0, qpc=0.0)
  cfg.qpm_learn_temperature = False
  a = _run(cfg, no_t, batch, bank)[0]
  b = _run(cfg, dict(no_t, qpm_temperature=jnp.float32(cfg.qpm_temperature)), batch, bank)[0]
  assert float(a) == float(b)
  assert registry.names() == ['mlm', 'mpm', 'mpm_r', 'qpc', 'qpm', 'qpm_image']


def test_bank_start_fraction_gates_the_queue():
  """cfg.loss.bank_start_fraction 0.5 of 10 steps: queue negatives count from step 5 on."""
  params, x, batch, bank = make_data(8)
  assert bool(bank.valid.any())
  out = linear_model(params, x)
  cfg = loss_cfg(mlm=0.0, mpm=0.0, mpm_r=0.0, qpm=1.0, qpc=0.0)
  cfg.bank_start_fraction = 0.5
  counts = {s: float(_run(cfg, out, batch, bank, step=s)[1]['qpm_negatives_bank']) for s in (4, 5)}
  assert counts[4] == 0.0 and counts[5] > 0.0
  cfg.bank_start_fraction = 0.0
  assert float(_run(cfg, out, batch, bank, step=0)[1]['qpm_negatives_bank']) == counts[5]
  cfg.bank_start_fraction = 1.5
  with pytest.raises(ValueError, match=r'loss.bank_start_fraction must be in \[0, 1\]'):
    _run(cfg, out, batch, bank)
