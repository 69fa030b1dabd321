r"""Figures of a results directory: training curves, Recall@K against K, an example grid (PNG).

  python -m tools.figures --out=/tmp/results --data_dir=/tmp/tfds \
    --rows_for_examples=minilm,make

Reads what `tools.results --out=OUT` wrote (results.json, the rows' ranked lists, the
trained rows' metrics.jsonl) and the splits' queries and targets (prepared as
tools.results prepares them), writes OUT/figures/*.png and prints their paths. A figure
that cannot be drawn (e.g. no trained row yet) is reported and the others are written;
the command fails when none is. Drawing: make_jax/evaluation/figures.py.
"""

from absl import app, flags, logging

from make_jax.evaluation import eval_set, figures

_OUT = flags.DEFINE_string('out', None, 'The results directory of tools.results.', required=True)
_DATA_DIR = flags.DEFINE_string('data_dir', '', "TFDS data_dir ('' = TFDS's default).")
_MANUAL_DIR = flags.DEFINE_string('manual_dir', '../shared/data', 'Folder holding the fashion zip.')
_ROWS = flags.DEFINE_list('rows_for_examples', ['minilm', 'make'], 'The two rows of the grid.')
_EXAMPLES = flags.DEFINE_integer('examples', 6, 'Queries in the example grid.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed that draws the example queries.')
_MAX_K = flags.DEFINE_integer('max_k', 1000, 'Largest K of the Recall@K figure.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')

  def load_split(config_name: str, split: str):
    logging.info('reading %s/%s', config_name, split)
    return eval_set.load_split(config_name, split, _DATA_DIR.value, _MANUAL_DIR.value)

  written, failed = figures.draw_all(
    _OUT.value,
    load_split,
    rows_for_examples=_ROWS.value,
    examples=_EXAMPLES.value,
    seed=_SEED.value,
    max_k=_MAX_K.value,
  )
  for result in written:
    print(result.path)
    for what, why in result.skipped.items():
      print(f'  left out of {result.path.name}: {what}: {why}')
  for name, why in failed.items():
    print(f'not written: {name}: {why}')
  if not written:
    raise SystemExit(f'No figure could be drawn from {_OUT.value}')


if __name__ == '__main__':
  app.run(main)
