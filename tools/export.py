r"""Exports product (or, with --queries, query) embeddings as a Beam pipeline.

  python -m tools.export --config=configs/tiny.py --workdir=/tmp/make_tiny --out=/tmp/emb
  python -m tools.export --config=configs/tiny.py --workdir=/tmp/make_tiny \
      --queries=/path/queries.txt --out=/tmp/query_emb
  # Another runner: --beam_args=--runner=DataflowRunner,--project=...,--region=...

The params are the newest checkpoint under `<workdir>/checkpoints/` (or --checkpoint);
--random_init exports an untrained model. The vocabulary is `<workdir>/vocab.txt` unless
--vocab or `config.text.vocab_path` says otherwise. Without --config, a workdir's own
`config.json` is the config; without --out, products go to `<workdir>/export/products`
(where `tools.serve --workdir` reads them).
"""

import pathlib

from absl import app, flags, logging
from ml_collections import config_flags

from make_jax import rundir
from make_jax.export import embed, model_handler

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/tiny.py', 'Model config.')
_WORKDIR = flags.DEFINE_string('workdir', '', 'Trainer workdir (checkpoints, vocab.txt).')
_CHECKPOINT = flags.DEFINE_string('checkpoint', '', 'A checkpoint dir (default: the newest).')
_VOCAB = flags.DEFINE_string('vocab', '', 'vocab.txt (default: <workdir>/vocab.txt).')
_RANDOM = flags.DEFINE_bool('random_init', False, 'Export a randomly initialised model.')
_OUT = flags.DEFINE_string(
  'out', '', 'Output directory (replaced atomically; default <workdir>/export/products).'
)
_QUERIES = flags.DEFINE_list('queries', [], 'Query log files: export queries, not products.')
_QCOL = flags.DEFINE_integer('query_column', 0, 'Tab-separated column of the query.')
_CCOL = flags.DEFINE_integer('count_column', 1, 'Column of the count (-1: none).')
_SPLIT = flags.DEFINE_string('split', 'catalogue', 'Catalogue split (every product once).')
_BATCH = flags.DEFINE_integer('batch_size', 64, 'Encoder batch (divisible by devices).')
_DEVICES = flags.DEFINE_integer('num_devices', 1, 'Local devices to shard each batch over.')
_SHARDS = flags.DEFINE_integer('num_shards', 4, 'Output shard files.')
_LIMIT = flags.DEFINE_integer('limit', None, 'Export only the first N records.')
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
  out = _OUT.value
  if not out:
    if _QUERIES.value or not _WORKDIR.value:
      raise app.UsageError('--out is required (it defaults only for a --workdir catalogue export)')
    out = str(rundir.RunDir(pathlib.Path(_WORKDIR.value)).products)
  vocab, loader = model_handler.model_source(
    config,
    workdir=_WORKDIR.value,
    checkpoint=_CHECKPOINT.value,
    vocab=_VOCAB.value,
    random_init=_RANDOM.value,
  )
  common = {
    'loader': loader,
    'batch_size': _BATCH.value,
    'num_devices': _DEVICES.value,
    'num_shards': _SHARDS.value,
    'pipeline_args': _BEAM.value,
    'max_bad_fraction': _MAX_BAD.value,
  }
  if _QUERIES.value:
    m = embed.export_queries(
      config,
      vocab,
      _QUERIES.value,
      out,
      query_column=_QCOL.value,
      count_column=_CCOL.value,
      **common,
    )
  else:
    m = embed.export_catalogue(config, vocab, out, split=_SPLIT.value, limit=_LIMIT.value, **common)
  logging.info('Exported %d embeddings of dim %d to %s', m['count'], m['dim'], out)
  print({k: v for k, v in m.items() if k != 'shards'})


if __name__ == '__main__':
  app.run(main)
