"""MakeModel on the tiny config: outputs of contract 4, Modal Adaptation, padding, gradients."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.linen import meta

from configs import tiny
from make_jax.models.heads import mlm_max_predictions
from make_jax.models.make_model import OUTPUT_KEYS, MakeModel, build_model, example_batch
from make_jax.models.model_config import ModelConfig
from make_jax.train.masking import mask_batch

B = 4


@pytest.fixture(scope='module')
def config():
  return tiny.get_config()


@pytest.fixture(scope='module')
def model(config):
  return build_model(config)


def random_batch(config, seed=0):
  """A random batch of contract 2 with padding and one image-missing product."""
  rs = np.random.RandomState(seed)
  b = example_batch(config, B)
  for field, length in (('query', config.text.query_len), ('title', config.text.title_len)):
    lengths = rs.randint(3, length + 1, size=B)
    lengths[0] = length
    mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
    ids = rs.randint(5, config.model.vocab_size, size=(B, length)).astype(np.int32)
    ids[:, 0] = 2
    ids[np.arange(B), lengths - 1] = 3
    b[f'{field}_ids'] = np.where(mask > 0, ids, 0).astype(np.int32)
    b[f'{field}_clean_ids'] = b[f'{field}_ids']  # Unmasked: the retrieval pass reads the same.
    b[f'{field}_mask'] = mask
    b[f'{field}_keyword'] = (rs.rand(B, length) < 0.3).astype(np.int32) * mask
  b['image'] = rs.randint(0, 256, size=b['image'].shape).astype(np.uint8)
  b['image_missing'] = np.array([False, True, False, False])
  b['product_id'] = np.arange(B, dtype=np.int32)
  b['log_p'] = np.log(np.full(B, 0.1, np.float32))
  b['mpm_mask'] = (rs.rand(B, 16) < 0.3).astype(np.float32) * ~b['image_missing'][:, None]
  return b


def _every_position(batch):
  """`batch` with MLM positions covering every token: the head then projects them all."""
  out = dict(batch)
  for field in ('query', 'title'):
    b, length = batch[f'{field}_ids'].shape
    out[f'mlm_{field}_positions'] = np.broadcast_to(np.arange(length, dtype=np.int32), (b, length))
  return out


def _masked(config, seed):
  """`random_batch` after MLM / MPM masking (ids as the tiny tests' vocabulary has them)."""
  return mask_batch(
    random_batch(config),
    jax.random.key(seed),
    config.masking,
    pad_id=0,
    cls_id=2,
    sep_id=3,
    mask_id=4,
    vocab_size=config.model.vocab_size,
    num_regions=16,
  )


@pytest.fixture(scope='module')
def params(model, config):
  variables = jax.jit(lambda r, b: model.init({'params': r}, b))(
    jax.random.key(0), random_batch(config)
  )
  return meta.unbox(variables)['params']


@pytest.fixture(scope='module')
def forward(model):
  return jax.jit(lambda p, b: model.apply({'params': p}, b))


def test_outputs_shapes_dtypes_and_invariants(config, params, forward):
  out = forward(params, random_batch(config))
  assert set(out) == set(OUTPUT_KEYS)
  lq, lt, v, d, h = (
    mlm_max_predictions(config.text.query_len, config.masking.mlm_prob),
    mlm_max_predictions(config.text.title_len, config.masking.mlm_prob),
    config.model.vocab_size,
    config.model.embed_dim,
    config.model.hidden_size,
  )
  expect = {
    'query_emb': (B, d),
    'product_emb': (B, d),
    'modal_weights': (B, 2),
    'mlm_query_logits': (B, lq, v),
    'mlm_title_logits': (B, lt, v),
    'mpm_pred': (B, 16, h),
    'mpm_r_pred': (B, 16, h),
    'mpm_target': (B, 16, h),
    'qpm_temperature': (),
    'mpm_r_tau': (),
  }
  for key, shape in expect.items():
    assert out[key].shape == shape, key
    assert out[key].dtype == jnp.float32, key
    assert np.isfinite(np.asarray(out[key])).all(), key
  for key in ('query_emb', 'product_emb'):
    np.testing.assert_allclose(np.linalg.norm(out[key], axis=-1), 1.0, atol=1e-5)
  w = np.asarray(out['modal_weights'])
  np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-6)
  assert (w >= 0).all()
  np.testing.assert_array_equal(w[1], [1.0, 0.0])  # image-missing product
  np.testing.assert_allclose(out['qpm_temperature'], config.loss.qpm_temperature, rtol=1e-6)
  np.testing.assert_allclose(out['mpm_r_tau'], config.loss.mpm_r_tau, rtol=1e-6)


