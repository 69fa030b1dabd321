"""The README's main job on the embedded default dataset (synthetic, no download).

What it does, end to end:
  1. builds the `synthetic_products` TFDS dataset (deterministic from its seed) under the
     workdir (unless `cfg.data.data_dir` names another place);
  2. learns a WordPiece vocabulary from the training titles and queries (or loads
     `cfg.text.vocab_path`) and saves it as `<workdir>/vocab.txt`, which later runs reuse
     (learning is deterministic, see make_jax/text/vocab.py; loading is just cheaper);
  3. prints a few training examples as the model sees them: sorted words, qid, WordPiece
     tokens, keyword flags, log p;
  4. trains through `make_jax.train.loop.train_and_evaluate` (the job `tools/train.py`
     runs: checkpoints, metrics.jsonl, TensorBoard events, resumable) with every configured
     loss, and prints the held-out Recall@10 of exact search over the catalogue before and
     after training;
  5. serves the trained model the way `tools.serve --workdir` does (`serve`): exports the
     catalogue's embeddings (Beam, in-process), builds the ScaNN index, writes the training
     queries as a query log and builds the query table from it, all in the workdir's fixed
     layout (`rundir.RunDir`); then runs example searches through the
     served `Searcher` (a logged query from the table, an unlogged one online, one with a
     filter) and prints the command that starts the server. Artefacts already built for
     the same checkpoint and model are reused.
"""

import collections
import os
import pathlib
import time
from typing import Any

import jax
import ml_collections

from make_jax import atomic_file, rundir
from make_jax.datasets import loading
from make_jax.export import embed, model_handler, query_table
from make_jax.export import manifest as manifest_lib
from make_jax.export import scann_index as export_index
from make_jax.input import reading
from make_jax.serving import search, service
from make_jax.text import vocab as vocab_lib
from make_jax.text.preprocess import TextPreprocessor
from make_jax.train import inputs, loop


def _text(value: Any) -> str:
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def load_or_learn_vocab(
  config: ml_collections.ConfigDict, builder: Any, workdir: pathlib.Path
) -> TextPreprocessor:
  """The tokenizer of `cfg.text`: its vocab_path, else the workdir's, else a new one."""
  return inputs.load_preprocessor(config, builder, workdir)


def show_examples(
  builder: Any, preprocessor: TextPreprocessor, config: ml_collections.ConfigDict, n: int
):
  """Prints `n` training pairs as the model sees them."""
  import tensorflow_datasets as tfds

  source = builder.as_data_source(
    config.data.train_split, decoders={'image': tfds.decode.SkipDecoding()}
  )
  attributes = builder.info.metadata.get('attribute_features', [])
  for record in source.__getitems__(list(range(min(n, len(source))))):
    query, title = _text(record['query']), _text(record['title'])
    values = [_text(record[a]) for a in attributes]
    ex = preprocessor.encode_pair(
      query, title, values, config.text.query_len, config.text.title_len
    )
    keywords = [
      t
      for t, k in zip(preprocessor.decode(ex['query_ids']), ex['query_keyword'], strict=False)
      if k
    ]
    print(f'  query {query!r} -> words {preprocessor.words(query)} qid {preprocessor.qid(query)}')
    print(f'    tokens {preprocessor.decode(ex["query_ids"])} keywords {keywords}')
    print(
      f'  title {title!r} ({", ".join(f"{a}={v}" for a, v in zip(attributes, values, strict=True))})'
    )
    print(f'    tokens {preprocessor.decode(ex["title_ids"])}')
    print(f'    product {record["product_id"]} log p {record["log_p"]:.2f}')


