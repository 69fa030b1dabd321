"""The results figures: Recall@K curves equal a hand count; PNGs are written and show the data.

A tiny results directory is built in tmp_path (results.json, two rows' ranked lists with
known rankings, a trained row's metrics.jsonl) with an EvalSet constructed directly and
synthetic PNG product images, so no dataset is read.
"""

import io
import json

import numpy as np
import pytest
from PIL import Image

from make_jax.evaluation import example_grid, figures
from make_jax.evaluation.eval_set import EvalSet
from make_jax.retrieval.catalogue import Catalogue

# Query -> targets: q0 {1}, q1 {5, 6}, q2 {8}, q3 none (left out of Recall).
QUERIES = ['red shirt', 'blue jeans', 'green cap', 'pink hat']
TARGETS = [[1], [5, 6], [8], []]
# Row minilm ranks the whole catalogue: first target at place 1, 3, 8 (q3 has none).
RANKED_A = {
  'red shirt': [1, 2, 3, 4, 5, 6, 7, 8],
  'blue jeans': [2, 3, 6, 1, 4, 5, 7, 8],
  'green cap': [1, 2, 3, 4, 5, 6, 7, 8],
  'pink hat': [8, 7, 6, 5, 4, 3, 2, 1],
}
# Row make: lists of 4 (K > 4 cannot be scored), 'blue jeans' has no list (an empty one).
RANKED_B = {'red shirt': [2, 3, 7, 1], 'green cap': [8, 1, 2, 3], 'pink hat': [1, 2, 3, 4]}
COLOURS = {i: ((37 * i) % 256, (91 * i) % 256, (53 * i + 100) % 256) for i in range(1, 9)}


def _eval_set() -> EvalSet:
  ids = np.arange(1, 9, dtype=np.int64)
  return EvalSet(
    catalogue=Catalogue(
      ids, [f'product {i} a rather long title that will be shortened' for i in ids]
    ),
    queries=list(QUERIES),
    targets=[np.asarray(t, np.int64) for t in TARGETS],
    generations=[(), (), (), ()],
  )


def _png(colour) -> bytes:
  buf = io.BytesIO()
  Image.new('RGB', (60, 80), colour).save(buf, format='PNG')
  return buf.getvalue()


def _write_ranked(path, ranked):
  path.parent.mkdir(parents=True, exist_ok=True)
  lines = [json.dumps({'query': q, 'product_ids': ids}) for q, ids in ranked.items()]
  path.write_text('\n'.join(lines) + '\n')


@pytest.fixture
def out_dir(tmp_path):
  rows = {
    'minilm': {'label': 'MiniLM', 'status': 'run', 'splits': {'default/test': {}}},
    'make': {'label': 'MAKE', 'status': 'run', 'splits': {'default/test': {}}},
    'make_cdns': {'label': 'MAKE + CDNS', 'status': 'not trained', 'splits': {}},
  }
  results = {'rows': rows, 'ks': [10], 'judged_ks': [10]}
  (tmp_path / 'results.json').write_text(json.dumps(results))
  _write_ranked(tmp_path / 'minilm' / 'default_test.jsonl', RANKED_A)
  _write_ranked(tmp_path / 'make' / 'default_test.jsonl', RANKED_B)
  run = tmp_path / 'runs' / 'make'
  run.mkdir(parents=True)
  (tmp_path / 'runs' / 'make_cdns').mkdir()  # A run stopped before its first log line.
  lines = [
    json.dumps({'step': s, 'loss': 9.0 - s, 'qpm': 4.0 - s / 4, 'mlm': 7.0, 'learning_rate': 1e-3})
    for s in range(1, 9)
  ]
  lines.insert(4, json.dumps({'step': 4, 'recall@10': 0.2}))  # An eval record between steps.
  (run / 'metrics.jsonl').write_text('\n'.join(lines) + '\n{"step": 9, "lo')  # Torn last line.
  return tmp_path


def test_recall_curve_equals_hand_count():
  es = _eval_set()
  ks, recall, counts = figures.recall_curve(es, RANKED_A, max_k=10)
  np.testing.assert_array_equal(ks, np.arange(1, 11))
  # Three queries with a target: hits from K = 1, 3 and 8.
  expected = [1 / 3, 1 / 3, 2 / 3, 2 / 3, 2 / 3, 2 / 3, 2 / 3, 1, 1, 1]
  np.testing.assert_allclose(recall, expected)
  assert counts['recall_queries'] == 3 and counts['missing_queries'] == 0

  ks, recall, counts = figures.recall_curve(es, RANKED_B, max_k=10)
  np.testing.assert_array_equal(ks, [1, 2, 3, 4])  # Lists of 4 of 8 products: K <= 4.
  np.testing.assert_allclose(recall, [1 / 3, 1 / 3, 1 / 3, 2 / 3])
  assert counts['missing_queries'] == 1


def test_loss_terms_are_the_trainers():
  from make_jax.train import reporting

  assert tuple(figures.LOSS_TERMS) == reporting.LOSS_KEYS


def _open(path):
  with Image.open(path) as im:
    im.load()
    return np.asarray(im.convert('RGB'))


