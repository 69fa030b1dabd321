"""The results table (SPEC 9): every row on `fashion_products` test and its hide_colour test.

Why one driver: the rows of the table (baselines, the text-only two-tower, MAKE and its
ablations, the best row behind relevance control) must be scored on the same queries,
catalogue and rules, and re-run with one command when the code changes.
`tools/results.py` is its command line.

Rows (`ROWS`; config fields from configs/base.py):
- `bm25`, `minilm`: the baselines of `evaluation/baselines.py` (no training).
- `two_tower_text`: a text-only two-tower with in-batch negatives (the CLIP-style
  baseline): `model.product_image=False` (the product embedding is the projected title
  [CLS] alone: no image encoder, no Modal Adaptation), QPM alone (`loss.weights.qpm=1`,
  the others 0; its log-p correction and learned temperature as in configs/base.py),
  `loss.bank_batches=0` (no MBNS) and `loss.cdns_start_fraction=1.0` (no CDNS).
- `make`: MAKE as the paper's base: MLM + MPM (regression) + QPM + QPC, in-batch
  negatives only: `loss.weights.mpm=1`, `mpm_r=0`, `loss.cdns_start_fraction=1.0` (the
  switch step equals `num_steps`, which no step reaches), `loss.bank_batches=0` (no queue).
- `make_cdns` (+ `cdns_start_fraction=0.5`), `make_mbns` (+ `w_mbns=0.25`, `bank_batches=8`,
  `bank_start_fraction=0.5`: the queue counts from half-way), `make_mpm_r` (MPM_R instead
  of MPM), `make_all` (the three).
- `best_relevance_control`, `best_relevance_backfill`: the trained row with the best
  Recall@100 on `select_on` (`tools/results.py`: default/validation, scored beside the
  test splits, so the choice never sees a test query), served as `tools/search` serves it: its newest checkpoint exported and indexed per
  catalogue, every query answered online by the searcher with relevance control
  (attribute filters around the index); `evaluation/served.py`. The first row filters
  strictly (the paper's filter: lists may be shorter than K), the second backfills (the
  serving default: satisfying products first, then the best of the rest, K long); both
  read the same served view.

Pretrained rows (`minilm_*`, the table's first section) start from all-MiniLM-L6-v2 at the
scale of configs/finetune.py (`--init_from=minilm`): the text-only two-tower (QPM alone),
MAKE (QPM + QPC, image tower and Modal Adaptation from a title-only start), and MAKE with
the MBNS queue from step 0 (the paper's reading for a pretrained start). Each trains once
per scored builder config on that config's train split (`Row.per_config`: the hide_colour
lines are a model trained on hide_colour's titles, `<out>/runs/<row>@hide_colour`).

The from-scratch rows (the ablation section) run `make_jax.train.loop.train_and_evaluate`
on the `default` config's train split at the scale of configs/results.py (every row the
same data, width and step budget; the row changes only its fields), one workdir per row
under `<out>/runs/`, and are
evaluated by exact search over the catalogue with the run's newest checkpoint, vocabulary
and domain words. CDNS only differs from in-batch negatives with more than one device:
the scale uses `parallelism=pmap` over 8 (fake, on CPU) devices.

Output: `<out>/<row>/<builder_config>_<split>.jsonl` (ranked lists, batch search format),
`<out>/results.json` (overall metrics, intervals and counts per row and split) and
`<out>/results.md` (the table), written atomically.
"""

import hashlib
import json
import math
import pathlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np

from make_jax import atomic_file, rundir
from make_jax.evaluation import baselines, evaluate, served, sources
from make_jax.evaluation.eval_set import EvalSet
from make_jax.evaluation.rows import (  # noqa: F401  (the driver's names for its rows)
  BY_NAME,
  ROW_NAMES,
  ROWS,
  TRAINED_ROWS,
  Row,
  apply_overrides,
  row_workdir,
)

SPLITS = (('default', 'test'), ('hide_colour', 'test'))


# Featurised catalogues of this process, shared by the trained rows (`rank_trained`), and
# the product embeddings of a run's checkpoint over one catalogue (a row scored on two
# splits of one builder config, test and validation, embeds its catalogue once).
_CATALOGUES: dict[str, dict[str, Any]] = {}
_PRODUCT_EMBEDDINGS: dict[tuple[str, int, str], Any] = {}