def test_image_missing_product_ignores_pixels(config, params, forward):
  b1 = random_batch(config)
  b2 = dict(b1, image=255 - b1['image'])
  o1, o2 = forward(params, b1), forward(params, b2)
  # Row 1 has no image: bit-identical embedding and weights (1, 0) whatever the pixels.
  np.testing.assert_array_equal(o1['product_emb'][1], o2['product_emb'][1])
  np.testing.assert_array_equal(o1['modal_weights'][1], [1.0, 0.0])
  # The others do depend on their image (so the comparison above can fail).
  for i in (0, 2, 3):
    assert np.abs(o1['product_emb'][i] - o2['product_emb'][i]).max() > 1e-4
  # Each product is encoded independently of the other rows.
  np.testing.assert_array_equal(o1['query_emb'], o2['query_emb'])


def test_padding_tokens_do_not_change_outputs(config, params, forward):
  b1 = random_batch(config)
  b2 = dict(b1)
  rs = np.random.RandomState(7)
  for field in ('query', 'title'):
    junk = rs.randint(0, config.model.vocab_size, size=b1[f'{field}_ids'].shape)
    b2[f'{field}_ids'] = np.where(b1[f'{field}_mask'] > 0, b1[f'{field}_ids'], junk).astype(
      np.int32
    )
  assert (b2['title_ids'] != b1['title_ids']).any()
  b1, b2 = _every_position(b1), _every_position(b2)
  o1, o2 = forward(params, b1), forward(params, b2)
  for key in ('query_emb', 'product_emb', 'modal_weights', 'mpm_r_pred'):
    np.testing.assert_allclose(o1[key], o2[key], atol=1e-6, err_msg=key)
  for field in ('query', 'title'):
    real = b1[f'{field}_mask'] > 0
    np.testing.assert_allclose(
      np.asarray(o1[f'mlm_{field}_logits'])[real],
      np.asarray(o2[f'mlm_{field}_logits'])[real],
      atol=1e-5,
    )


def test_encode_methods_match_training_outputs(config, model, params, forward):
  b = random_batch(config)
  b.pop('mpm_mask')  # Serving encodes unmasked images.
  out = forward(params, b)
  encode_query = jax.jit(lambda p, i, m: model.apply(p, i, m, method=MakeModel.encode_query))
  encode_product = jax.jit(lambda p, *args: model.apply(p, *args, method=MakeModel.encode_product))
  q = encode_query({'params': params}, b['query_ids'], b['query_mask'])
  p, w = encode_product(
    {'params': params}, b['title_ids'], b['title_mask'], b['image'], b['image_missing']
  )
  np.testing.assert_allclose(q, out['query_emb'], atol=1e-6)
  np.testing.assert_allclose(p, out['product_emb'], atol=1e-6)
  np.testing.assert_allclose(w, out['modal_weights'], atol=1e-6)


def test_retrieval_embeddings_come_from_the_unmasked_inputs(config, model, params, forward):
  clean = random_batch(config)
  clean.pop('mpm_mask')
  masked = _masked(config, 3)
  assert (masked['query_ids'] != clean['query_ids']).any()  # Something was masked.
  for field in ('query', 'title'):  # The MLM head reads the same positions in both.
    clean[f'mlm_{field}_positions'] = masked[f'mlm_{field}_positions']
  out_clean, out_masked = forward(params, clean), forward(params, masked)
  for key in ('query_emb', 'product_emb', 'modal_weights'):
    np.testing.assert_allclose(out_masked[key], out_clean[key], atol=1e-6)
  # The masked pass still feeds MLM: its logits differ where tokens were masked.
  assert np.abs(out_masked['mlm_query_logits'] - out_clean['mlm_query_logits']).max() > 1e-3
  # The single-pass ablation takes the embeddings from the masked inputs instead.
  one_pass = MakeModel(dataclasses.replace(model.cfg, retrieval_from_unmasked=False))
  out_one = jax.jit(lambda p, b: one_pass.apply({'params': p}, b))(params, masked)
  assert np.abs(out_one['query_emb'] - out_clean['query_emb']).max() > 1e-4


