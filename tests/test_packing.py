"""Sequence packing (`data.pack_text`): fewer tokens, the same model.

A user switching packing on relies on training the model the padded layout trains: every
real token placed exactly once, whole and in order, in a row of its field's length; the text
encoder's outputs at real tokens equal to the padded encoder's; a train step (dropout off)
giving the padded step's losses and gradients; a clear error where packing
cannot apply.
"""

import dataclasses

import jax
import numpy as np
import pytest

from configs import tiny
from make_jax.input import packing
from make_jax.models import make_model
from make_jax.train import loop, optimizer
from make_jax.train import step as train_step
from tests import trainer_testlib


def _mask(lengths, length):
  return (np.arange(length)[None] < np.asarray(lengths)[:, None]).astype(np.int32)


def test_every_real_token_is_placed_once_whole_and_in_order():
  rs = np.random.default_rng(0)
  for trial in range(20):
    batch, length = int(rs.integers(1, 70)), int(rs.integers(2, 30))
    lengths = rs.integers(0, length + 1, batch)
    multiple = int(rs.integers(1, 9))
    index = packing.pack_index(_mask(lengths, length), multiple)
    assert index.dtype == np.int32 and index.shape[1] == length
    assert index.shape[0] % multiple == 0, trial
    real = index[index >= 0]
    want = np.concatenate([b * length + np.arange(n) for b, n in enumerate(lengths)])
    np.testing.assert_array_equal(np.sort(real), np.sort(want))  # Each token exactly once.
    for row in index:
      used = row[row >= 0]
      assert np.all(row[len(used) :] == -1)  # Empty slots at the end of the row.
      # Each text in one row, contiguous, in token order.
      for b in np.unique(used // length):
        at = np.flatnonzero(used // length == b)
        np.testing.assert_array_equal(used[at], b * length + np.arange(lengths[b]))
        assert np.all(np.diff(at) == 1)
    # First-fit decreasing never needs more rows than 11/9 OPT + 1 (OPT >= tokens / L).
    rows = int(np.sum(np.any(index >= 0, axis=1)))
    assert rows <= 11 / 9 * np.ceil(lengths.sum() / length) + 1


def test_packing_depends_on_the_mask_alone_and_saves_rows():
  lengths = [10, 3, 3, 12, 1, 5, 7, 2]
  a = packing.pack_index(_mask(lengths, 12), 1)
  np.testing.assert_array_equal(a, packing.pack_index(_mask(lengths, 12), 1))
  assert a.shape == (4, 12)  # 43 tokens in 4 rows of 12, not 8.


def test_a_mask_that_is_not_a_prefix_is_refused():
  with pytest.raises(ValueError, match='1s followed by 0s'):
    packing.pack_index(np.array([[1, 0, 1, 0]]))
  with pytest.raises(ValueError, match=r'\[B, L\]'):
    packing.pack_index(np.ones(4))
  with pytest.raises(ValueError, match='row_multiple'):
    packing.pack_index(np.ones((2, 4)), 0)


@dataclasses.dataclass(frozen=True)
class _Tokens:
  pad_id: int = 0
  cls_id: int = 2
  sep_id: int = 3
  mask_id: int = 4
  vocab_size: int = 1500


def _config():
  c = tiny.get_config()
  c.data.global_batch_size = 12
  c.model.num_layers = 2
  c.model.image_num_layers = 1
  c.model.dropout_rate = 0.0  # Dropout draws differ between layouts; the math must not.
  c.optim.warmup_fraction = 0.0
  c.optim.learning_rate = 3e-3
  c.train.num_steps = 10
  return c


def _batch(config, seed=0):
  rs = np.random.default_rng(seed)
  gb = config.data.global_batch_size
  batch = make_model.example_batch(config, gb)
  del batch['mpm_mask']
  for field in ('query', 'title'):
    length = batch[f'{field}_ids'].shape[1]
    n = rs.integers(3, length + 1, size=gb)
    mask = _mask(n, length)
    ids = rs.integers(5, _Tokens.vocab_size, size=(gb, length)).astype(np.int32)
    ids[:, 0] = _Tokens.cls_id
    ids[np.arange(gb), n - 1] = _Tokens.sep_id
    batch[f'{field}_ids'] = np.where(mask > 0, ids, 0).astype(np.int32)
    batch[f'{field}_mask'] = mask
    batch[f'{field}_keyword'] = (rs.uniform(size=(gb, length)) < 0.3).astype(np.int32) * mask
  batch['image'] = rs.integers(0, 256, size=batch['image'].shape, dtype=np.uint8)
  batch['image_missing'][3] = True
  batch['product_id'] = np.arange(gb, dtype=np.int32)
  batch['log_p'] = np.log(rs.uniform(1e-3, 0.1, size=gb)).astype(np.float32)
  return batch


@pytest.mark.parametrize('pooling', ['mean', 'cls'])
def test_packed_text_encoder_gives_the_padded_outputs(pooling):
  config = _config()
  config.model.pooling = pooling
  model = make_model.build_model(config)
  params = make_model.init_params(model, jax.random.key(0), make_model.example_batch(config, 2))
  batch = _batch(config)
  for field in ('query', 'title'):
    ids, mask = batch[f'{field}_ids'], batch[f'{field}_mask']
    pack = packing.pack_index(mask, 4)
    assert pack.shape[0] < ids.shape[0]  # Fewer rows than texts.
    encode = lambda pack, field=field, ids=ids, mask=mask: model.apply(
      {'params': params},
      ids,
      mask,
      pack=pack,
      method=lambda m, *a, **k: getattr(m, f'{field}_encoder')(*a, **k),
    )
    padded, packed = np.asarray(encode(None)), np.asarray(encode(pack))
    real = mask[..., None] > 0
    np.testing.assert_allclose(packed * real, padded * real, rtol=1e-5, atol=2e-5)


def test_packed_train_step_equals_the_padded_step():
  """MLM, MPM, Keyword Enhancement, QPM, QPC and the retrieval pass over clean ids all on:
  the packed step's losses, gradient norm and gradients are the padded step's."""
  config = _config()
  model = make_model.build_model(config)
  rng = jax.random.key(0)
  params = make_model.init_params(model, rng, make_model.example_batch(config, 2))
  tx = optimizer.make_optimizer(config.optim, config.train.num_steps)
  state = train_step.create_train_state(model, params, tx, config, rng)
  step = jax.jit(train_step.make_train_step(model, tx, config, _Tokens()))
  batch = _batch(config)
  packed_batch = packing.add_pack_indices(batch, 4)
  assert set(packed_batch) - set(batch) == {'query_pack', 'title_pack'}
  new_a, m_a = step(state, batch)
  new_b, m_b = step(state, packed_batch)
  for k in ('loss', 'qpm', 'qpc', 'mlm', 'mpm_r', 'grad_norm'):
    np.testing.assert_allclose(m_b[k], m_a[k], rtol=2e-5, err_msg=k)
  # The gradients, through Adam's first moments ((1 - b1) g after one step), leaf by leaf to
  # 1e-5 of the leaf's largest entry. (Not the new parameters: Adam's first step is
  # lr * g / (|g| + eps), which blows the ~1e-12 rounding noise of a zero gradient, such as
  # the attention key biases' (softmax ignores a shift shared by every key), up to a step.)
  mu = lambda s: s.opt_state[1][0].mu
  leaves_a = jax.tree_util.tree_leaves_with_path(mu(new_a))
  for (path, a), b in zip(leaves_a, jax.tree.leaves(mu(new_b)), strict=True):
    a, b = np.asarray(a), np.asarray(b)
    atol = 1e-5 * float(np.abs(a).max()) + 1e-9
    np.testing.assert_allclose(b, a, rtol=0, atol=atol, err_msg=jax.tree_util.keystr(path))


def test_packed_batches_are_refused_under_a_data_parallel_step():
  config = _config()
  model = make_model.build_model(config)
  tx = optimizer.make_optimizer(config.optim, config.train.num_steps)
  step = train_step.make_train_step(model, tx, config, _Tokens(), axis_name='data')
  rng = jax.random.key(0)
  params = make_model.init_params(model, rng, make_model.example_batch(config, 2))
  state = train_step.create_train_state(model, params, tx, config, rng)
  batch = packing.add_pack_indices(_batch(config), 4)
  with pytest.raises(ValueError, match='one device only'):
    step(state, batch)


def test_trainer_with_packing_logs_the_padded_losses(tmp_path_factory, tmp_path):
  """Through `train_and_evaluate` (dropout off): three packed steps log the padded run's
  losses; a data-parallel layout with packing is refused before anything trains."""
  prepared = trainer_testlib.prepare(tmp_path_factory)
  histories = {}
  for pack in (False, True):
    config = trainer_testlib.tiny_config(*prepared)
    config.model.dropout_rate = 0.0
    config.data.pack_text = pack
    out = loop.train_and_evaluate(config, tmp_path / f'pack_{pack}', stop_at=3)
    histories[pack] = out['history']
  trainer_testlib.assert_histories_equal(histories[True], histories[False], rtol=1e-4)
  config = trainer_testlib.tiny_config(*prepared)
  config.data.pack_text = True
  config.parallelism = 'pmap'
  with pytest.raises(ValueError, match="pack_text .* parallelism='single'"):
    loop.train_and_evaluate(config, tmp_path / 'pmap', stop_at=1)
