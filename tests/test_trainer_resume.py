"""A killed run, restarted on its workdir, computes exactly what an uninterrupted run does.

Preemption is routine on accelerator clusters: a job killed with SIGKILL and started again
must not change the result. Here `tools.train` (single layout, tiny config, checkpoint
every 5 steps) is killed right after its step-15 checkpoint is complete, restarted, killed
again while a later checkpoint is being written, and restarted to finish at step 30. The
losses of steps 16-30 must equal those of a run that was never interrupted bit for bit
(queue, RNG and data order included), the incomplete checkpoint must be ignored, and the
earlier ones kept.
"""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from make_jax import rundir
from make_jax.train import loop
from tests import trainer_testlib

TERMS = ('loss', 'qpm', 'qpc', 'mlm', 'mpm_r', 'qpm_negatives_bank', 'grad_norm')
TMP = re.compile(r'^(\d+)\.orbax-checkpoint-tmp')


def _start(workdir, prepared, log, started):
  flags = trainer_testlib.train_flags(*prepared, num_steps=30, checkpoint_every=5)
  proc = subprocess.Popen(
    [sys.executable, '-m', 'tools.train', f'--workdir={workdir}', *flags],
    cwd=trainer_testlib.ROOT,
    env=trainer_testlib.trainer_env(1),
    stdout=log,
    stderr=subprocess.STDOUT,
  )
  started.append(proc)
  return proc


def _kill_when(proc, condition, deadline):
  """SIGKILLs `proc` as soon as `condition()` holds; returns whether it did."""
  try:
    while time.monotonic() < deadline:
      if condition():
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        return True
      if proc.poll() is not None:
        return False
      time.sleep(0.001)  # Poll often (a checkpoint write lasts ~0.1 s) without taking a core.
    raise TimeoutError('the trainer did not reach the expected point in time')
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait(30)


@pytest.mark.slow
def test_killed_and_restarted_run_equals_an_uninterrupted_one(tmp_path_factory, tmp_path):
  prepared = trainer_testlib.prepare(tmp_path_factory)
  deadline = time.monotonic() + 900
  started = []
  with open(tmp_path / 'log.txt', 'w') as log:
    try:
      _run_all(tmp_path, prepared, log, started, deadline)
    finally:
      for proc in started:  # Never leave a trainer behind, whatever failed.
        if proc.poll() is None:
          proc.kill()
          proc.wait(30)

  want = trainer_testlib.read_metrics(tmp_path / 'reference')
  got = trainer_testlib.read_metrics(tmp_path / 'run')
  assert sorted(want) == sorted(got) == list(range(1, 31))
  for step in range(16, 31):
    for k in TERMS:
      assert got[step][k] == want[step][k], (step, k, got[step][k], want[step][k])
  assert rundir.find_checkpoint(tmp_path / 'run')[1] == 30


def _run_all(tmp_path, prepared, log, started, deadline):
  """The reference run, then the run killed twice and finished."""
  reference = _start(tmp_path / 'reference', prepared, log, started)
  assert reference.wait(600) == 0, (tmp_path / 'log.txt').read_text()[-3000:]

  run = tmp_path / 'run'
  ckpts = run / 'checkpoints'
  # 1. Killed right after the checkpoint of step 15 is complete.
  done_15 = lambda: (ckpts / '15' / 'commit_success.txt').exists()
  assert _kill_when(_start(run, prepared, log, started), done_15, deadline)
  assert rundir.find_checkpoint(run)[1] == 15

  # 2. Restarted, and killed while a later checkpoint is being written.
  def writing():
    return any((m := TMP.match(e.name)) and int(m.group(1)) > 15 for e in os.scandir(ckpts))

  assert _kill_when(_start(run, prepared, log, started), writing, deadline), 'missed every write'
  partial = [e.name for e in os.scandir(ckpts) if TMP.match(e.name)]
  assert partial, 'the checkpoint being written when killed should be left incomplete'
  complete = sorted(int(e.name) for e in os.scandir(ckpts) if e.name.isdigit())
  assert complete[-1] >= 15 and int(TMP.match(partial[0]).group(1)) > complete[-1]

  # 3. Restarted: resumes from the newest complete checkpoint and finishes.
  finish = _start(run, prepared, log, started)
  assert finish.wait(600) == 0, (tmp_path / 'log.txt').read_text()[-3000:]


@pytest.mark.slow
def test_a_non_finite_loss_stops_the_run_before_its_checkpoint(tmp_path_factory, tmp_path):
  config = trainer_testlib.tiny_config(*trainer_testlib.prepare(tmp_path_factory))
  # Adam moves every weight by ~lr per step: at 1e30 the second forward pass overflows.
  config.optim.learning_rate = 1e30
  config.optim.warmup_fraction = 0.0
  config.train.num_steps = 4
  config.train.checkpoint_every = 1
  config.train.log_every = 4
  with pytest.raises(FloatingPointError, match=r'at step \d: \w+=(nan|inf|-inf)') as e:
    loop.train_and_evaluate(config, tmp_path)
  bad = int(re.search(r'at step (\d)', str(e.value)).group(1))
  assert bad >= 2  # Step 1 starts from finite initial weights.
  # Checkpoints were written every step up to the bad one, and not of its state.
  assert rundir.find_checkpoint(tmp_path)[1] == bad - 1
