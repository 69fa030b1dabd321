r"""Builds the offline qid -> top-K products table of a query log (a Beam pipeline).

  python -m tools.build_query_table --config=configs/tiny.py --workdir=/tmp/make_tiny \
      --index=/tmp/index --queries=/path/queries.txt --out=/tmp/qid_table
  # Multi-CPR's `qid<TAB>query` lines: --query_column=1 --count_column=-1

One row per distinct sorted-word sequence (its qid as in training, the most frequent surface
form, summed counts, top-K ids and scores); shards of memory-mapped sorted arrays,
published atomically with a manifest naming the index and model (make_jax/export/query_table.py).
With --workdir, --index and --out default to `<workdir>/export/index` and
`<workdir>/export/query_table`, and without --config the run's `config.json` is the config.
"""

import pathlib
import time

from absl import app, flags
from ml_collections import config_flags

from make_jax import rundir
from make_jax.export import model_handler, query_table

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/tiny.py', 'Model config.')
_WORKDIR = flags.DEFINE_string('workdir', '', 'Trainer workdir (checkpoints, vocab.txt).')
_CHECKPOINT = flags.DEFINE_string('checkpoint', '', 'A checkpoint dir (default: the newest).')
_VOCAB = flags.DEFINE_string('vocab', '', 'vocab.txt (default: <workdir>/vocab.txt).')
_RANDOM = flags.DEFINE_bool('random_init', False, 'Use a randomly initialised model.')
_INDEX = flags.DEFINE_string('index', '', 'Index directory (tools.build_index).')
_QUERIES = flags.DEFINE_list('queries', None, 'Query log files.', required=True)
_OUT = flags.DEFINE_string('out', '', 'Table directory (replaced atomically).')
_K = flags.DEFINE_integer('k', 100, 'Products per query.')
_QCOL = flags.DEFINE_integer('query_column', 0, 'Tab-separated column of the query.')
_CCOL = flags.DEFINE_integer('count_column', 1, 'Column of the count (-1: none).')
_BITS = flags.DEFINE_integer('shard_bits', 4, '2**shard_bits shards by qid prefix.')
_BATCH = flags.DEFINE_integer('batch_size', 256, 'Query encoder batch.')
_DEVICES = flags.DEFINE_integer('num_devices', 1, 'Local devices to shard each batch over.')
_BEAM = flags.DEFINE_list('beam_args', [], 'Beam pipeline options, comma-separated.')
_MAX_BAD = flags.DEFINE_float(
  'max_bad_fraction',
  0.01,
  'Fail (keeping the previous output) when more than this share of the input lines or records '
  'is unreadable; they are skipped and counted by reason in the manifest.',
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = rundir.run_config(_WORKDIR.value, _CONFIG.value, flags.FLAGS['config'].present)
  layout = rundir.RunDir(pathlib.Path(_WORKDIR.value)) if _WORKDIR.value else None
  index = _INDEX.value or (str(layout.index) if layout else '')
  out = _OUT.value or (str(layout.query_table) if layout else '')
  if not (index and out):
    raise app.UsageError('give --workdir, or both --index and --out')
  vocab, loader = model_handler.model_source(
    config,
    workdir=_WORKDIR.value,
    checkpoint=_CHECKPOINT.value,
    vocab=_VOCAB.value,
    random_init=_RANDOM.value,
  )
  start = time.perf_counter()
  m = query_table.build_query_table(
    config,
    vocab,
    _QUERIES.value,
    index,
    out,
    loader=loader,
    k=_K.value,
    shard_bits=_BITS.value,
    query_column=_QCOL.value,
    count_column=_CCOL.value,
    batch_size=_BATCH.value,
    num_devices=_DEVICES.value,
    pipeline_args=_BEAM.value,
    max_bad_fraction=_MAX_BAD.value,
  )
  print({'rows': m['rows'], 'counters': m['counters'], 'seconds': time.perf_counter() - start})


if __name__ == '__main__':
  app.run(main)