def test_region_masking_changes_only_image_side(config, params, forward):
  b1 = random_batch(config)
  b2 = dict(b1, mpm_mask=np.zeros_like(b1['mpm_mask']))
  o1, o2 = forward(params, b1), forward(params, b2)
  # Targets are the unmasked region features; predictions see the masked input.
  np.testing.assert_allclose(o1['mpm_target'], o2['mpm_target'], atol=1e-6)
  assert np.abs(o1['mpm_r_pred'][0] - o2['mpm_r_pred'][0]).max() > 1e-4
  np.testing.assert_allclose(o1['query_emb'], o2['query_emb'], atol=1e-6)


def _stand_in_loss(out, batch):
  """A scalar touching every output of contract 4 (no real objective)."""
  mlm = sum(
    jnp.mean(jax.nn.logsumexp(out[f'mlm_{f}_logits'], -1) * batch[f'mlm_{f}_weights'])
    for f in ('query', 'title')
  )
  sim = out['query_emb'] @ out['product_emb'].T / out['qpm_temperature']
  mpm = jnp.mean((out['mpm_pred'] - out['mpm_target']) ** 2)
  mpm_r = jnp.mean(jnp.sum(out['mpm_r_pred'] * out['mpm_target'], -1)) / out['mpm_r_tau']
  gate = jnp.sum(out['modal_weights'][:, 1] ** 2)
  return jnp.mean(jax.nn.log_softmax(sim)) + mlm + mpm + mpm_r + gate


def _real_loss(out, batch, config):
  from make_jax.losses.total import compute_losses

  loss_cfg = config.loss.copy_and_resolve_references()
  with loss_cfg.unlocked():
    for k in loss_cfg.weights:  # qpm_image needs the matching head the model may not have.
      loss_cfg.weights[k] = 1.0 if k != 'qpm_image' or 'image_emb' in out else 0.0
    loss_cfg.bank_batches = 0
  loss, _ = compute_losses(out, batch, loss_cfg, step=0, num_steps=10, bank=None)
  return loss


def _objective() -> str:
  """The real objective once make_jax/losses is importable, else the stand-in."""
  try:
    import make_jax.losses.total  # noqa: F401
  except ImportError:
    return 'stand_in'
  return 'compute_losses'


def test_gradients_reach_every_parameter(config, model, params):
  objective = _objective()
  batch = _masked(config, 1)

  def loss_fn(p):
    out = model.apply({'params': p}, batch, train=True, rngs={'dropout': jax.random.key(2)})
    if objective == 'stand_in':
      return _stand_in_loss(out, batch)
    return _real_loss(out, batch, config)

  loss, grads = jax.jit(jax.value_and_grad(loss_fn))(params)
  assert np.isfinite(loss)
  flat = jax.tree_util.tree_flatten_with_path(grads)[0]
  none = [jax.tree_util.keystr(k) for k, g in flat if not np.any(np.asarray(g) != 0)]
  nan = [jax.tree_util.keystr(k) for k, g in flat if not np.isfinite(np.asarray(g)).all()]
  assert not none, f'parameters without gradient: {none}'
  assert not nan, f'parameters with non-finite gradient: {nan}'


def test_modal_adaptation_off_uses_equal_weights(config):
  cfg = dataclasses.replace(
    ModelConfig.from_config(config), modal_adaptation=False, num_layers=1, image_num_layers=1
  )
  model = MakeModel(cfg)
  b = random_batch(config)
  out, variables = jax.jit(lambda r, b: model.init_with_output({'params': r}, b))(
    jax.random.key(0), b
  )
  assert 'fusion' not in variables['params'] and 'gate_out' not in variables['params']
  np.testing.assert_array_equal(out['modal_weights'], [[0.5, 0.5], [1, 0], [0.5, 0.5], [0.5, 0.5]])


