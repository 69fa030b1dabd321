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

Recall@K is scored by `evaluate.evaluate_rankings` (and so `metrics.recall_at_k`), with
the table's rules: the curve at K = 10, 100, 1000 equals the table's cells. Product
images come from the dataset's encoded bytes (`product_images` reads them from a TFDS
builder's catalogue split) and are decoded with PIL.

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
import textwrap
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from make_jax import atomic_file
from make_jax.evaluation import evaluate, sources
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
HIT_COLOUR = '#1a9641'
MISS_COLOUR = '#bbbbbb'


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
  """The rows that train: `results.ROWS` says so, or the row has a run directory."""
  from make_jax.evaluation import results as results_lib

  kinds = {r.name: r.kind for r in results_lib.ROWS}
  return [
    name
    for name in results['rows']
    if kinds.get(name) == 'trained' or (out_dir / 'runs' / name).is_dir()
  ]


def training_curves(out_dir: str | os.PathLike, *, path: str | os.PathLike = '') -> Written:
  """One panel per loss term present (total, QPM, QPC, MLM, MPM, MPM_R), a line per row.

  Args:
    out_dir: the results directory (`<out>/runs/<row>/metrics.jsonl` are read).
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
      + (', '.join(map(str, wanted)) if wanted else f'trained rows in {out_dir}/results.json')
      + (f' ({skipped})' if skipped else '')
    )
  terms = [k for k in LOSS_TERMS if any(k in row for row in curves.values())]
  cols = min(3, len(terms))
  nrows = math.ceil(len(terms) / cols)
  fig = Figure(figsize=(5.0 * cols, 3.6 * nrows + 0.6), dpi=100, layout='constrained')
  axes = fig.subplots(nrows, cols, squeeze=False).ravel()
  for ax, term in zip(axes, terms, strict=False):
    for name, row in curves.items():
      if term in row:
        ax.plot(*row[term], label=results['rows'][name].get('label', name), linewidth=1.2)
    ax.set_title(LOSS_TERMS[term])
    ax.set_xlabel('step')
    ax.set_ylabel('loss' if term == 'loss' else f'{LOSS_TERMS[term]} loss')
    ax.grid(alpha=0.3)
  for ax in axes[len(terms) :]:
    ax.set_visible(False)
  handles, labels = axes[0].get_legend_handles_labels()
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
      lines.append((row.get('label', name), ks, recall))
      scored = int(counts['recall_queries'])
      drawn[name] = None
    panels.append((split_key, lines, scored))
  if not drawn:
    raise ValueError(f'No ranked list to draw: none of {sorted(skipped.values())}')
  fig = Figure(figsize=(6.0 * len(panels), 4.8), dpi=100, layout='constrained')
  axes = fig.subplots(1, len(panels), squeeze=False, sharey=True).ravel()
  for ax, (split_key, lines, scored) in zip(axes, panels, strict=True):
    for label, ks, recall in lines:
      ax.plot(ks, recall, label=label, linewidth=1.4, drawstyle='steps-post')
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


def choose_queries(
  eval_set: EvalSet, rankings: Sequence[Mapping[str, Sequence[int]]], n: int, seed: int = 0
) -> list[int]:
  """`n` query indices drawn with `seed` among the queries that have a target and a list
  in every ranking (ascending; the same for the same inputs, never picked by result)."""
  ok = [
    i
    for i, q in enumerate(eval_set.queries)
    if len(eval_set.targets[i]) and all(q in r for r in rankings)
  ]
  if not ok:
    raise ValueError('No query has a target and a ranked list in every row')
  rng = np.random.default_rng(seed)
  return sorted(rng.choice(ok, size=min(n, len(ok)), replace=False).tolist())


def product_images(builder: Any, product_ids: Sequence[int], split: str = 'catalogue') -> dict:
  """{product id: encoded image bytes} of the wanted products from a TFDS builder's split."""
  import tensorflow_datasets as tfds  # Heavy: only when a builder is read.

  wanted = {int(i) for i in product_ids}
  source = builder.as_data_source(split, decoders={'image': tfds.decode.SkipDecoding()})
  out: dict[int, bytes] = {}
  for start in range(0, len(source), 2048):
    for record in source.__getitems__(list(range(start, min(start + 2048, len(source))))):
      pid = int(record['product_id'])
      if pid in wanted and pid not in out:
        out[pid] = bytes(record['image'])
  return out


