"""In float64 the layouts train the same 20 steps to relative 1e-5 (SPEC 6).

tests/test_trainer_layouts.py compares the float32 runs: they add the same terms in other
orders, and Adam turns those rounding differences into full-size updates, so after a few
steps the runs drift apart (trainer_testlib.rtol: 1e-5 to step 4, 3e-3 after). Here the
same tiny config runs with float64 parameters and compute (`model.dtype=float64`, 64-bit
JAX), where a different summation order changes a loss by about 1e-16 instead of 1e-7: if
the layouts compute the same function, every loss term of all 20 steps agrees to 1e-5. A
layout that computed something else (a gradient off by the device count, a missing
cross-device negative, another data split) would differ at step 1 by about 1e-1.

Images are 16 px with a 2x2 region grid here (the tiny config: 32 px, 4x4). At the suite's
LLVM optimisation level 0 (tests/conftest.py) XLA runs float64 convolutions as plain loops,
19x slower than the float32 library call (tiny ResNet forward+backward: 2.2 s against
0.12 s), and the smaller images cut the step from 2.5 s to 1.0 s. Every module still runs.

pjit with replicated parameters is not run here (about 150 s of a cold CI run): it is the
FSDP case without the parameter sharding, and the two-process test compares float32 pjit
runs across processes.
"""

import jax
import pytest

from tests import trainer_testlib


@pytest.fixture(scope='module')
def x64():
  """64-bit JAX for this module only (other test modules share the process)."""
  previous = jax.config.jax_enable_x64
  jax.config.update('jax_enable_x64', True)
  yield
  jax.config.update('jax_enable_x64', previous)


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
  return trainer_testlib.prepare(tmp_path_factory)


def _run(prepared, tmp_path, parallelism, param_sharding='replicated'):
  config = trainer_testlib.tiny_config(*prepared)
  config.model.dtype = config.model.param_dtype = 'float64'
  config.data.image_size, config.model.image_grid = 16, 2  # See the module docstring.
  return trainer_testlib.run_layout(config, tmp_path, parallelism, param_sharding, steps=20)


@pytest.fixture(scope='module')
def single(x64, prepared, tmp_path_factory):
  return _run(prepared, tmp_path_factory.mktemp('single64'), 'single')


@pytest.mark.slow
@pytest.mark.parametrize('parallelism,param_sharding', [('pmap', 'replicated'), ('pjit', 'fsdp')])
def test_float64_layouts_equal_single_device_for_20_steps(
  x64, prepared, single, tmp_path, parallelism, param_sharding
):
  assert single[-1]['loss'] < single[0]['loss']
  assert single[-1]['qpm_negatives_bank'] > 0 and single[-1]['qpm_cdns_on'] == 1.0
  got = _run(prepared, tmp_path, parallelism, param_sharding)
  assert got[-1]['qpm_negatives_cross_device'] > 0
  worst = trainer_testlib.assert_histories_equal(got, single, rtol=1e-5)
  print(f'{parallelism}/{param_sharding}: largest relative difference over 20 steps {worst:.2e}')
