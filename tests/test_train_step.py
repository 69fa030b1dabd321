"""The train step: data-parallel runs equal one device holding the global batch (SPEC 5-6).

A user trains on 8 devices and relies on getting the model one device would have trained on
the global batch: same parameters, optimiser state, MBNS queue and logged metrics. Here two
steps of `make_train_step` on configs/tiny.py run on one device (plain `jax.jit`), under
`jax.pmap` over 8 fake CPU devices (tests/conftest.py) and under `jax.shard_map` inside
`jax.jit`, and are compared: metrics, queue, and the reduced gradients through Adam's
moments. A deliberately wrong gradient reduction (a pmean) is shown to fail that comparison in
every parameter that has a gradient. Also: per-example masking is independent of the device split, and 60 steps on one
fixed batch clearly reduce the loss (the step learns at all).
"""

import dataclasses

import jax
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from configs import tiny
from make_jax.models import make_model
from make_jax.train import masking, optimizer
from make_jax.train import step as train_step

N_DEV, GB = 8, 16
PER_DEV = GB // N_DEV
PAD, CLS, SEP, MASK = 0, 2, 3, 4
TOKENIZER_VOCAB = 1500  # Below the model's 2048 rows, like a learned vocabulary.


@dataclasses.dataclass(frozen=True)
class Tokens:
  """The special ids and vocabulary size `make_train_step` needs of a tokenizer."""

  pad_id: int = PAD
  cls_id: int = CLS
  sep_id: int = SEP
  mask_id: int = MASK
  vocab_size: int = TOKENIZER_VOCAB


def _config():
  config = tiny.get_config()
  config.data.global_batch_size = GB
  # One layer per encoder halves the compile time of each of the four step variants below;
  # every module (ResNet, image/text encoders, fusion, heads) is still in the step.
  config.model.num_layers = 1
  config.model.image_num_layers = 1
  # CDNS from step 0. Before CDNS a device's in-batch negatives are its own rows only, while
  # one device holding the global batch sees all 16 as local: the runs only agree with CDNS on.
  config.loss.cdns_start_fraction = 0.0
  config.loss.bank_batches = 2
  config.optim.learning_rate = 3e-3
  config.optim.warmup_fraction = 0.0  # Full rate from step 0, so the first step moves params.
  # No clipping: clipped to norm 1 (the gradient norm here is ~200) the step would not see a
  # gradient's scale at all, and a reduction off by the device count would only show in the
  # grad_norm metric. Unclipped it shows in Adam's moments too.
  config.optim.grad_clip_norm = 0.0
  config.train.num_steps = 100  # Sets the schedule's decay; tests run at most 60 steps.
  return config


def _batch(config, seed=0):
  """A valid random global batch of contract 2 (no mpm_mask: masking adds it)."""
  rs = np.random.default_rng(seed)
  batch = make_model.example_batch(config, GB)
  del batch['mpm_mask']
  for field in ('query', 'title'):
    length = batch[f'{field}_ids'].shape[1]
    n = rs.integers(3, length + 1, size=GB)
    mask = (np.arange(length)[None] < n[:, None]).astype(np.int32)
    ids = rs.integers(5, TOKENIZER_VOCAB, size=(GB, length)).astype(np.int32)
    ids[:, 0] = CLS
    ids[np.arange(GB), n - 1] = SEP
    inner = mask * (ids != CLS) * (ids != SEP)
    batch[f'{field}_ids'] = np.where(mask > 0, ids, PAD).astype(np.int32)
    batch[f'{field}_mask'] = mask
    batch[f'{field}_keyword'] = ((rs.uniform(size=(GB, length)) < 0.3) * inner).astype(np.int32)
  batch['image'] = rs.integers(0, 256, size=batch['image'].shape, dtype=np.uint8)
  batch['image_missing'][[5, 12]] = True
  batch['product_id'] = rs.integers(0, 11, size=GB).astype(np.int32)  # Duplicate ids.
  batch['log_p'] = np.log(rs.uniform(1e-3, 0.1, size=GB)).astype(np.float32)
  return batch


@pytest.fixture(scope='module')
def setup():
  """Config, model, optimiser, initial state and the jitted single-device step (compiled once)."""
  return _build(_config())