def rank_trained(
  workdir: pathlib.Path, builder: Any, split: str, ks: Sequence[int]
) -> tuple[list[str], np.ndarray, np.ndarray]:
  """(queries, ids [Q, K], scores [Q, K]) of a trained run (newest checkpoint) by exact search.

  K is `max(ks)` (at most the catalogue size); scores are the cosine of the query and
  product embeddings.
  """
  from make_jax.models import make_model
  from make_jax.retrieval import evaluator as evaluator_lib
  from make_jax.text.preprocess import TextPreprocessor

  config = ml_collections.ConfigDict(json.loads((workdir / 'config.json').read_text()))
  words = (workdir / 'domain_words.txt').read_text(encoding='utf-8').splitlines()
  preprocessor = TextPreprocessor.from_config(
    config.text, workdir / 'vocab.txt', [w for w in words if w]
  )
  params, step = rundir.latest_params(workdir)
  # Rows trained on the same data learn the same vocabulary: they share the catalogue.
  key = hashlib.sha256(
    json.dumps(
      [
        str(builder.data_dir),
        config.data.image_size,
        config.text.title_len,
        config.text.sort_words,
        config.text.strip_accents,
        config.text.get('keep_punctuation', False),
      ]
    ).encode()
    + (workdir / 'vocab.txt').read_bytes()
    + b'\0'
    + (workdir / 'domain_words.txt').read_bytes()
  ).hexdigest()
  ev = evaluator_lib.RetrievalEvaluator(
    config,
    preprocessor,
    builder,
    split=split,
    ks=ks,
    catalogue_cache=_CATALOGUES,
    catalogue_key=key,
  )
  model = make_model.build_model(config)
  query_emb = ev.embed_queries(model, params)
  cached = (str(workdir.absolute()), step, key)
  if cached not in _PRODUCT_EMBEDDINGS:
    _PRODUCT_EMBEDDINGS.clear()  # One run's at a time: rows are scored one after another.
    _PRODUCT_EMBEDDINGS[cached] = ev.embed_products(model, params)
  product_emb = _PRODUCT_EMBEDDINGS[cached]
  rows = ev.search(query_emb, product_emb)
  q = np.asarray(query_emb, np.float32)[: len(rows)]
  p = np.asarray(product_emb, np.float32)
  scores = np.einsum('qd,qkd->qk', q, p[rows])
  return list(ev.query_texts), ev.product_ids[rows], scores


def _cell(overall: Mapping[str, float], key: str) -> str:
  v = overall.get(key, math.nan)
  if math.isnan(v):
    return '-'
  lo, hi = overall.get(f'{key}_lo', math.nan), overall.get(f'{key}_hi', math.nan)
  return f'{v:.4f}' if math.isnan(lo) else f'{v:.4f} [{lo:.3f}, {hi:.3f}]'


def markdown_table(results: Mapping[str, Any], ks: Sequence[int], judged_ks: Sequence[int]) -> str:
  """The results as a markdown table: one line per row and split, 95% intervals, and the
  row's training time (minutes, from its start to its last checkpoint; '-' for untrained
  rows or rows trained by an earlier command)."""
  keys = [f'recall@{k}' for k in ks] + [f'{m}@{k}' for m in ('p_rel', 'p_cate') for k in judged_ks]
  head = ['row', 'split', *[k.replace('_', '\\_') for k in keys], 'training (min)']
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for row in results['rows'].values():
    minutes = f'{row["train_seconds"] / 60:.1f}' if 'train_seconds' in row else '-'
    for split, res in row['splits'].items():
      by_config = row.get('train_seconds_by_config', {})
      config_name = split.split('/')[0]
      if config_name in by_config:  # This split's own run.
        minutes = f'{by_config[config_name] / 60:.1f}'
      cells = [_cell(res['overall'], k) for k in keys] if 'overall' in res else ['-'] * len(keys)
      lines.append(f'| {row["label"]} | {split} | ' + ' | '.join(cells) + f' | {minutes} |')
    if not row['splits']:
      lines.append(f'| {row["label"]} | not run: {row["status"]} |' + ' |' * (len(keys) + 1))
  return '\n'.join(lines) + '\n'


def _previous_rows(path: pathlib.Path, ks: Sequence[int], judged_ks: Sequence[int]) -> dict:
  """Rows of an earlier results.json in the same directory scored with the same cut-offs."""
  if not path.exists():
    return {}
  old = json.loads(path.read_text())
  if old.get('ks') != list(ks) or old.get('judged_ks') != list(judged_ks):
    return {}
  return {name: row for name, row in old.get('rows', {}).items() if name in ROW_NAMES}