def test_figures_are_written(out_dir):
  es = _eval_set()
  curves = figures.training_curves(out_dir)
  assert curves.path == out_dir / 'figures' / 'training_curves.png'
  assert curves.rows == ('make',)
  assert list(curves.skipped) == ['make_cdns']  # A run without metrics.jsonl is named.
  pixels = _open(curves.path)
  assert 300 <= pixels.shape[0] <= 2000 and 600 <= pixels.shape[1] <= 3000

  recall = figures.recall_vs_k(out_dir, {'default/test': es}, max_k=10)
  assert recall.rows == ('minilm', 'make') and list(recall.skipped) == ['make_cdns default/test']
  pixels = _open(recall.path)
  assert 300 <= pixels.shape[0] <= 1500 and 400 <= pixels.shape[1] <= 1500

  pictures = {i: _png(c) for i, c in COLOURS.items() if i != 7}  # 7: no image.
  asked = []
  grid = figures.example_grid(
    out_dir,
    es,
    lambda ids: asked.append(list(ids)) or pictures,
    rows=('minilm', 'make'),
    queries=2,
    top=4,
  )
  pixels = _open(grid.path).reshape(-1, 3).astype(int)
  assert 500 <= len(pixels) ** 0.5 <= 2000
  # The chosen queries are among those with a target and a list in both rows (q0, q2).
  assert example_grid.choose_queries(es, [RANKED_A, RANKED_B], 2) == [0, 2]
  assert asked == [[1, 2, 3, 4, 7, 8]]
  assert grid.skipped == {'images': '1 not decodable'}  # Product 7, shown once.

  def present(colour):
    return bool((np.abs(pixels - np.asarray(colour)).max(axis=1) <= 2).any())

  for pid in (1, 2, 3, 4, 8):  # Every shown product's image is drawn.
    assert present(COLOURS[pid]), pid
  assert not present(COLOURS[5])  # Never in a shown top 4.
  hit = tuple(int(example_grid.HIT_COLOUR[i : i + 2], 16) for i in (1, 3, 5))
  assert present(hit)  # Targets are framed.


def test_missing_inputs_fail_clearly(tmp_path, out_dir):
  with pytest.raises(ValueError, match='results.json not found'):
    figures.training_curves(tmp_path / 'nothing')
  with pytest.raises(ValueError, match='bm25/default_test.jsonl not found'):
    figures.example_grid(out_dir, _eval_set(), {}, rows=('minilm', 'bm25'))
  (out_dir / 'runs' / 'make' / 'metrics.jsonl').unlink()
  with pytest.raises(ValueError, match='runs/make/metrics.jsonl'):
    figures.training_curves(out_dir)
  with pytest.raises(ValueError, match='No ranked list'):
    figures.recall_vs_k(out_dir, {'hide_colour/test': _eval_set()})


class _Catalogue(list):
  """A TFDS data source stand-in: records by index, read in chunks."""

  def __getitems__(self, indices):
    return [self[i] for i in indices]


class _Builder:
  def __init__(self, records):
    self.records = records

  def as_data_source(self, split, decoders=None):
    assert split == 'catalogue' and 'image' in decoders  # Images stay encoded.
    return _Catalogue(self.records)


def test_draw_all_writes_every_figure(out_dir):
  records = [{'product_id': i, 'image': _png(c)} for i, c in COLOURS.items()]
  assert example_grid.product_images(_Builder(records), [8, 2, 99]) == {
    2: records[1]['image'],
    8: records[7]['image'],
  }
  asked = []

  def load_split(config_name, split):
    asked.append((config_name, split))
    return _Builder(records), _eval_set(), []

  written, failed = figures.draw_all(out_dir, load_split, examples=2, max_k=10)
  assert asked == [('default', 'test')] and failed == {}
  names = sorted(w.path.name for w in written)
  assert names == ['examples_default_test.png', 'recall_vs_k.png', 'training_curves.png']
  grid = next(w for w in written if w.path.name.startswith('examples'))
  assert grid.skipped == {}  # Every shown product's image came from the builder.
  (out_dir / 'runs' / 'make' / 'metrics.jsonl').unlink()
  written, failed = figures.draw_all(out_dir, load_split, examples=2, max_k=10)
  assert len(written) == 2 and list(failed) == ['training_curves']


def test_grid_has_a_line_per_row_even_with_equal_labels():
  pictures = {i: _png(c) for i, c in COLOURS.items()}
  fig, missing = example_grid.grid_figure(
    _eval_set(), [('A', RANKED_A), ('A', RANKED_B)], pictures, [0, 2], top=3
  )
  assert missing == 0
  assert [len(sub.axes) for sub in fig.subfigs] == [6, 6]  # 2 rows x 3 products per query.


def test_a_row_keeps_its_colour_in_every_panel(tmp_path, monkeypatch):
  # The text-only row has no MLM: in the MLM panel MAKE must not take its colour.
  rows = {
    'two_tower_text': {'label': 'Two-tower', 'status': 'run', 'splits': {}},
    'make': {'label': 'MAKE', 'status': 'run', 'splits': {}},
  }
  (tmp_path / 'results.json').write_text(json.dumps({'rows': rows, 'ks': [10], 'judged_ks': []}))
  for name, keys in (('two_tower_text', ('loss', 'qpm')), ('make', ('loss', 'qpm', 'mlm'))):
    run = tmp_path / 'runs' / name
    run.mkdir(parents=True)
    lines = [json.dumps({'step': s, **{k: 5.0 - s for k in keys}}) for s in (1, 2, 3)]
    (run / 'metrics.jsonl').write_text('\n'.join(lines) + '\n')
  drawn = []
  monkeypatch.setattr(figures, '_save', lambda fig, path: drawn.append(fig))
  figures.training_curves(tmp_path)
  colours = {}
  for ax in drawn[0].axes:
    for line in ax.get_lines():
      colours.setdefault(line.get_label(), set()).add(line.get_color())
  assert colours == {'Two-tower': {'C0'}, 'MAKE': {'C1'}}
