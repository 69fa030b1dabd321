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
  out = _OUT.value
  results = figures.read_results(out)
  split_keys = list(dict.fromkeys(k for row in results['rows'].values() for k in row['splits']))
  loaded = {}
  for key in split_keys:
    logging.info('reading %s', key)
    config_name, split = key.split('/')
    loaded[key] = eval_set.load_split(config_name, split, _DATA_DIR.value, _MANUAL_DIR.value)
  jobs = {
    'training_curves': lambda: figures.training_curves(out),
    'recall_vs_k': lambda: figures.recall_vs_k(
      out, {k: es for k, (_, es, _) in loaded.items()}, max_k=_MAX_K.value
    ),
  }
  if split_keys:
    builder, es, _ = loaded[split_keys[0]]
    jobs['example_grid'] = lambda: figures.example_grid(
      out,
      es,
      lambda ids: figures.product_images(builder, ids),
      rows=_ROWS.value,
      split_key=split_keys[0],
      queries=_EXAMPLES.value,
      seed=_SEED.value,
    )
  written = 0
  for name, job in jobs.items():
    try:
      result = job()
    except ValueError as e:
      print(f'not written: {name}: {e}')
      continue
    written += 1
    print(result.path)
    for what, why in result.skipped.items():
      print(f'  left out of {name}: {what}: {why}')
  if not written:
    raise SystemExit(f'No figure could be drawn from {out}')


if __name__ == '__main__':
  app.run(main)