def run(
  config: ml_collections.ConfigDict,
  workdir: str | os.PathLike,
  *,
  show: int = 3,
  serve_examples: bool = True,
) -> dict[str, Any]:
  """Builds the data, shows examples, trains, evaluates and (`serve_examples`) serves.

  Returns `train_and_evaluate`'s dict, with `serve`'s under 'serving' when it ran.

  Raises:
    FloatingPointError: the loss became NaN or infinite.
  """
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  config = ml_collections.ConfigDict(config.to_dict())  # Not the caller's copy.
  data = config.data
  if not data.data_dir:
    data.data_dir = str(workdir / 'tensorflow_datasets')

  start = time.perf_counter()
  print(f'== 1. Dataset {data.name}/{data.builder_config} in {data.data_dir}')
  builder = loading.prepare(data.name, data.builder_config, data.data_dir, data.manual_dir)
  print('   splits:', {k: v.num_examples for k, v in builder.info.splits.items()})

  print('== 2. Vocabulary')
  preprocessor = load_or_learn_vocab(config, builder, workdir)
  print(f'   {preprocessor.vocab_size} WordPiece tokens')

  print('== 3. Examples (words sorted, qid = blake2b-32 of the sorted words)')
  show_examples(builder, preprocessor, config, show)

  print(
    f'== 4. Training {config.train.num_steps} steps ({config.parallelism} layout on '
    f'{jax.devices()[0].platform}); checkpoints and metrics in {workdir}'
  )
  before_training = time.perf_counter()
  out = loop.train_and_evaluate(config, workdir)
  out['seconds'] = {
    'data_vocab_examples': before_training - start,
    'train_evaluate': time.perf_counter() - before_training,
  }
  print(f'   trained and evaluated in {out["seconds"]["train_evaluate"]:.1f} s')
  print(f'   input: skipped records {out["input_stats"]}')
  evals = out['evals']
  if evals:
    first, final = evals[0], evals[-1]
    print(
      f'== 5. Held-out Recall@10 ({config.train.eval_split}, {int(final["num_queries"])} '
      f'queries, {int(final["num_products"])} products, exact search)'
    )
    print(f'   step {first["step"]:4d}: {first["recall@10"]:.4f}')
    if final is not first:
      print(f'   step {final["step"]:4d}: {final["recall@10"]:.4f}')
  if serve_examples:
    out['serving'] = serve(config, workdir, builder)
  return out


def write_query_log(builder: Any, split: str, path: pathlib.Path) -> int:
  """Writes the distinct queries of `split` with their counts (`query<TAB>count`, most
  frequent first) atomically to `path`; returns the number of lines."""
  counts: collections.Counter[str] = collections.Counter()
  for record in reading.records(reading.undecoded_source(builder, split)):
    query = ' '.join(_text(record['query']).split())  # No tab or newline inside a column.
    if query:
      counts[query] += 1
  lines = sorted(counts.items(), key=lambda qc: (-qc[1], qc[0]))
  atomic_file.write_text(path, ''.join(f'{q}\t{c}\n' for q, c in lines))
  return len(lines)


def _built(directory: pathlib.Path, fingerprint: str, step: int) -> bool:
  """Whether `directory` holds a finished artefact of this model and checkpoint."""
  try:
    manifest = manifest_lib.read(directory)
    manifest_lib.check_compatible(manifest, what='', rebuild='', fingerprint=fingerprint, step=step)
  except manifest_lib.ManifestError:
    return False
  return True


def _stage(title: str, directory: pathlib.Path, fresh: bool, build: Any) -> float:
  print(title)
  if fresh:
    print(f'   {directory} is up to date (same checkpoint and model): reused')
    return 0.0
  start = time.perf_counter()
  build()
  seconds = time.perf_counter() - start
  print(f'   wrote {directory} in {seconds:.1f} s')
  return seconds


def _print_answer(label: str, answer: search.Answer) -> None:
  reason = f', {answer.fallback_reason}' if answer.fallback_reason else ''
  print(
    f'   {label}: {answer.query!r} -> path {answer.path}{reason}, strategy '
    f'{answer.strategy}, filters {answer.filters or "none"}, {answer.latency_ms["total"]:.1f} ms'
  )
  for r in answer.results:
    outside = '' if r.satisfies_filter else '  (outside the filters: backfilled)'
    print(f'     {r.product_id:6d}  {r.score:+.4f}  {r.title}{outside}')


