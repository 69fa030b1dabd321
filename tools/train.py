r"""Trains a model: one process, or one of many (SPEC section 6).

  python -m tools.train --config=configs/tiny.py --workdir=/tmp/make_tiny
  python -m tools.train --config=configs/base.py --workdir=/tmp/make_base \
      --config.parallelism=pjit --config.data.global_batch_size=512
  python -m tools.train --config=configs/base.py --workdir=/tmp/make_base \
      --init_from=/tmp/make_base/bert_init.msgpack      # from tools/import_bert.py

Many hosts: run the same command on every host with --coordinator_address=host0:1234
--num_processes=N --process_id=i (nothing to pass on one process). A workdir that has
checkpoints is resumed from the newest one.

On a GPU the XLA flags of make_jax/parallel/backend.py are added to XLA_FLAGS (a flag you
set yourself keeps your value); compiled steps are kept in --compilation_cache.
"""

from absl import app, flags
from ml_collections import config_flags

from make_jax.parallel import backend, mesh
from make_jax.train import loop

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py).')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory (checkpoints, metrics, vocab).')
_INIT_FROM = flags.DEFINE_string(
  'init_from', '', 'Pretrained params: an import_bert msgpack file or a run/checkpoint dir.'
)
_COORDINATOR = flags.DEFINE_string(
  'coordinator_address', '', "Process 0's host:port for jax.distributed ('' on one process)."
)
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', 1, 'Processes in the job.')
_PROCESS_ID = flags.DEFINE_integer('process_id', 0, 'This process, in [0, num_processes).')
_HEARTBEAT = flags.DEFINE_integer(
  'heartbeat_timeout', 100, 'Seconds before a silent process is declared dead (multi-process).'
)
_STOP_AT = flags.DEFINE_integer(
  'stop_at', None, 'End after this step (schedules still follow train.num_steps).'
)
_CACHE = flags.DEFINE_string(
  'compilation_cache',
  '~/.cache/make_jax/jax_compilation_cache',
  "JAX's persistent compilation cache ('' for none; JAX_COMPILATION_CACHE_DIR wins).",
)
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  backend.add_gpu_flags()  # Before any backend starts: XLA reads its flags once.
  backend.enable_compilation_cache(_CACHE.value)
  mesh.initialize_distributed(
    _COORDINATOR.value,
    _NUM_PROCESSES.value,
    _PROCESS_ID.value,
    heartbeat_timeout_seconds=_HEARTBEAT.value,
  )
  out = loop.train_and_evaluate(
    _CONFIG.value, _WORKDIR.value, init_from=_INIT_FROM.value, stop_at=_STOP_AT.value
  )
  if out['evals']:
    print('evaluation:', out['evals'][-1])


if __name__ == '__main__':
  app.run(main)
