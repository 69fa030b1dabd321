"""Figures of the results table (PNG): training curves, Recall@K against K, an example grid.

Why: the table gives a few numbers per row; a reader also wants to see how the trained
rows learned, how each row's recall grows with K, and what the rows retrieve for a few
queries. Everything is drawn from what `evaluation/results.py` leaves in its output
directory, so the figures can be redrawn without re-running a row:

- `<out>/results.json`: the rows (names, labels, in table order) and the split keys
  ('<builder_config>/<split>');
- `<out>/<row>/<builder_config>_<split>.jsonl`: ranked lists in the batch search format
  (`sources.read_ranked_lines`);
- `<out>/runs/<row>/metrics.jsonl`: a trained row's step metrics (`train/reporting.py`).

Figures (`draw_all` draws every one; `tools/figures.py` is its command line):
- `training_curves`: a panel per loss term, a line per trained row, against the step;
- `recall_vs_k`: Recall@K for K = 1..1000 (log K), a panel per split, a line per row;
  scored by `evaluate.evaluate_rankings` (and so `metrics.recall_at_k`) with the table's
  rules, so the curve at K = 10, 100, 1000 equals the table's cells (`recall_curve`);
- `example_grid`: two rows' top products for a few seeded test queries, drawn by
  `example_grid.py` from the dataset's encoded images.

A row that lacks its file is left out of a figure and named in `Written.skipped`; a
figure with no row at all to draw raises ValueError naming the files it looked for.
PNGs are rendered with matplotlib's Agg canvas (no pyplot, no display) into memory and
written atomically (`atomic_file`).
"""

import dataclasses
import io
import json
import math
import os
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from make_jax import atomic_file
from make_jax.evaluation import evaluate, sources
from make_jax.evaluation import example_grid as grid_lib
from make_jax.evaluation.eval_set import EvalSet

# metrics.jsonl keys of the loss terms (train/reporting.LOSS_KEYS) and their panel titles.
LOSS_TERMS = {
  'loss': 'total',
  'qpm': 'QPM',
  'qpc': 'QPC',
  'mlm': 'MLM',
  'mpm': 'MPM',
  'mpm_r': 'MPM_R',
}


@dataclasses.dataclass(frozen=True)
class Written:
  """A figure written: its path, the rows drawn and the rows left out (row -> why)."""

  path: pathlib.Path
  rows: tuple[str, ...]
  skipped: dict[str, str]


def _save(fig: Figure, path: pathlib.Path) -> None:
  FigureCanvasAgg(fig)
  buf = io.BytesIO()
  fig.savefig(buf, format='png')
  atomic_file.write_bytes(path, buf.getvalue())


def row_colours(results: Mapping[str, Any]) -> dict[str, str]:
  """A colour per row of the table, by its place in the table: the same row has the same
  colour in every panel and every figure, whichever rows a panel holds."""
  return {name: f'C{i % 10}' for i, name in enumerate(results['rows'])}


def read_results(out_dir: str | os.PathLike) -> dict[str, Any]:
  """`<out>/results.json` of the results driver.

  Raises:
    ValueError: the file is missing or is not the driver's JSON object.
  """
  path = pathlib.Path(out_dir) / 'results.json'
  if not path.is_file():
    raise ValueError(f'{path} not found: run tools.results with --out={out_dir} first')
  results = json.loads(path.read_text(encoding='utf-8'))
  if not isinstance(results, dict) or not isinstance(results.get('rows'), dict):
    raise ValueError(f'{path} holds no "rows" object')
  return results


def ranked_path(out_dir: str | os.PathLike, row: str, split_key: str) -> pathlib.Path:
  """`<out>/<row>/<builder_config>_<split>.jsonl` of a split key '<builder_config>/<split>'."""
  return pathlib.Path(out_dir) / row / (split_key.replace('/', '_') + '.jsonl')


def read_metrics(path: str | os.PathLike) -> tuple[list[dict[str, float]], int]:
  """(step records, bad lines) of a metrics.jsonl: records holding a 'step', in file order.

  Lines that are not a JSON object with an integer step (a torn last line) are counted.
  """
  records, bad = [], 0
  for line in pathlib.Path(path).read_text(encoding='utf-8').splitlines():
    if not line.strip():
      continue
    try:
      record = json.loads(line)
      int(record['step'])
    except (ValueError, KeyError, TypeError):
      bad += 1
      continue
    records.append(record)
  return records, bad


def _trained_rows(results: Mapping[str, Any], out_dir: pathlib.Path) -> list[str]:
  """The rows of results.json that have a run directory (`<out>/runs/<row>`), in order."""
  return [name for name in results['rows'] if (out_dir / 'runs' / name).is_dir()]


