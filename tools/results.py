r"""The results table: every row on fashion_products test and hide_colour test, one command.

  # The baselines (no training), as docs/results.md reports them:
  python -m tools.results --rows=bm25,minilm --data_dir=/tmp/tfds --out=/tmp/results
  # Every row, training the trained rows at the scale of configs/results.py first:
  python -m tools.results --rows=all --train --data_dir=/tmp/tfds --out=/tmp/results

The from-scratch trained rows run on 8 devices (`pmap`, so that CDNS gathers negatives
across them): when one of them is asked for, on a CPU host this command makes 8
host-platform devices unless XLA_FLAGS already names a count. The pretrained rows
(`minilm_*`) train on one device.

Rows, what each trains and what is not wired yet: make_jax/evaluation/results.py.
Writes <out>/results.json, <out>/results.md, the ranked lists of every row and split
(JSON lines that tools/evaluate.py scores alike) and the figures (<out>/figures/*.png:
training curves, Recall@K against K, example results); prints each row as it starts and
ends (with the trainer's progress lines), then the table. Library INFO logs are hidden
unless `--verbosity` is given.
"""

import functools
import os
import pathlib

from absl import app, flags, logging
from ml_collections import config_flags

from make_jax.evaluation import eval_set, figures, results

_CONFIG = config_flags.DEFINE_config_file(
  'config', 'configs/results.py', 'Config of the trained rows (each row changes its fields).'
)
_ROWS = flags.DEFINE_list('rows', ['bm25', 'minilm'], f'Rows to run, or all: {results.ROW_NAMES}')
_OUT = flags.DEFINE_string('out', None, 'Output directory.', required=True)
_DATA_DIR = flags.DEFINE_string('data_dir', '', "TFDS data_dir ('' = TFDS's default).")
_MANUAL_DIR = flags.DEFINE_string('manual_dir', '../shared/data', 'Folder holding the fashion zip.')
_SPLITS = flags.DEFINE_list(
  'splits',
  ['/'.join(s) for s in results.SPLITS],
  'builder_config/split pairs to score every row on; choose settings on default/validation '
  '(with its own --out), report on the test splits.',
)
_SELECT_ON = flags.DEFINE_string(
  'select_on',
  'default/validation',
  'builder_config/split whose Recall@100 picks the trained row the served rows serve '
  '(scored too; a validation split keeps the choice off the test queries).',
)
_KS = flags.DEFINE_list('ks', ['10', '100', '1000'], 'Recall cut-offs.')
_JUDGED_KS = flags.DEFINE_list('judged_ks', ['10'], 'P_rel / P_cate cut-offs.')
_BOOTSTRAP = flags.DEFINE_integer('bootstrap', 1000, 'Bootstrap resamples (0: no intervals).')
_TRAIN = flags.DEFINE_bool('train', False, 'Train the trained rows (long) before scoring them.')
_FINETUNE_CONFIG = config_flags.DEFINE_config_file(
  'finetune_config', 'configs/finetune.py', 'Config of the pretrained rows (minilm_*).'
)
_INIT_FROM = flags.DEFINE_string(
  'init_from', '', 'Pretrained params for the from-scratch rows (the minilm_* rows name theirs).'
)


@functools.cache  # The figures read the splits the table was scored on.
def _load_split(config_name: str, split: str):
  print(f'reading {config_name}/{split}', flush=True)
  return eval_set.load_split(config_name, split, _DATA_DIR.value, _MANUAL_DIR.value)


def _train(row: results.Row, workdir: pathlib.Path, builder_config: str) -> None:
  from make_jax import atomic_file
  from make_jax.train import loop

  # The from-scratch rows share one vocabulary: the first row learns it, the others read
  # its copy. A pretrained row tokenises with its checkpoint's vocabulary.
  shared_vocab = workdir.parent / 'vocab.txt'
  base = _FINETUNE_CONFIG.value if row.config == 'finetune' else _CONFIG.value
  learns = not row.init_from and not base.text.vocab_path
  data = {
    'data.data_dir': _DATA_DIR.value,
    'data.manual_dir': _MANUAL_DIR.value,
    'data.builder_config': builder_config,
  }
  if learns and shared_vocab.exists():
    data['text.vocab_path'] = str(shared_vocab)
  config = results.apply_overrides(
    results.apply_overrides(base, data), row.overrides_for(builder_config)
  )
  loop.train_and_evaluate(config, workdir, init_from=row.init_from or _INIT_FROM.value)
  if learns and not shared_vocab.exists():
    atomic_file.write_bytes(shared_vocab, (workdir / 'vocab.txt').read_bytes())


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not flags.FLAGS['verbosity'].present:  # Library INFO logs (orbax, TFDS) drown the rows.
    logging.set_verbosity(logging.WARNING)
  rows = list(results.ROW_NAMES) if _ROWS.value == ['all'] else _ROWS.value
  pmap_rows = [r.name for r in results.ROWS if r.name in rows and r.config == 'results']
  if pmap_rows and '--xla_force_host_platform_device_count' not in os.environ.get('XLA_FLAGS', ''):
    # Before JAX makes its CPU client: 8 host devices stand in for accelerators, only
    # where a from-scratch row trains with pmap (they slow a one-device step by ~15%).
    os.environ['XLA_FLAGS'] = (
      os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8'
    ).strip()
  out = results.run_results(
    rows,
    _OUT.value,
    load_split=_load_split,
    splits=[tuple(s.split('/')) for s in _SPLITS.value],
    ks=[int(k) for k in _KS.value],
    judged_ks=[int(k) for k in _JUDGED_KS.value],
    bootstrap_samples=_BOOTSTRAP.value,
    train=_train if _TRAIN.value else None,
    progress=lambda line: print(line, flush=True),
    select_on=tuple(_SELECT_ON.value.split('/')),
  )
  print(results.markdown_table(out, out['ks'], out['judged_ks']))
  written, not_drawn = figures.draw_all(_OUT.value, _load_split)
  for w in written:
    print(w.path)
  for name, why in not_drawn.items():
    print(f'{name}: not drawn ({why})')


if __name__ == '__main__':
  app.run(main)
