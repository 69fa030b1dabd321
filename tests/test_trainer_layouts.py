"""'single', 'pmap' and 'pjit' train the same model in float32: the first steps agree (SPEC 6).

A user moving a run from one device to eight, or from pmap to pjit with the parameters
sharded, relies on getting the run one device would have made with the global batch. Here
`train_and_evaluate` runs the tiny config on 8 fake CPU devices in each layout (pjit with
replicated parameters and with parameters sharded over `data`, FSDP) and every step's loss
and loss terms are compared with 'single', to relative 1e-5.

Float32 runs drift apart after a few steps (`trainer_testlib.rtol` says why), so they are
compared for 4 steps here, for pmap; tests/test_trainer_layouts_float64.py runs pmap and
pjit FSDP in float64 and holds 1e-5 for 20 steps, and the two-process test compares float32
pjit runs across processes. (A cold compile of the float32 FSDP step took 142 s of the
CI's 25-minute budget, so it is left to the float64 test.) A checkpoint written by the pmap
layout on 8 devices is restored into pjit with sharded parameters and into 'single' on one
device, and must give back the same state.
"""

import jax
import numpy as np
import pytest

from make_jax import rundir
from make_jax.datasets import loading
from make_jax.models import make_model
from make_jax.train import checkpoint, inputs, layouts, loop, optimizer
from tests import trainer_testlib


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
  return trainer_testlib.prepare(tmp_path_factory)


STEPS = 4  # Float32 layouts agree to 1e-5 this far (trainer_testlib.rtol).


def _run(prepared, tmp_path, parallelism, param_sharding='replicated'):
  config = trainer_testlib.tiny_config(*prepared)
  return trainer_testlib.run_layout(config, tmp_path, parallelism, param_sharding, steps=STEPS)


@pytest.fixture(scope='module')
def single(prepared, tmp_path_factory):
  return _run(prepared, tmp_path_factory.mktemp('single'), 'single')


@pytest.mark.slow
@pytest.mark.parametrize('parallelism,param_sharding', [('pmap', 'replicated')])
def test_layout_losses_equal_single_device(prepared, single, tmp_path, parallelism, param_sharding):
  # Not vacuous: CDNS and the queue are active (the float64 test also sees the loss fall).
  assert single[-1]['qpm_negatives_bank'] > 0 and single[-1]['qpm_cdns_on'] == 1.0
  got = _run(prepared, tmp_path, parallelism, param_sharding)
  assert got[-1]['qpm_negatives_cross_device'] > 0  # Sharded: negatives from other devices.
  trainer_testlib.assert_histories_equal(got, single, rtol=1e-5)


@pytest.mark.slow
def test_a_pmap_checkpoint_restores_into_pjit_and_single(prepared, tmp_path):
  """A run moves between layouts and device counts: the same state comes back placed anew."""
  config = trainer_testlib.tiny_config(*prepared)
  config.parallelism = 'pmap'
  loop.train_and_evaluate(config, tmp_path, stop_at=2)
  saved, step = rundir.latest_params(tmp_path)
  assert step == 2
  model = make_model.build_model(config)
  tx = optimizer.make_optimizer(config.optim, config.train.num_steps)
  text = inputs.load_preprocessor(
    config, loading.get_builder('synthetic_products', 'en_small', prepared[0]), tmp_path
  )
  ckpt = checkpoint.Checkpointer(tmp_path, keep=3)
  for parallelism, param_sharding in (('pjit', 'fsdp'), ('single', 'replicated')):
    config.parallelism, config.param_sharding = parallelism, param_sharding
    layout = layouts.make_layout(config, model, tx, text)
    canonical, shards = ckpt.restore(2, layout.restore_target)
    state = layout.from_canonical(canonical)
    assert int(layouts.to_host(state.step)) == 2 and len(shards) == 1
    restored = layouts.to_host(state.params)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(saved), strict=True):
      np.testing.assert_array_equal(a, np.asarray(b))
    kernel = state.params['query_encoder']['stack']['layer_0']['mlp_in']['kernel']
    if parallelism == 'pjit':  # FSDP: the embed dimension split over the 8 devices.
      assert kernel.sharding.shard_shape(kernel.shape) == (kernel.shape[0] // 8, kernel.shape[1])
    else:
      assert len(kernel.sharding.device_set) == 1
  ckpt.close()