def training_curves(out_dir: str | os.PathLike, *, path: str | os.PathLike = '') -> Written:
  """One panel per loss term present (total, QPM, QPC, MLM, MPM, MPM_R), a line per row.

  Args:
    out_dir: the results directory: the rows of results.json with a run directory are the
      trained rows; their `<out>/runs/<row>/metrics.jsonl` are read (a run directory
      without one, e.g. a run stopped before its first log, is skipped and named).
    path: the PNG (default `<out>/figures/training_curves.png`).

  Raises:
    ValueError: results.json is missing, or no trained row has a metrics.jsonl with a loss.
  """
  out_dir = pathlib.Path(out_dir)
  results = read_results(out_dir)
  curves: dict[str, dict[str, tuple[list[int], list[float]]]] = {}
  skipped: dict[str, str] = {}
  wanted = [out_dir / 'runs' / name / 'metrics.jsonl' for name in _trained_rows(results, out_dir)]
  for file in wanted:
    name = file.parent.name
    if not file.is_file():
      skipped[name] = f'no {file}'
      continue
    records, _ = read_metrics(file)
    row: dict[str, tuple[list[int], list[float]]] = {}
    for record in records:
      for key in LOSS_TERMS:
        value = record.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
          steps, values = row.setdefault(key, ([], []))
          steps.append(int(record['step']))
          values.append(float(value))
    if row:
      curves[name] = row
    else:
      skipped[name] = f'no loss values in {file}'
  if not curves:
    raise ValueError(
      'No training curve to draw: looked for '
      + (', '.join(map(str, wanted)) if wanted else f'run directories {out_dir}/runs/<row>')
      + (f' ({skipped})' if skipped else '')
    )
  terms = [k for k in LOSS_TERMS if any(k in row for row in curves.values())]
  cols = min(3, len(terms))
  nrows = math.ceil(len(terms) / cols)
  fig = Figure(figsize=(5.0 * cols, 3.6 * nrows + 0.6), dpi=100, layout='constrained')
  axes = fig.subplots(nrows, cols, squeeze=False).ravel()
  colours = row_colours(results)
  for ax, term in zip(axes, terms, strict=False):
    for name, row in curves.items():
      if term in row:
        label = results['rows'][name].get('label', name)
        ax.plot(*row[term], label=label, color=colours[name], linewidth=1.2)
    ax.set_title(LOSS_TERMS[term])
    ax.set_xlabel('step')
    ax.set_ylabel('loss' if term == 'loss' else f'{LOSS_TERMS[term]} loss')
    ax.grid(alpha=0.3)
  for ax in axes[len(terms) :]:
    ax.set_visible(False)
  handles, labels = max((ax.get_legend_handles_labels() for ax in axes), key=lambda h: len(h[1]))
  fig.legend(handles, labels, loc='outside lower center', ncols=min(4, len(labels)))
  fig.suptitle('Training losses (window means of metrics.jsonl)')
  path = pathlib.Path(path) if path else out_dir / 'figures' / 'training_curves.png'
  _save(fig, path)
  return Written(path, tuple(curves), skipped)