def _decode(data: bytes | None) -> np.ndarray | None:
  from PIL import Image, UnidentifiedImageError

  if not data:
    return None
  try:
    with Image.open(io.BytesIO(data)) as im:
      return np.asarray(im.convert('RGB'))
  except (UnidentifiedImageError, OSError, ValueError):
    return None


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
    images: product id -> encoded image bytes, or a function of the ids needed to that.
    rows: the rows compared (names as results.json has them).
    split_key: '<builder_config>/<split>' of the lists.
    queries: how many queries (`choose_queries` with `seed`), or their indices.
    top: products shown per row.
    path: the PNG (default `<out>/figures/examples_<split>.png`).

  A product in the query's target set gets a green frame and a tick; a product without a
  decodable image is drawn as an empty grey tile, counted in `skipped['images']`.

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
    rankings.append(sources.read_ranked_lines(file)[0])
  chosen = (
    choose_queries(eval_set, rankings, queries, seed) if isinstance(queries, int) else queries
  )
  if not chosen:
    raise ValueError('No query to show')
  shown = {q: [r.get(eval_set.queries[q], [])[:top] for r in rankings] for q in chosen}
  needed = sorted({i for lists in shown.values() for ids in lists for i in ids})
  pictures = images(needed) if callable(images) else images
  labels = [results['rows'].get(n, {}).get('label', n) for n in rows]
  fig = Figure(figsize=(1.9 * top + 1.4, 3.9 * len(chosen)), dpi=100, layout='constrained')
  missing = 0
  for sub, q in zip(fig.subfigures(len(chosen), 1, squeeze=False).ravel(), chosen, strict=True):
    targets = set(eval_set.targets[q].tolist())
    sub.suptitle(
      f'"{eval_set.queries[q]}"  ({len(targets)} target product{"s" * (len(targets) != 1)})',
      fontsize=11,
      ha='left',
      x=0.01,
    )
    axes = sub.subplots(len(rows), top, squeeze=False)
    for r, ids in enumerate(shown[q]):
      axes[r, 0].set_ylabel(textwrap.fill(labels[r], 16), fontsize=9)
      for c in range(top):
        ax = axes[r, c]
        ax.set_xticks([])
        ax.set_yticks([])
        if c >= len(ids):
          ax.set_frame_on(False)
          continue
        pid = ids[c]
        picture = _decode(pictures.get(pid))
        if picture is None:
          missing += 1
          picture = np.full((80, 60, 3), 220, np.uint8)
        ax.imshow(picture)
        hit = pid in targets
        for spine in ax.spines.values():
          spine.set_edgecolor(HIT_COLOUR if hit else MISS_COLOUR)
          spine.set_linewidth(4 if hit else 1)
        row_ = eval_set.rows_of(np.asarray([pid]))[0]
        title = eval_set.titles[row_] if row_ >= 0 else f'id {pid} (not in catalogue)'
        title = textwrap.shorten(title, 44, placeholder='…')
        ax.set_title(
          ('✓ ' if hit else '') + textwrap.fill(title, 22),
          fontsize=7,
          color=HIT_COLOUR if hit else 'black',
        )
  name = split_key.replace('/', '_')
  path = pathlib.Path(path) if path else out_dir / 'figures' / f'examples_{name}.png'
  _save(fig, path)
  return Written(path, tuple(rows), {'images': f'{missing} not decodable'} if missing else {})