def run_results(
  rows: Sequence[str],
  out_dir: str | pathlib.Path,
  *,
  load_split: Callable[[str, str], tuple[Any, EvalSet, list[str]]],
  splits: Sequence[tuple[str, str]] = SPLITS,
  ks: Sequence[int] = evaluate.DEFAULT_KS,
  judged_ks: Sequence[int] = evaluate.DEFAULT_JUDGED_KS,
  bootstrap_samples: int = 1000,
  train: Callable[[Row, pathlib.Path, str], None] | None = None,
  progress: Callable[[str], None] = lambda line: None,
  select_on: tuple[str, str] | None = None,
) -> dict[str, Any]:
  """Runs and scores the named rows on every split; writes results.json and results.md.

  Args:
    rows: names from `ROW_NAMES`, in table order.
    out_dir: where ranked lists, results.json and results.md go.
    load_split: (builder_config, split) -> (builder, EvalSet, domain words).
    splits: (builder_config, split) pairs every row is scored on.
    ks, judged_ks, bootstrap_samples: as `evaluate.evaluate_rankings`.
    train: (row, workdir, builder_config) -> None trains a row on that config's train
      split (None: trained rows are only evaluated where `row_workdir` already holds a
      checkpoint, else reported as not run).
    progress: called with a line as each row starts and ends (the CLI prints them).
    select_on: the (builder_config, split) whose Recall@100 picks the trained row that the
      served rows serve (scored like the others, added to `splits` if missing; a
      validation split keeps the choice off the test queries). None: the first of `splits`.

  Rows already in `<out>/results.json` (scored with the same cut-offs) stay in it and in
  the table unless re-run, so rows can be run one command at a time.

  Returns:
    {'rows': {name: {'label', 'status', 'seconds', 'splits': {'<config>/<split>': result
    without per-query values}}}, 'ks', 'judged_ks'}.
  """
  unknown = sorted(set(rows) - set(ROW_NAMES))
  if unknown:
    raise ValueError(f'Unknown rows {unknown}; known: {list(ROW_NAMES)}')
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  select_on = tuple(select_on or splits[0])
  splits = [tuple(s) for s in splits]
  if select_on not in splits:
    splits.append(select_on)
  loaded = {s: load_split(*s) for s in splits}
  builder_configs = list(dict.fromkeys(c for c, _ in splits))
  minilm = None
  results: dict[str, Any] = {'rows': {}, 'ks': list(ks), 'judged_ks': list(judged_ks)}
  previous = _previous_rows(out_dir / 'results.json', ks, judged_ks)
  for row in (r for r in ROWS if r.name in rows):
    entry: dict[str, Any] = {'label': row.label, 'status': 'run', 'splits': {}}
    start = time.time()
    progress(f'{row.name}: {row.label}')
    source = row  # The row whose runs are scored: a served row's is the selected one.
    if row.kind == 'pending':
      entry['status'] = row.note
    elif row.kind == 'trained' and train is not None:
      seconds = {}
      for config_name in builder_configs if row.per_config else ['default']:
        t = time.time()
        train(row, row_workdir(out_dir, row, config_name), config_name)
        seconds[config_name] = round(time.time() - t, 1)
      entry['train_seconds'] = round(sum(seconds.values()), 1)
      if row.per_config:
        entry['train_seconds_by_config'] = seconds
    elif row.kind == 'served':
      try:  # Rows scored by this run or kept from an earlier one.
        entry['source_row'] = served.best_trained_row(
          {'rows': previous}, TRAINED_ROWS, split='/'.join(select_on)
        )
        entry['selected_on'] = '/'.join(select_on)
        source = BY_NAME[entry['source_row']]
      except ValueError as e:
        entry['status'] = str(e)
    if row.kind == 'trained':
      for config_name in builder_configs:
        workdir = row_workdir(out_dir, row, config_name)
        if not (workdir / 'checkpoints').is_dir():
          entry['status'] = 'not trained (no checkpoint in ' + str(workdir) + ')'
    if entry['status'] == 'run':
      for (config_name, split), (builder, es, domain_words) in loaded.items():
        workdir = row_workdir(out_dir, source, config_name)
        if row.kind == 'bm25':
          ids, scores = baselines.bm25_rankings(es, max(ks), domain_words=domain_words)
        elif row.kind == 'minilm':
          minilm = minilm or baselines.MiniLM()
          ids, scores = baselines.minilm_rankings(es, max(ks), model=minilm)
        queries = es.queries
        ranked_path = out_dir / row.name / f'{config_name}_{split}.jsonl'
        if row.kind == 'served':  # Writes its ranked lines itself (scores, filters).
          rankings = served.rank_served(
            workdir,
            builder,
            es.queries,
            max(ks),
            relevance_mode=row.relevance_mode,
            ranked_path=ranked_path,
          )
        else:
          if row.kind == 'trained':
            queries, ids, scores = rank_trained(workdir, builder, split, ks)
          sources.write_ranked_lines(ranked_path, queries, ids, scores)
          rankings = sources.rankings_of(queries, np.asarray(ids))
        res = evaluate.evaluate_rankings(
          es, rankings, ks=ks, judged_ks=judged_ks, bootstrap_samples=bootstrap_samples
        )
        res.pop('per_query')
        entry['splits'][f'{config_name}/{split}'] = res
    entry['seconds'] = round(time.time() - start, 1)
    scored = entry['splits'].get('/'.join(splits[0]), {}).get('overall', {})
    summary = ', '.join(f'recall@{k} {scored[f"recall@{k}"]:.4f}' for k in ks if scored)
    progress(f'{row.name}: {entry["status"]} in {entry["seconds"]:.0f} s; {summary}'.rstrip('; '))
    previous[row.name] = entry
    # Table order, rows of earlier runs of this directory kept (a row re-run replaces its own).
    results['rows'] = {r.name: previous[r.name] for r in ROWS if r.name in previous}
    atomic_file.write_text(out_dir / 'results.json', json.dumps(results, indent=1))
  atomic_file.write_text(out_dir / 'results.md', markdown_table(results, ks, judged_ks))
  return results
