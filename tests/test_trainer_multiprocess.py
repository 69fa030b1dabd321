"""Two processes train as one: `jax.distributed` over loopback equals one 8-device process.

A multi-host job must compute what one big host would: each process reads its own input
shard, the global batch is assembled from the host-local ones, the losses gather product
embeddings across the process boundary (CDNS), and the checkpoint is written collectively.
Here two `tools.train` processes (4 fake CPU devices each, gloo collectives) run the tiny
config in the 'pjit' layout for 8 steps, and their logged losses are compared with one
process holding all 8 devices (the same two input shards), step for step.
"""

import socket
import subprocess
import sys

import numpy as np
import pytest

from make_jax import rundir
from make_jax.train import loop
from tests import trainer_testlib


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_equal_one_process_with_all_devices(tmp_path_factory, tmp_path):
  prepared = trainer_testlib.prepare(tmp_path_factory)
  workdir = tmp_path / 'two'
  flags = trainer_testlib.train_flags(*prepared) + [
    '--config.parallelism=pjit',
    '--config.data.input_shards=2',
    f'--workdir={workdir}',
    f'--coordinator_address=127.0.0.1:{_free_port()}',
    '--num_processes=2',
    '--stop_at=8',
    # A CPU shared with other jobs can starve a process's heartbeats during a long compile.
    '--heartbeat_timeout=900',
  ]
  logs = [open(tmp_path / f'log{i}.txt', 'w') for i in range(2)]
  procs = [
    subprocess.Popen(
      [sys.executable, '-m', 'tools.train', *flags, f'--process_id={i}'],
      cwd=trainer_testlib.ROOT,
      env=trainer_testlib.trainer_env(4),
      stdout=logs[i],
      stderr=subprocess.STDOUT,
    )
    for i in range(2)
  ]
  try:
    codes = [p.wait(600) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait(30)
    for f in logs:
      f.close()
  assert codes == [0, 0], [(tmp_path / f'log{i}.txt').read_text()[-2000:] for i in range(2)]
  got = trainer_testlib.read_metrics(workdir)
  assert sorted(got) == list(range(1, 9))
  assert rundir.find_checkpoint(workdir)[1] == 8  # Written collectively by both.

  config = trainer_testlib.tiny_config(*prepared)
  config.parallelism = 'pjit'
  config.data.input_shards = 2
  one = loop.train_and_evaluate(config, tmp_path / 'one', stop_at=8)
  want = {h['step']: h for h in one['history']}
  for step in range(1, 9):
    # gloo adds across processes in another order than one process does (see rtol).
    rtol = trainer_testlib.rtol(step)
    for k in trainer_testlib.TERMS:
      np.testing.assert_allclose(got[step][k], want[step][k], rtol=rtol, err_msg=f'{step} {k}')
  # CDNS crosses the process boundary: a query's cross-device negatives are the 14 rows of
  # the other 7 devices (fewer only by accidental hits); within its own process there are
  # only 6 (3 other devices x 2 rows).
  assert all(6 < got[s]['qpm_negatives_cross_device'] <= 14 for s in got)