def _build(config):
  """(config, model, optimiser, initial state, jitted single-device step) of `config`."""
  model = make_model.build_model(config)
  rng = jax.random.key(config.seed)
  params = make_model.init_params(model, rng, make_model.example_batch(config, 2))
  tx = optimizer.make_optimizer(config.optim, config.train.num_steps)
  state = train_step.create_train_state(model, params, tx, config, rng)
  single = jax.jit(train_step.make_train_step(model, tx, config, Tokens()))
  return config, model, tx, state, single


def _run(step_fn, state, batches):
  """(final state, per-step metrics, state after the first step), all on the host."""
  metrics, first = [], None
  for b in batches:
    state, m = step_fn(state, b)
    metrics.append(m)
    first = jax.device_get(state) if first is None else first
  return jax.device_get(state), jax.device_get(metrics), first


def _split(tree):
  return jax.tree.map(lambda a: a.reshape((N_DEV, PER_DEV) + a.shape[1:]), tree)


def _keys_as_data(tree):
  return jax.tree.map(
    lambda a: jax.random.key_data(a) if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key) else a,
    tree,
  )


def _pmap_inputs(state, batch):
  """Replicated state and split batch, placed as pmap places its outputs (one compile)."""
  mesh = jax.make_mesh((N_DEV,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
  put = lambda a: jax.device_put(a, NamedSharding(mesh, P('data')))
  replicate = lambda a: put(np.broadcast_to(np.asarray(a), (N_DEV,) + np.shape(a)))
  state = jax.tree.map(replicate, state.replace(rng=jax.random.key_data(state.rng)))
  return state.replace(rng=jax.random.wrap_key_data(state.rng)), put(_split(batch))


def _run_pmap(setup, batches, reduce=None, monkeypatch=None):
  config, model, tx, state, _ = setup
  if reduce is not None:
    monkeypatch.setattr(train_step, 'reduce_gradients', reduce)
  step_fn = jax.pmap(
    train_step.make_train_step(model, tx, config, Tokens(), axis_name='data'), axis_name='data'
  )
  inputs = [_pmap_inputs(state, b) for b in batches]
  out = _keys_as_data(_run(step_fn, inputs[0][0], [b for _, b in inputs]))
  # Every device must hold the same states and report the same global metrics.
  for leaf in jax.tree.leaves(out):
    np.testing.assert_array_equal(leaf, np.broadcast_to(leaf[:1], leaf.shape))
  return jax.tree.map(lambda a: a[0], out)


def _run_shard_map(setup, batches):
  config, model, tx, state, _ = setup
  mesh = jax.make_mesh((N_DEV,), ('data',))
  step_fn = jax.jit(
    jax.shard_map(
      train_step.make_train_step(model, tx, config, Tokens(), axis_name='data'),
      mesh=mesh,
      in_specs=(P(), P('data')),
      # The new state (reduced gradients, queue of gathered global batches) and the metrics
      # are replicated values: they leave with P().
      out_specs=(P(), P()),
    )
  )
  state = jax.device_put(state, NamedSharding(mesh, P()))
  batches = [jax.device_put(b, NamedSharding(mesh, P('data'))) for b in batches]
  return _keys_as_data(_run(step_fn, state, batches))


SPLIT_METRICS = ('qpm_negatives_local', 'qpm_negatives_cross_device')


def _max_abs(tree):
  return max(float(np.abs(np.asarray(x)).max()) for x in jax.tree.leaves(tree) if np.size(x))


def _zero_grad_leaves(opt_state):
  """Per parameter leaf: True where the true gradient is zero (mu is pure rounding noise).

  A bias added to every MPM_R prediction or every attention key cancels in the softmax.
  """
  mu = optax.tree.get(opt_state, 'mu')
  return jax.tree.map(lambda m: _max_abs(m) < 1e-6 * _max_abs(mu), mu)


def _moment_mismatches(g_state, w_state):
  """Paths of Adam-moment leaves where run `g_state` differs from the reference `w_state`.

  Compared after one step, the moments are the reduced gradient before the optimiser's
  normalisation (mu = (1 - b1) g, nu = (1 - b2) g^2), so a reduction off by a factor shows in
  every leaf that has a gradient: a pmean leaves 1/8 of mu and 1/64 of nu. Tolerance per leaf:
  1e-3 of its own largest entry (summation-order noise is ~1e-6) plus 1e-6 of the moment's
  largest entry over all parameters (the floor for zero-gradient leaves).
  """
  bad = []
  for moment in ('mu', 'nu'):
    g_m, w_m = (optax.tree.get(s.opt_state, moment) for s in (g_state, w_state))
    floor = 1e-6 * _max_abs(w_m)
    for (path, g), (_, w) in zip(
      jax.tree_util.tree_leaves_with_path(g_m),
      jax.tree_util.tree_leaves_with_path(w_m),
      strict=True,
    ):
      if np.abs(np.asarray(g) - np.asarray(w)).max() > 1e-3 * _max_abs(w) + floor:
        bad.append(f'opt_state.{moment}{jax.tree_util.keystr(path)}')
  return bad


def _assert_same(got, want, lr):
  """Sharded run `got` equals single-device run `want`, within float32 summation-order noise.

  The sharded runs add the same terms in another order (per-device partial sums, then a psum):
  - metrics: rtol 1e-5 at step 1, 1e-3 after it (see below); the queue: atol 2e-4;
  - Adam's moments after the FIRST step, i.e. the reduced gradients of both runs at the same
    parameters: `_moment_mismatches` (the check a wrong reduction fails;
    test_comparison_catches_a_pmean_of_the_gradients shows it does). After the second step
    the gradients were taken at parameters that Adam's first step already moved apart where
    a gradient is rounding noise, so the moments are compared where the comparison is exact;
  - parameters, where the gradient is non-zero: 99% of entries within 0.1 * lr (observed
    0.01 * lr), every entry within Adam's largest step difference. AdamW
    divides a gradient by its own RMS, so parameters cannot show a reduction off by a constant
    factor; this only checks that the same update was applied. Where the true gradient is zero
    Adam turns rounding noise into steps of up to ~lr, so those leaves are not compared.
  """
  (g_state, g_metrics, g_first), (w_state, w_metrics, w_first) = got, want
  rtol = 1e-5
  for g, w in zip(g_metrics, w_metrics, strict=True):
    assert set(g) == set(w)
    # One device counts every in-batch negative as local; sharded, most are cross-device.
    np.testing.assert_allclose(
      g[SPLIT_METRICS[0]] + g[SPLIT_METRICS[1]], w[SPLIT_METRICS[0]], rtol=1e-6
    )
    for k in w:
      if k not in SPLIT_METRICS:
        np.testing.assert_allclose(g[k], w[k], rtol=rtol, atol=1e-6, err_msg=f'metric {k}')
    # Step 1 starts from the same parameters; from step 2 on they differ where Adam turned
    # the rounding noise of a near-zero gradient into a step of up to ~lr (observed: the
    # second step's gradient norm differs by 2e-4).
    rtol = 1e-3
  w_state = _keys_as_data(w_state)
  np.testing.assert_array_equal(g_state.step, w_state.step)
  np.testing.assert_array_equal(g_state.rng, w_state.rng)
  leaves = lambda tree: jax.tree_util.tree_leaves_with_path(tree)
  for (path, g), (_, w) in zip(leaves(g_state.bank), leaves(w_state.bank), strict=True):
    # The second slot holds embeddings computed after the first update: atol 2e-4 (observed
    # 9e-5, for the reason given for the metrics above).
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=2e-4, err_msg=f'bank{path}')
  for (_, g), (_, w) in zip(
    *(optax.tree.get_all_with_path(s.opt_state, 'count') for s in (g_state, w_state)), strict=True
  ):
    np.testing.assert_array_equal(g, w)
  bad = _moment_mismatches(g_first, _keys_as_data(w_first))
  assert not bad, f'gradients differ (Adam moments): {bad}'
  diffs = []
  for (path, g), (_, w), (_, zero) in zip(
    leaves(g_state.params),
    leaves(w_state.params),
    leaves(_zero_grad_leaves(w_state.opt_state)),
    strict=True,
  ):
    if not zero:
      diff = np.abs(np.asarray(g) - np.asarray(w)).ravel()
      # Adam moves an entry by at most ~lr a step, whatever its gradient.
      assert diff.max() <= 2.2 * lr * int(w_state.step), f'params{path}: {diff.max()}'
      diffs.append(diff)
  # An entry whose own gradient is rounding noise can take an Adam step of up to ~lr either
  # way even inside a leaf that has a gradient (observed: 1 of 16 GroupNorm biases, 1 of 576
  # kernel entries); over all parameters 99% of entries are within 0.1 lr.
  diffs = np.concatenate(diffs)
  assert np.mean(diffs > 0.1 * lr) <= 0.01, f'{np.mean(diffs > 0.1 * lr):.4f} of params differ'


@pytest.fixture(scope='module')
def reference(setup):
  """Two steps on one device holding the global batch."""
  *_, state, single = setup
  batches = [_batch(setup[0], seed) for seed in (1, 2)]
  return batches, _run(single, state, batches)


@pytest.mark.slow
def test_pmap_step_equals_single_device(setup, reference):
  batches, want = reference
  w_state, w_metrics, _ = want
  # The comparison is not vacuous: the queue holds both batches, every term is active,
  # queries see cross-device and queue negatives, and the parameters moved.
  assert bool(np.all(w_state.bank.valid)) and int(w_state.step) == 2
  assert w_metrics[1]['qpm_negatives_bank'] > 0 and w_metrics[1]['qpm_cdns_on'] == 1.0
  for k in ('loss', 'qpm', 'qpc', 'mlm', 'mpm_r'):
    assert np.isfinite(w_metrics[1][k]) and w_metrics[1][k] > 0, k
  moved = jax.tree.map(lambda a, b: np.abs(a - b).max(), w_state.params, setup[3].params)
  assert max(jax.tree.leaves(moved)) > 1e-3
  got = _run_pmap(setup, batches)
  assert got[1][1]['qpm_negatives_cross_device'] > got[1][1]['qpm_negatives_local'] > 0
  _assert_same(got, want, setup[0].optim.learning_rate)


@pytest.mark.slow
def test_shard_map_step_equals_single_device(setup, reference):
  batches, want = reference
  _assert_same(_run_shard_map(setup, batches), want, setup[0].optim.learning_rate)


@pytest.mark.slow
def test_comparison_catches_a_pmean_of_the_gradients(setup, reference, monkeypatch):
  batches, want = reference
  wrong = lambda grads, axis_name: jax.lax.pmean(grads, axis_name)
  got = _run_pmap(setup, batches, reduce=wrong, monkeypatch=monkeypatch)
  # AdamW is nearly invariant to a uniform gradient scale, so the parameters barely show it
  # (only through Adam's eps); the gradient norm and Adam's moments do (1/8 of the truth).
  np.testing.assert_allclose(got[1][0]['grad_norm'], want[1][0]['grad_norm'] / N_DEV, rtol=1e-4)
  lr = setup[0].optim.learning_rate
  with pytest.raises(AssertionError, match='metric grad_norm'):
    _assert_same(got, want, lr)
  # The state comparison alone catches it, through the moments of every parameter that has
  # a gradient.
  with pytest.raises(AssertionError, match=r'gradients differ \(Adam moments\)'):
    _assert_same((got[0], want[1], got[2]), want, lr)
  # Every leaf whose gradient stands clear of the zero-gradient floor fails it (a pmean leaves
  # 1/8 of mu), and those are most of the model.
  bad = _moment_mismatches(got[2], _keys_as_data(want[2]))
  mu = optax.tree.get(want[2].opt_state, 'mu')
  clear = [
    f'opt_state.mu{jax.tree_util.keystr(path)}'
    for path, m in jax.tree_util.tree_leaves_with_path(mu)
    if _max_abs(m) > 1e-5 * _max_abs(mu)
  ]
  assert len(clear) > len(jax.tree.leaves(mu)) // 2
  assert set(clear) <= set(bad), sorted(set(clear) - set(bad))


@pytest.mark.slow
def test_gathered_mlm_step_equals_a_head_over_every_position(setup, monkeypatch):
  """One train step with MLM logits at the K predicted positions equals one with K = L.

  With K = L the cap never binds and the head projects as many positions as there are
  tokens (the full head's cost); on a batch where the K-slot cap did not bind either, both
  steps mask the same tokens, so loss, gradients (Adam's moments) and parameters must agree.
  """
  config, model, tx, state, single = setup
  batch = _batch(config, 6)
  got = _run(single, state, [batch])
  assert got[1][0]['mlm_capped_tokens'] == 0 and got[1][0]['mlm'] > 0
  monkeypatch.setattr(masking, 'mlm_max_predictions', lambda length, mlm_prob: length)
  full = jax.jit(train_step.make_train_step(model, tx, config, Tokens()))
  want = _run(full, state, [batch])
  for k in want[1][0]:
    np.testing.assert_allclose(got[1][0][k], want[1][0][k], rtol=1e-5, atol=1e-6, err_msg=k)
  g_state, w_state = _keys_as_data(got[0]), _keys_as_data(want[0])
  assert not _moment_mismatches(g_state, w_state)
  lr = config.optim.learning_rate
  zero = jax.tree.leaves(_zero_grad_leaves(w_state.opt_state))
  for g, w, z in zip(
    jax.tree.leaves(g_state.params), jax.tree.leaves(w_state.params), zero, strict=True
  ):
    if not z:  # Zero-gradient leaves: Adam's steps there are rounding noise (see _assert_same).
      np.testing.assert_allclose(g, w, rtol=0, atol=0.1 * lr)


def test_masks_depend_only_on_the_global_row():
  config = _config()
  batch = _batch(config, 3)
  ids = dict(pad_id=PAD, cls_id=CLS, sep_id=SEP, mask_id=MASK, vocab_size=TOKENIZER_VOCAB)
  fn = jax.jit(
    lambda b, r, off: masking.mask_batch_by_example(
      b, r, config.masking, row_offset=off, num_regions=16, **ids
    )
  )
  rng = jax.random.key(7)
  whole = jax.device_get(fn(batch, rng, 0))
  halves = [
    jax.device_get(fn(jax.tree.map(lambda a, s=s: a[s : s + 8], batch), rng, s)) for s in (0, 8)
  ]
  joined = jax.tree.map(lambda a, b: np.concatenate([a, b]), *halves)
  assert set(whole) == set(joined)
  for k in whole:
    np.testing.assert_array_equal(whole[k], joined[k], err_msg=k)
  # Something was masked, and without the offset the second half would be masked differently.
  assert whole['mlm_title_weights'].sum() > 0 and whole['mpm_mask'].sum() > 0
  unshifted = jax.device_get(fn(jax.tree.map(lambda a: a[8:], batch), rng, 0))
  assert not np.array_equal(unshifted['mlm_title_weights'], whole['mlm_title_weights'][8:])


def test_sixty_steps_on_one_batch_reduce_the_loss(setup):
  *_, state, single = setup
  batch = _batch(setup[0], 4)
  losses = []
  for _ in range(60):
    state, metrics = single(state, batch)
    losses.append(float(metrics['loss']))
  assert np.all(np.isfinite(losses))
  # Masks change every step (they fold in the step), so MLM cannot reach 0; observed: the
  # last five steps average ~0.5x the first loss, after a first-step spike from full-rate Adam.
  assert np.mean(losses[-5:]) < 0.7 * losses[0], losses


@pytest.mark.slow
def test_bfloat16_compute_trains_with_float32_params():
  """configs/paper.py computes in bfloat16: a step runs, stays finite and keeps f32 params."""
  config = _config()
  config.model.dtype = 'bfloat16'
  _, model, _, state, step = _build(config)
  batch = _batch(config, 5)
  losses = []
  for _ in range(3):
    state, metrics = step(state, batch)
    losses.append(float(metrics['loss']))
  assert np.all(np.isfinite(losses)), losses
  assert {x.dtype for x in jax.tree.leaves(state.params)} == {np.dtype('float32')}
  inputs = dict(batch, mpm_mask=np.zeros((GB, 16), np.float32))
  jaxpr = str(jax.make_jaxpr(lambda p, b: model.apply({'params': p}, b))(state.params, inputs))
  matmuls = [line for line in jaxpr.splitlines() if 'dot_general' in line]
  # Compute really is bfloat16: most matrix products produce bf16 (logits are upcast).
  assert sum('bf16[' in line.split('=')[0] for line in matmuls) > len(matmuls) // 2
  # Shapes and dtypes only: an eager bf16 forward dispatches (and compiles) op by op.
  out = jax.eval_shape(lambda p, b: model.apply({'params': p}, b), state.params, inputs)
  assert out['query_emb'].dtype == np.float32  # Embeddings are normalised in float32.
  assert losses[-1] < losses[0], losses


def test_no_memory_bank_steps_and_checkpoints(tmp_path):
  """bank_batches = 0 (MBNS off) keeps no queue: the state steps, saves and restores."""
  from make_jax.train import checkpoint

  config = _config()
  config.loss.bank_batches = 0
  config, _, _, state, single = _build(config)
  assert state.bank is None
  state, metrics = single(state, _batch(config))
  assert state.bank is None and float(metrics['qpm_negatives_bank']) == 0.0
  ckpt = checkpoint.Checkpointer(tmp_path, keep=1, async_save=False)
  host = _keys_as_data(jax.device_get(state))
  ckpt.save(1, host, [{'epoch': 0}], config)
  ckpt.wait()
  target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), host)
  restored, shards = ckpt.restore(1, target)
  ckpt.close()
  assert restored.bank is None and shards == [{'epoch': 0}]
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(host), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
