"""AdamW and its schedule (SPEC section 6): the learning rate a run actually gets, and no decay
of biases, norms and temperatures (decaying a log-temperature pulls the temperature to 1).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import base
from make_jax.train import optimizer


def _optim(**overrides):
  optim = base.get_config().optim
  for k, v in overrides.items():
    optim[k] = v
  return optim


def test_schedule_warms_up_linearly_then_decays_linearly_to_zero():
  lr, n = 1e-3, 100
  schedule = optimizer.learning_rate_schedule(_optim(learning_rate=lr, warmup_fraction=0.2), n)
  rates = np.array([float(schedule(s)) for s in range(n + 11)])
  assert rates[0] == 0.0
  assert rates[20] == pytest.approx(lr, rel=1e-6)  # Peak exactly at 0.2 * num_steps.
  assert rates.max() == pytest.approx(lr, rel=1e-6) and rates.argmax() == 20
  np.testing.assert_allclose(rates[:21], lr * np.arange(21) / 20, rtol=1e-6, atol=1e-12)
  np.testing.assert_allclose(rates[20:101], lr * (1 - np.arange(81) / 80), rtol=1e-6, atol=1e-12)
  np.testing.assert_allclose(rates[100:], 0.0, atol=1e-12)  # Stays 0 past num_steps.


def test_zero_warmup_starts_at_the_peak():
  schedule = optimizer.learning_rate_schedule(_optim(learning_rate=2e-3, warmup_fraction=0.0), 10)
  np.testing.assert_allclose(
    [float(schedule(s)) for s in range(11)], 2e-3 * (1 - np.arange(11) / 10), rtol=1e-6, atol=1e-12
  )


@pytest.mark.parametrize(
  'num_steps, warmup, match',
  [
    (0, 0.2, 'num_steps'),
    (-5, 0.2, 'num_steps'),
    (100, 1.0, 'warmup_fraction'),
    (100, -0.1, 'warmup_fraction'),
  ],
)
def test_bad_schedule_settings_are_rejected(num_steps, warmup, match):
  with pytest.raises(ValueError, match=match):
    optimizer.make_optimizer(_optim(warmup_fraction=warmup), num_steps)


def test_weight_decay_skips_biases_norms_and_temperatures():
  params = {
    'dense': {'kernel': jnp.full((3, 4), 2.0), 'bias': jnp.full((4,), 2.0)},
    'embedding': jnp.full((5, 3), -1.0),
    'ln': {'scale': jnp.full((4,), 2.0), 'bias': jnp.full((4,), 2.0)},
    'log_qpm_temperature': jnp.asarray(np.log(0.05), jnp.float32),
  }
  lr, wd = 1e-2, 0.1
  tx = optimizer.make_optimizer(
    _optim(learning_rate=lr, warmup_fraction=0.0, weight_decay=wd, grad_clip_norm=0.0), 10
  )
  grads = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  # Zero gradients: Adam's step is 0, so what is left is the decoupled decay -lr * wd * p.
  np.testing.assert_allclose(updates['dense']['kernel'], -lr * wd * 2.0, rtol=1e-6)
  np.testing.assert_allclose(updates['embedding'], lr * wd * 1.0, rtol=1e-6)
  for leaf in (
    updates['dense']['bias'],
    updates['ln']['scale'],
    updates['ln']['bias'],
    updates['log_qpm_temperature'],
  ):
    np.testing.assert_array_equal(leaf, 0.0)


def test_clipping_bounds_the_gradient_seen_by_adam():
  params = {'w': jnp.ones((2, 2))}
  grads = {'w': jnp.full((2, 2), 100.0)}  # Global norm 200.
  moments = {}
  for clip in (0.0, 1.0):
    tx = optimizer.make_optimizer(
      _optim(warmup_fraction=0.0, weight_decay=0.0, grad_clip_norm=clip), 10
    )
    _, state = tx.update(grads, tx.init(params), params)
    moments[clip] = float(jnp.abs(optax.tree.get(state, 'mu')['w']).max())
  # mu = (1 - b1) * g: the clipped gradient has norm 1 (entries 0.5).
  assert moments[0.0] == pytest.approx(0.1 * 100.0, rel=1e-6)
  assert moments[1.0] == pytest.approx(0.1 * 0.5, rel=1e-6)


def test_pretrained_modules_learn_at_their_own_rate():
  """Two AdamW groups: Adam's first step moves every weight by its group's rate."""
  optim = _optim(
    learning_rate=1e-2,
    warmup_fraction=0.0,
    pretrained_learning_rate=1e-4,
    pretrained_warmup_fraction=0.5,
    pretrained_modules=('query_encoder', 'title_encoder'),
    weight_decay=0.0,
    grad_clip_norm=0.0,
  )
  params = {
    'query_encoder': {'kernel': jnp.ones((2, 3))},
    'title_encoder': {'bias': jnp.ones((3,))},
    'query_proj': {'kernel': jnp.ones((3, 3))},
  }
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.3), params)
  tx = optimizer.make_optimizer(optim, 10)
  state = tx.init(params)
  rates = []
  for _ in range(6):
    updates, state = tx.update(grads, state, params)
    rates.append({k: float(-v[next(iter(v))].ravel()[0]) for k, v in updates.items()})
  # New parts: peak at once (no warm-up), then linear decay over 10 steps.
  np.testing.assert_allclose(
    [r['query_proj'] for r in rates], 1e-2 * (1 - np.arange(6) / 10), rtol=1e-3
  )
  # Pretrained: warm-up over 5 steps to 1e-4, in both encoders.
  for name in ('query_encoder', 'title_encoder'):
    np.testing.assert_allclose(
      [r[name] for r in rates], 1e-4 * np.arange(6) / 5, rtol=1e-3, atol=1e-9
    )
  labels = optimizer.param_groups(optim, params)
  assert labels == {
    'query_encoder': {'kernel': 'pretrained'},
    'title_encoder': {'bias': 'pretrained'},
    'query_proj': {'kernel': 'new'},
  }
