"""Damaged checkpoints: found, named and survived (issue: faults in the artefacts).

A user whose newest checkpoint was truncated, overwritten or partly deleted relies on the
run resuming from the newest intact one (with the losses an uninterrupted run logs), on
export and serving reading the newest intact params, on a one-line error naming every
checkpoint when none is intact, and on a failed resume leaving the workdir as it was.
"""

import json
import os
import pathlib
import shutil

import jax
import numpy as np
import pytest

from configs import tiny
from make_jax import rundir
from make_jax.train import checkpoint, loop
from tests import trainer_testlib


def _largest_data_file(step_dir: pathlib.Path) -> pathlib.Path:
  files = [p for p in (step_dir / 'state').rglob('*') if p.is_file() and p.parent.name == 'd']
  return max(files, key=lambda p: p.stat().st_size)


def _delete(path: pathlib.Path) -> None:
  path.unlink()


def _truncate(path: pathlib.Path) -> None:
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 2])


def _flip(path: pathlib.Path) -> None:
  data = bytearray(path.read_bytes())
  middle = len(data) // 2
  data[middle : middle + 16] = bytes(b ^ 0xFF for b in data[middle : middle + 16])
  path.write_bytes(bytes(data))


FAULTS = {'deleted': _delete, 'truncated': _truncate, 'bytes_flipped': _flip}


def _states(n):
  rs = np.random.default_rng(0)
  return [
    {'w': rs.normal(size=(64, 64)).astype(np.float32), 'i': np.arange(8) * s} for s in range(n)
  ]


def _save_three(directory: pathlib.Path):
  ckpt = checkpoint.Checkpointer(directory, keep=5)
  states = _states(3)
  config = tiny.get_config()
  for step, state in enumerate(states, start=1):
    ckpt.save(step, state, [{'position': step}], config)
  ckpt.close()
  return states


def _target():
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _states(1)[0])


@pytest.mark.parametrize('fault', sorted(FAULTS))
def test_a_damaged_newest_checkpoint_is_named_and_the_previous_one_restored(tmp_path, fault):
  states = _save_three(tmp_path)
  steps_dir = tmp_path / 'checkpoints'
  damaged = _largest_data_file(steps_dir / '3')
  FAULTS[fault](damaged)
  messages = []
  ckpt = checkpoint.Checkpointer(tmp_path, keep=5)
  step, state, shards = ckpt.restore_newest_intact(_target(), log=messages.append)
  assert step == 2 and shards == [{'position': 2}]
  np.testing.assert_array_equal(state['w'], states[1]['w'])
  np.testing.assert_array_equal(state['i'], states[1]['i'])
  assert len(messages) == 1 and 'step 3' in messages[0] and damaged.name in messages[0]
  # Moved aside, so the resumed run can write step 3 again.
  assert not (steps_dir / '3').exists() and (steps_dir / '3.damaged').is_dir()
  assert ckpt.latest_step() == 2
  ckpt.save(3, states[2], [{'position': 3}], tiny.get_config())
  ckpt.close()
  again = checkpoint.Checkpointer(tmp_path, keep=5)
  step, state, _ = again.restore_newest_intact(_target())
  assert step == 3
  np.testing.assert_array_equal(state['w'], states[2]['w'])
  again.close()


def test_a_truncated_metadata_file_is_named(tmp_path):
  _save_three(tmp_path)
  metadata = tmp_path / 'checkpoints' / '3' / 'state' / '_METADATA'
  _truncate(metadata)
  messages = []
  ckpt = checkpoint.Checkpointer(tmp_path, keep=5)
  step, _, _ = ckpt.restore_newest_intact(_target(), log=messages.append)
  assert step == 2 and str(metadata) in messages[0]
  ckpt.close()


def test_no_intact_checkpoint_is_one_line_naming_each(tmp_path):
  _save_three(tmp_path)
  for step in (1, 2, 3):
    _truncate(_largest_data_file(tmp_path / 'checkpoints' / str(step)))
  ckpt = checkpoint.Checkpointer(tmp_path, keep=5)
  with pytest.raises(rundir.CheckpointError) as e:
    ckpt.restore_newest_intact(_target(), log=lambda m: None)
  message = str(e.value)
  assert '\n' not in message and 'no intact checkpoint' in message
  assert all(f'step {s}:' in message for s in (1, 2, 3))
  ckpt.close()


def test_an_unrecorded_checkpoint_that_orbax_cannot_read_is_skipped(tmp_path):
  """A checkpoint whose writer died before its integrity record: read as it is, skipped
  when orbax fails on it."""
  _save_three(tmp_path)
  step_dir = tmp_path / 'checkpoints' / '3'
  (step_dir / rundir.INTEGRITY).unlink()
  assert rundir.check_integrity(step_dir) is None
  shutil.rmtree(step_dir / 'state' / 'ocdbt.process_0')
  messages = []
  ckpt = checkpoint.Checkpointer(tmp_path, keep=5)
  step, _, _ = ckpt.restore_newest_intact(_target(), log=messages.append)
  assert step == 2 and 'step 3' in messages[0]
  ckpt.close()


@pytest.mark.slow
def test_resume_and_export_skip_a_damaged_checkpoint(tmp_path_factory, tmp_path):
  """Through the trainer: the uninterrupted run's checkpoint of step 6 is overwritten; the
  same command resumes from step 4 and logs bit-identical losses for steps 5 and 6;
  `latest_params` (export, serving) reads step 4's params meanwhile. A resume with no
  intact checkpoint fails in one line without touching config.json."""
  prepared = trainer_testlib.prepare(tmp_path_factory)
  config = trainer_testlib.tiny_config(*prepared)
  config.train.checkpoint_every = 2
  reference = tmp_path / 'reference'
  want = loop.train_and_evaluate(config, reference, stop_at=6)['history']
  run = tmp_path / 'run'
  shutil.copytree(reference, run)
  _flip(_largest_data_file(run / 'checkpoints' / '6'))
  params, step = rundir.latest_params(run)
  assert step == 4
  ref_params, _ = rundir.latest_params(reference / 'checkpoints' / '4')
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params), strict=True):
    np.testing.assert_array_equal(a, b)
  got = loop.train_and_evaluate(config, run, stop_at=6)['history']
  assert [h['step'] for h in got] == [5, 6]
  for g, w in zip(got, want[4:], strict=True):
    for k in trainer_testlib.TERMS:
      assert g[k] == w[k], (g['step'], k, g[k], w[k])
  assert (run / 'checkpoints' / '6.damaged').is_dir()

  for step in (2, 4, 6):
    _truncate(_largest_data_file(run / 'checkpoints' / str(step)))
  before = (run / 'config.json').read_bytes()
  stamp = os.stat(run / 'config.json').st_mtime_ns
  changed = trainer_testlib.tiny_config(*prepared)
  changed.train.num_steps = 77
  with pytest.raises(rundir.CheckpointError, match='no intact checkpoint'):
    loop.train_and_evaluate(changed, run, stop_at=8)
  assert (run / 'config.json').read_bytes() == before
  assert os.stat(run / 'config.json').st_mtime_ns == stamp
  assert json.loads(before)['train']['num_steps'] != 77