def _examples(searcher: search.Searcher, logged: list[str], k: int) -> dict[str, search.Answer]:
  """A logged query served from the table (shown with its words reversed), an unlogged
  one served online, and one that names a brand and a category (filtered)."""
  out = {}
  several = [q for q in logged if len(q.split()) > 1]  # Most frequent first.
  for query in several[:50]:
    reordered = ' '.join(reversed(query.split()))
    answer = searcher.search(reordered, k)
    if answer.path == search.PATH_TABLE:
      out['logged'] = answer
      break
  cat, pre = searcher.catalogue, searcher.preprocessor
  for title in cat.titles[:200]:
    query = ' '.join(title.split()[:3])
    if searcher.table is None or searcher.table.lookup(pre.words(query)) is None:
      out['unlogged'] = searcher.search(query, k)
      break
  for row in range(min(200, len(cat))):
    attrs = {f: cat.attributes[f][row] for f in searcher.relevance.fields}
    answer = searcher.search(' '.join(attrs.values()), k)
    if answer.filters:
      out['filtered'] = answer
      break
  return out


def serve(config: ml_collections.ConfigDict, workdir: pathlib.Path, builder: Any) -> dict[str, Any]:
  """Export, index, query log and table into the workdir's layout, then example searches.

  Returns {'seconds': per stage, 'answers': label -> `search.Answer`, 'command': str}.
  """
  lay = rundir.RunDir(pathlib.Path(workdir))
  vocab = str(lay.vocab)
  params, step = rundir.latest_params(workdir)
  fingerprint = manifest_lib.config_fingerprint(config, vocab_lib.load_vocab_file(vocab))
  loader = model_handler.make_loader(config, str(workdir))
  seconds = {}
  seconds['export'] = _stage(
    f'== 6. Export: product embeddings of the catalogue (Beam, in-process) at step {step}',
    lay.products,
    _built(lay.products, fingerprint, step),
    lambda: embed.export_catalogue(config, vocab, lay.products, loader=loader),
  )
  seconds['index'] = _stage(
    '== 7. Index: ScaNN over the exported embeddings (product ids as docids)',
    lay.index,
    _built(lay.index, fingerprint, step) and not seconds['export'],
    lambda: export_index.build_from_export(lay.products, lay.index),
  )
  start = time.perf_counter()
  lines = write_query_log(builder, config.data.train_split, lay.query_log)
  seconds['query_log'] = time.perf_counter() - start
  print(f'== 8. Query log: {lines} distinct training query strings -> {lay.query_log}')
  seconds['query_table'] = _stage(
    '   query table: top-100 products of every logged query (Beam, in-process)',
    lay.query_table,
    _built(lay.query_table, fingerprint, step) and not seconds['index'],
    lambda: query_table.build_query_table(
      config, vocab, str(lay.query_log), lay.index, lay.query_table, loader=loader
    ),
  )
  print('== 9. Searches through the served Searcher (top 5)')
  start = time.perf_counter()
  searcher = service.searcher_from_workdir(workdir, params=params, step=step)
  try:
    logged = [line.split('\t')[0] for line in lay.query_log.read_text('utf-8').splitlines()]
    answers = _examples(searcher, logged, 5)
    for label, answer in answers.items():
      _print_answer(label, answer)
  finally:
    if searcher.encoder is not None:
      searcher.encoder.close()
  seconds['searches'] = time.perf_counter() - start
  command = f'python -m tools.serve --workdir={lay.root}'
  print(f'== Serve it: {command}')
  print('   then open http://127.0.0.1:8000/')
  print('   seconds: ' + ', '.join(f'{name} {t:.1f}' for name, t in seconds.items()))
  return {'seconds': seconds, 'answers': answers, 'command': command}
