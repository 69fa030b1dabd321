"""The README's main job on the embedded default dataset (synthetic, no download).

What it does, end to end:
  1. builds the `synthetic_products` TFDS dataset (deterministic from its seed) under the
     workdir (unless `cfg.data.data_dir` names another place);
  2. learns a WordPiece vocabulary from the training titles and queries (or loads
     `cfg.text.vocab_path`) and saves it as `<workdir>/vocab.txt`: learning is not bit-for-bit
     repeatable across processes (see make_jax/text/vocab.py), so a saved vocabulary is
     reused on later runs;
  3. prints a few training examples as the model sees them: sorted words, qid, WordPiece
     tokens, keyword flags, log p;
  4. trains through `make_jax.train.loop.train_and_evaluate` (the job `tools/train.py`
     runs: checkpoints, metrics.jsonl, TensorBoard events, resumable) with every configured
     loss, and prints the held-out Recall@10 of exact search over the catalogue before and
     after training.
"""

import os
import pathlib
from typing import Any

import jax
import ml_collections

from make_jax.datasets import loading
from make_jax.text.preprocess import TextPreprocessor
from make_jax.train import inputs, loop


def _text(value: Any) -> str:
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def load_or_learn_vocab(
  config: ml_collections.ConfigDict, builder: Any, workdir: pathlib.Path
) -> TextPreprocessor:
  """The tokenizer of `cfg.text`: its vocab_path, else the workdir's, else a new one."""
  return inputs.load_text(config, builder, workdir)


def show_examples(builder: Any, text: TextPreprocessor, config: ml_collections.ConfigDict, n: int):
  """Prints `n` training pairs as the model sees them."""
  import tensorflow_datasets as tfds

  source = builder.as_data_source(
    config.data.train_split, decoders={'image': tfds.decode.SkipDecoding()}
  )
  attributes = builder.info.metadata.get('attribute_features', [])
  for record in source.__getitems__(list(range(min(n, len(source))))):
    query, title = _text(record['query']), _text(record['title'])
    values = [_text(record[a]) for a in attributes]
    ex = text.encode_pair(query, title, values, config.text.query_len, config.text.title_len)
    keywords = [
      t for t, k in zip(text.decode(ex['query_ids']), ex['query_keyword'], strict=False) if k
    ]
    print(f'  query {query!r} -> words {text.words(query)} qid {text.qid(query)}')
    print(f'    tokens {text.decode(ex["query_ids"])} keywords {keywords}')
    print(
      f'  title {title!r} ({", ".join(f"{a}={v}" for a, v in zip(attributes, values, strict=True))})'
    )
    print(f'    tokens {text.decode(ex["title_ids"])}')
    print(f'    product {record["product_id"]} log p {record["log_p"]:.2f}')


def run(
  config: ml_collections.ConfigDict, workdir: str | os.PathLike, *, show: int = 3
) -> dict[str, Any]:
  """Builds the data, shows examples, trains and evaluates; returns `train_and_evaluate`'s dict.

  Raises:
    FloatingPointError: the loss became NaN or infinite.
  """
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  config = ml_collections.ConfigDict(config.to_dict())  # Not the caller's copy.
  data = config.data
  if not data.data_dir:
    data.data_dir = str(workdir / 'tensorflow_datasets')

  print(f'== 1. Dataset {data.name}/{data.builder_config} in {data.data_dir}')
  builder = loading.prepare(data.name, data.builder_config, data.data_dir, data.manual_dir)
  print('   splits:', {k: v.num_examples for k, v in builder.info.splits.items()})

  print('== 2. Vocabulary')
  text = load_or_learn_vocab(config, builder, workdir)
  print(f'   {text.vocab_size} WordPiece tokens')

  print('== 3. Examples (words sorted, qid = blake2b-32 of the sorted words)')
  show_examples(builder, text, config, show)

  print(
    f'== 4. Training {config.train.num_steps} steps ({config.parallelism} layout on '
    f'{jax.devices()[0].platform}); checkpoints and metrics in {workdir}'
  )
  out = loop.train_and_evaluate(config, workdir)
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
  return out
