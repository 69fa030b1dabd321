"""Pre-training losses (SPEC sections 4-5), written once against an optional axis name.

`compute_losses` (total.py) is the entry point; `reduce_gradients` (collectives.py) is the
parameter-gradient reduction the trainer applies to the gradient of the returned share.
"""

from make_jax.losses.mlm import mlm_loss
from make_jax.losses.mpm import mpm_loss, mpm_r_loss
from make_jax.losses.qpc import qpc_loss
from make_jax.losses.qpm import qpm_loss, start_step
from make_jax.losses.total import compute_losses
from make_jax.parallel.collectives import reduce_gradients

__all__ = [
  'start_step',
  'compute_losses',
  'mlm_loss',
  'mpm_loss',
  'mpm_r_loss',
  'qpc_loss',
  'qpm_loss',
  'reduce_gradients',
]