def test_bad_batch_is_a_clear_error(config, model, params):
  b = random_batch(config)
  b.pop('image_missing')
  with pytest.raises(ValueError, match="missing 'image_missing'"):
    model.apply({'params': params}, b)
  # The retrieval pass never falls back to the masked ids: no clean ids, no forward pass.
  b = random_batch(config)
  b.pop('title_clean_ids')
  with pytest.raises(ValueError, match="missing 'title_clean_ids'"):
    model.apply({'params': params}, b)
  b = random_batch(config)
  b['image'] = b['image'][..., :1]
  with pytest.raises(ValueError, match=r'image must be \[batch, size, size, 3\]'):
    jax.eval_shape(lambda: model.apply({'params': params}, b))


def test_parameters_do_not_depend_on_the_init_batch(config, model, params):
  """The [MASK] region vector exists whether or not the init batch carries an mpm_mask."""
  b = random_batch(config)
  b.pop('mpm_mask')
  shapes = lambda p: jax.tree.map(lambda x: (x.shape, x.dtype), p)
  without = jax.eval_shape(lambda: meta.unbox(model.init(jax.random.key(0), b))['params'])
  assert shapes(without) == shapes(params)
  assert 'mask_region' in params['image_encoder']


def test_fixed_qpm_temperature_is_not_a_parameter(config):
  """The model owns only what it trains: a fixed temperature lives in cfg.loss alone."""
  cfg = dataclasses.replace(
    ModelConfig.from_config(config), qpm_learn_temperature=False, num_layers=1, image_num_layers=1
  )
  out, variables = jax.eval_shape(
    lambda: MakeModel(cfg).init_with_output(jax.random.key(0), random_batch(config))
  )
  assert 'log_qpm_temperature' not in variables['params'] and 'qpm_temperature' not in out
  assert 'log_mpm_r_tau' in variables['params'] and 'mpm_r_tau' in out


def _mlm_only_loss(model, config):
  from make_jax.losses.total import compute_losses

  loss_cfg = config.loss.copy_and_resolve_references()
  with loss_cfg.unlocked():
    for k in loss_cfg.weights:
      loss_cfg.weights[k] = 1.0 if k == 'mlm' else 0.0

  def loss(p, b):
    out = model.apply({'params': p}, b)
    return compute_losses(out, b, loss_cfg, step=0, num_steps=10)[0]

  return loss


def _full_head_batch(batch):
  """The same masks laid out over every position: what a head projecting all tokens reads."""
  full = _every_position(batch)
  for field in ('query', 'title'):
    b, length = batch[f'{field}_ids'].shape
    weights = np.zeros((b, length), np.float32)
    rows = np.arange(b)[:, None]
    np.add.at(weights, (rows, batch[f'mlm_{field}_positions']), batch[f'mlm_{field}_weights'])
    full[f'mlm_{field}_weights'] = weights
    full[f'mlm_{field}_labels'] = batch[f'{field}_clean_ids']
  return full


def test_gathered_mlm_head_equals_the_full_head(config, model, params):
  """Logits only at the K predicted positions: same loss and gradients as every position's."""
  batch = jax.tree.map(np.asarray, _masked(config, 5))
  full = _full_head_batch(batch)
  lq = config.text.query_len
  assert batch['mlm_query_positions'].shape[1] < lq  # The gathered head really is smaller.
  assert batch['mlm_query_weights'].sum() > 0 and batch['mlm_title_weights'].sum() > 0
  # Every chosen token is in a slot once: scattered weights are 0/1 on masked-or-chosen tokens.
  for field in ('query', 'title'):
    assert set(np.unique(full[f'mlm_{field}_weights'])) <= {0.0, 1.0}
  grad = jax.jit(jax.value_and_grad(_mlm_only_loss(model, config)))
  (got, g_got), (want, g_want) = grad(params, batch), grad(params, full)
  assert np.isfinite(float(want)) and float(want) > 0
  np.testing.assert_allclose(float(got), float(want), rtol=1e-6)
  flat_got = jax.tree_util.tree_leaves_with_path(g_got)
  flat_want = jax.tree.leaves(g_want)
  scale = max(float(np.abs(np.asarray(w)).max()) for w in flat_want)
  nonzero = 0
  for (path, g), w in zip(flat_got, flat_want, strict=True):
    np.testing.assert_allclose(
      g, w, rtol=1e-5, atol=1e-6 * scale, err_msg=jax.tree_util.keystr(path)
    )
    nonzero += bool(np.abs(np.asarray(w)).max() > 0)
  assert nonzero > 10  # MLM reaches the encoders and the head, not just the bias.
