"""The registered loss terms: adapters from (model outputs, batch, config) to the loss functions.

Key names are the shared contracts: model outputs (contract 4), batch keys (contracts 2-3),
and the fields of `cfg.loss` in configs/base.py.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from make_jax.losses import mlm, mpm, qpc, qpm, registry


def _qpm_against(product_key, name, outputs, batch, loss_cfg, ctx, **bank_kw):
  """`qpm.qpm_loss` of the queries against `outputs[product_key]` with cfg.loss's
  temperature (the model's learned one or the constant), CDNS schedule, in-batch weight and
  log-p correction; `bank_kw` (bank, bank_start_step, w_mbns) adds MBNS."""
  registry.require(outputs, ('query_emb', product_key), name, 'model output')
  registry.require(batch, ('log_p', 'product_id'), name, 'batch')
  if loss_cfg.qpm_learn_temperature:
    # The model owns (and trains) the temperature.
    registry.require(outputs, ('qpm_temperature',), name, 'model output')
    temperature = outputs['qpm_temperature']
  else:
    temperature = jnp.asarray(loss_cfg.qpm_temperature, jnp.float32)
  return qpm.qpm_loss(
    outputs['query_emb'],
    outputs[product_key],
    batch['log_p'],
    batch['product_id'],
    temperature,
    step=ctx.step,
    cdns_start=qpm.start_step(
      loss_cfg.cdns_start_fraction, ctx.num_steps, 'loss.cdns_start_fraction'
    ),
    w_batch=loss_cfg.w_batch,
    logp_correction=loss_cfg.logp_correction,
    axis_name=ctx.axis_name,
    **bank_kw,
  )


@registry.register('qpm')
def qpm_term(outputs, batch, loss_cfg, ctx: registry.LossContext):
  """Paper eq. 3 with CDNS from cfg.loss.cdns_start_fraction and MBNS from the bank."""
  bank = ctx.bank
  if loss_cfg.bank_batches > 0:
    if bank is None:
      raise ValueError('cfg.loss.bank_batches > 0 but no memory bank was passed (bank=None)')
    if bank.num_batches != loss_cfg.bank_batches:
      raise ValueError(
        f'memory bank holds {bank.num_batches} batches, cfg.loss.bank_batches is '
        f'{loss_cfg.bank_batches}'
      )
  else:
    bank = None
  return _qpm_against(
    'product_emb',
    'qpm',
    outputs,
    batch,
    loss_cfg,
    ctx,
    bank=bank,
    bank_start_step=qpm.start_step(
      loss_cfg.bank_start_fraction, ctx.num_steps, 'loss.bank_start_fraction'
    ),
    w_mbns=loss_cfg.w_mbns,
  )


@registry.register('qpm_image')
def qpm_image_term(outputs, batch, loss_cfg, ctx: registry.LossContext):
  """QPM between the queries and the image tower alone (`image_emb`): in-batch / CDNS
  negatives as QPM, no queue. It trains the image tower by itself, so that the image has
  something to offer before Modal Adaptation weighs it (a pretrained start begins with the
  image at zero weight). Image-missing products are scored like any other (a blank image)."""
  share, metrics = _qpm_against('image_emb', 'qpm_image', outputs, batch, loss_cfg, ctx)
  return share, {'qpm_image' + k.removeprefix('qpm'): v for k, v in metrics.items()}


@registry.register('qpc')
def qpc_term(outputs, batch, loss_cfg, ctx: registry.LossContext):
  """AM-Softmax with cfg.loss's scale and margin, on QPM's CDNS schedule."""
  registry.require(outputs, ('query_emb', 'product_emb'), 'qpc', 'model output')
  registry.require(batch, ('product_id',), 'qpc', 'batch')
  return qpc.qpc_loss(
    outputs['query_emb'],
    outputs['product_emb'],
    batch['product_id'],
    loss_cfg.qpc_scale,
    loss_cfg.qpc_margin,
    step=ctx.step,
    cdns_start=qpm.start_step(
      loss_cfg.cdns_start_fraction, ctx.num_steps, 'loss.cdns_start_fraction'
    ),
    axis_name=ctx.axis_name,
  )


@registry.register('mlm')
def mlm_term(outputs, batch, loss_cfg, ctx: registry.LossContext):
  """Pooled query and title MLM."""
  del loss_cfg
  registry.require(outputs, ('mlm_query_logits', 'mlm_title_logits'), 'mlm', 'model output')
  registry.require(
    batch,
    ('mlm_query_labels', 'mlm_query_weights', 'mlm_title_labels', 'mlm_title_weights'),
    'mlm',
    'batch',
  )
  return mlm.mlm_loss(
    outputs['mlm_query_logits'],
    batch['mlm_query_labels'],
    batch['mlm_query_weights'],
    outputs['mlm_title_logits'],
    batch['mlm_title_labels'],
    batch['mlm_title_weights'],
    axis_name=ctx.axis_name,
  )


def _target(outputs, loss_cfg):
  target = outputs['mpm_target']
  # The one place the targets' gradient is stopped (the model returns them as computed).
  if loss_cfg.mpm_stop_gradient_target:
    target = lax.stop_gradient(target)
  return target


@registry.register('mpm')
def mpm_term(outputs, batch, loss_cfg, ctx: registry.LossContext):
  """Regression MPM over masked regions."""
  registry.require(outputs, ('mpm_pred', 'mpm_target'), 'mpm', 'model output')
  registry.require(batch, ('mpm_mask',), 'mpm', 'batch')
  return mpm.mpm_loss(
    outputs['mpm_pred'], _target(outputs, loss_cfg), batch['mpm_mask'], axis_name=ctx.axis_name
  )


@registry.register('mpm_r')
def mpm_r_term(outputs, batch, loss_cfg, ctx: registry.LossContext):
  """Contrastive MPM_R (paper eq. 1-2)."""
  registry.require(outputs, ('mpm_r_pred', 'mpm_target', 'mpm_r_tau'), 'mpm_r', 'model output')
  registry.require(batch, ('mpm_mask', 'image_missing'), 'mpm_r', 'batch')
  return mpm.mpm_r_loss(
    outputs['mpm_r_pred'],
    _target(outputs, loss_cfg),
    batch['mpm_mask'],
    batch['image_missing'],
    outputs['mpm_r_tau'],
    cross_device=loss_cfg.mpm_r_cross_device,
    axis_name=ctx.axis_name,
  )