def recall_curve(
  eval_set: EvalSet, rankings: Mapping[str, Sequence[int]], max_k: int = 1000
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
  """(ks [n], Recall@K [n], counts) for K = 1..max_k, scored as the results table is.

  K past what the lists can hold (lists shorter than the catalogue) is left out, as
  `evaluate.evaluate_rankings` leaves it out of the table. Queries without a list count as
  empty lists (`counts['missing_queries']`).
  """
  res = evaluate.evaluate_rankings(
    eval_set,
    rankings,
    ks=range(1, max_k + 1),
    judged_ks=(),
    bootstrap_samples=0,
    allow_missing=True,
  )
  ks = np.asarray(res['ks'], np.int64)
  recall = np.asarray([res['overall'][f'recall@{k}'] for k in ks], np.float64)
  return ks, recall, res['counts'] | {'recall_queries': res['overall'].get('recall_queries', 0)}


def recall_vs_k(
  out_dir: str | os.PathLike,
  eval_sets: Mapping[str, EvalSet],
  *,
  max_k: int = 1000,
  path: str | os.PathLike = '',
) -> Written:
  """Recall@K against K (log scale), one panel per split, one line per row.

  Args:
    out_dir: the results directory (rows from results.json, ranked lists beside it).
    eval_sets: split key ('<builder_config>/<split>', as results.json names it) -> EvalSet.
    max_k: the largest K.
    path: the PNG (default `<out>/figures/recall_vs_k.png`).

  Raises:
    ValueError: results.json is missing, or no row has a ranked list of any split.
  """
  out_dir = pathlib.Path(out_dir)
  results = read_results(out_dir)
  skipped: dict[str, str] = {}
  drawn: dict[str, None] = {}
  panels = []
  for split_key, es in eval_sets.items():
    lines, scored = [], 0
    for name, row in results['rows'].items():
      file = ranked_path(out_dir, name, split_key)
      if not file.is_file():
        skipped[f'{name} {split_key}'] = f'no {file}'
        continue
      rankings, _ = sources.read_ranked_lines(file)
      ks, recall, counts = recall_curve(es, rankings, max_k)
      lines.append((row.get('label', name), ks, recall, name))
      scored = int(counts['recall_queries'])
      drawn[name] = None
    panels.append((split_key, lines, scored))
  if not drawn:
    raise ValueError(f'No ranked list to draw: none of {sorted(skipped.values())}')
  fig = Figure(figsize=(6.0 * len(panels), 4.8), dpi=100, layout='constrained')
  axes = fig.subplots(1, len(panels), squeeze=False, sharey=True).ravel()
  colours = row_colours(results)
  for ax, (split_key, lines, scored) in zip(axes, panels, strict=True):
    for label, ks, recall, name in lines:
      ax.plot(ks, recall, label=label, color=colours[name], linewidth=1.4, drawstyle='steps-post')
    ax.set_xscale('log')
    ax.set_xlim(1, max_k)
    ax.set_ylim(0, 1)
    ax.set_title(f'{split_key} ({scored} queries with a target)')
    ax.set_xlabel('K')
    ax.set_ylabel('Recall@K')
    ax.grid(alpha=0.3, which='both')
  handles, labels = max((ax.get_legend_handles_labels() for ax in axes), key=lambda h: len(h[1]))
  fig.legend(handles, labels, loc='outside lower center', ncols=min(3, len(labels)))
  path = pathlib.Path(path) if path else out_dir / 'figures' / 'recall_vs_k.png'
  _save(fig, path)
  return Written(path, tuple(drawn), skipped)


def example_grid(
  out_dir: str | os.PathLike,
  eval_set: EvalSet,
  images: Mapping[int, bytes] | Callable[[Sequence[int]], Mapping[int, bytes]],
  *,
  rows: Sequence[str] = ('minilm', 'make'),
  split_key: str = 'default/test',
  queries: int | Sequence[int] = 6,
  top: int = 5,
  seed: int = 0,
  path: str | os.PathLike = '',
) -> Written:
  """For a few test queries, each row's top products: image, short title, a target mark.

  Args:
    out_dir: the results directory (the rows' ranked lists of `split_key` are read).
    eval_set: the split's EvalSet (targets, titles).
    images: product id -> encoded image bytes, or a function of the ids shown to that.
    rows: the rows compared (names as results.json has them).
    split_key: '<builder_config>/<split>' of the lists.
    queries: how many queries (`example_grid.choose_queries` with `seed`), or their indices.
    top: products shown per row.
    path: the PNG (default `<out>/figures/examples_<builder_config>_<split>.png`).

  Returns:
    Written; products without a decodable image (grey tiles) are counted in
    `skipped['images']`.

  Raises:
    ValueError: a row's ranked list is missing, or no query is usable.
  """
  out_dir = pathlib.Path(out_dir)
  results = read_results(out_dir)
  rankings = []
  for name in rows:
    file = ranked_path(out_dir, name, split_key)
    if not file.is_file():
      raise ValueError(f'{file} not found: the example grid needs the ranked lists of {name!r}')
    label = results['rows'].get(name, {}).get('label', name)
    rankings.append((label, sources.read_ranked_lines(file)[0]))
  if isinstance(queries, int):
    queries = grid_lib.choose_queries(eval_set, [r for _, r in rankings], queries, seed)
  if not queries:
    raise ValueError('No query to show')
  shown = {
    int(i) for _, r in rankings for q in queries for i in r.get(eval_set.queries[q], [])[:top]
  }
  pictures = images(sorted(shown)) if callable(images) else images
  fig, missing = grid_lib.grid_figure(eval_set, rankings, pictures, queries, top)
  name = split_key.replace('/', '_')
  path = pathlib.Path(path) if path else out_dir / 'figures' / f'examples_{name}.png'
  _save(fig, path)
  return Written(path, tuple(rows), {'images': f'{missing} not decodable'} if missing else {})


def draw_all(
  out_dir: str | os.PathLike,
  load_split: Callable[[str, str], tuple[Any, EvalSet, Any]],
  *,
  rows_for_examples: Sequence[str] = ('minilm', 'make'),
  examples: int = 6,
  seed: int = 0,
  max_k: int = 1000,
) -> tuple[list[Written], dict[str, str]]:
  """Every figure of a results directory: ([Written], {figure: why it was not drawn}).

  `load_split(builder_config, split) -> (builder, EvalSet, ...)` reads each split that
  results.json names (`eval_set.load_split`); the example grid shows the first split, with
  images from that builder's catalogue.
  """
  results = read_results(out_dir)
  keys = list(dict.fromkeys(k for row in results['rows'].values() for k in row.get('splits', {})))
  loaded = {k: load_split(*k.split('/', 1)) for k in keys}
  jobs = {
    'training_curves': lambda: training_curves(out_dir),
    'recall_vs_k': lambda: recall_vs_k(out_dir, {k: v[1] for k, v in loaded.items()}, max_k=max_k),
  }
  if keys:
    builder, es = loaded[keys[0]][:2]
    jobs['example_grid'] = lambda: example_grid(
      out_dir,
      es,
      lambda ids: grid_lib.product_images(builder, ids),
      rows=rows_for_examples,
      split_key=keys[0],
      queries=examples,
      seed=seed,
    )
  written, failed = [], {}
  for name, job in jobs.items():
    try:
      written.append(job())
    except ValueError as e:
      failed[name] = str(e)
  return written, failed
