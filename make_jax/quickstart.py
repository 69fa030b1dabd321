"""The README's main job on the embedded default dataset (synthetic, no download).

What it does, end to end on one device:
  1. builds the `synthetic_products` TFDS dataset (deterministic from its seed) in the workdir;
  2. learns a WordPiece vocabulary from the training titles and queries (or loads
     `cfg.text.vocab_path`) and saves it as `<workdir>/vocab.txt`: learning is not bit-for-bit
     repeatable across processes (see make_jax/text/vocab.py), so a saved vocabulary is
     reused on later runs;
  3. prints a few training examples as the model sees them: sorted words, qid, WordPiece
     tokens, keyword flags, log p;
  4. trains the model of `cfg` for a few steps with every configured loss (QPM with in-batch,
     CDNS and MBNS negatives, QPC, MLM with Keyword Enhancement, MPM_R) and prints the
     metrics averaged over each logging window, writing them to `<workdir>/metrics.jsonl`.
It grows with the project: indexing, evaluation and search join it as they land.
"""

import json
import math
import os
import pathlib
import time
from collections.abc import Iterator
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from make_jax.datasets import loading
from make_jax.input import pipeline as input_pipeline
from make_jax.models import make_model
from make_jax.text import vocab as vocab_lib
from make_jax.text.preprocess import TextPreprocessor
from make_jax.train import optimizer
from make_jax.train import step as train_step


def _text(value: Any) -> str:
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def _corpus(builder: Any, split: str) -> Iterator[str]:
  """Titles and queries of `split`, read without decoding images."""
  import tensorflow_datasets as tfds  # Heavy: only when a vocabulary must be learned.

  source = builder.as_data_source(split, decoders={'image': tfds.decode.SkipDecoding()})
  for start in range(0, len(source), 1024):
    for record in source.__getitems__(list(range(start, min(start + 1024, len(source))))):
      yield _text(record['title'])
      yield _text(record['query'])


def load_or_learn_vocab(
  config: ml_collections.ConfigDict, builder: Any, workdir: pathlib.Path
) -> TextPreprocessor:
  """The tokenizer of `cfg.text`: its vocab_path, else the workdir's, else a new one."""
  text = config.text
  path = pathlib.Path(text.vocab_path) if text.vocab_path else workdir / 'vocab.txt'
  if not path.exists():
    if text.vocab_path:
      raise ValueError(f'cfg.text.vocab_path {text.vocab_path} does not exist')
    logging.info('Learning a %d-token vocabulary into %s', text.vocab_size, path)
    tokens = vocab_lib.build_vocab(
      _corpus(builder, config.data.train_split), text.vocab_size, strip_accents=text.strip_accents
    )
    vocab_lib.save_vocab(tokens, path)
  return TextPreprocessor.from_vocab_file(
    path, sort_words=text.sort_words, strip_accents=text.strip_accents
  )


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


def run(config: ml_collections.ConfigDict, workdir: str | os.PathLike, *, show: int = 3):
  """Builds the data, shows examples, trains `config.train.num_steps` steps on one device.

  Returns:
    The metrics averaged over the last logging window (floats).

  Raises:
    FloatingPointError: the loss became NaN or infinite.
  """
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  data = config.data
  data_dir = data.data_dir or str(workdir / 'tensorflow_datasets')

  print(f'== 1. Dataset {data.name}/{data.builder_config} in {data_dir}')
  builder = loading.prepare(data.name, data.builder_config, data_dir, data.manual_dir)
  print('   splits:', {k: v.num_examples for k, v in builder.info.splits.items()})

  print('== 2. Vocabulary')
  text = load_or_learn_vocab(config, builder, workdir)
  print(f'   {text.vocab_size} WordPiece tokens')

  print('== 3. Examples (words sorted, qid = blake2b-32 of the sorted words)')
  show_examples(builder, text, config, show)

  print(f'== 4. Training {config.train.num_steps} steps on {jax.devices()[0].platform}')
  pipeline = input_pipeline.create_pipeline(
    config, text, builder=builder, process_index=0, process_count=1, local_device_count=1
  )
  model = make_model.build_model(config)
  rng = jax.random.key(config.seed)
  first = next(iter(pipeline))
  params = make_model.init_params(
    model, rng, make_model.example_batch(config, first['image'].shape[0])
  )
  tx = optimizer.make_optimizer(config.optim, config.train.num_steps)
  state = train_step.create_train_state(model, params, tx, config, rng)
  step_fn = jax.jit(train_step.make_train_step(model, tx, config, text), donate_argnums=0)
  n_params = sum(x.size for x in jax.tree.leaves(params))
  print(f'   {n_params:,} parameters; global batch {data.global_batch_size}')

  metrics_path = workdir / 'metrics.jsonl'
  last: dict[str, float] = {}
  start, timed_examples = 0.0, 0
  window: list[dict[str, jax.Array]] = []  # Metrics since the last log line (on device).
  batch = first
  with metrics_path.open('w') as log:
    for i in range(config.train.num_steps):
      if i:
        batch = next(pipeline)
      state, metrics = step_fn(state, batch)
      window.append(metrics)
      if i == 0:  # Throughput excludes the first step (it compiles).
        jax.block_until_ready(metrics)
        start = time.perf_counter()
      else:
        timed_examples += data.global_batch_size
      if (i + 1) % config.train.log_every == 0 or i + 1 == config.train.num_steps:
        steps = jax.device_get(window)
        window = []
        losses = [float(m['loss']) for m in steps]
        if not all(math.isfinite(x) for x in losses):
          raise FloatingPointError(f'Loss is not finite in steps up to {i + 1}: {losses}')
        # Means over the window: one batch of 16 is too noisy to read a trend from.
        last = {k: float(np.mean([m[k] for m in steps])) for k in steps[-1]}
        log.write(json.dumps({'step': i + 1, **last}) + '\n')
        rate = timed_examples / max(time.perf_counter() - start, 1e-9)
        terms = ' '.join(
          f'{k}={last[k]:.3f}' for k in ('qpm', 'qpc', 'mlm', 'mpm', 'mpm_r') if k in last
        )
        negatives = sum(
          last.get(f'qpm_negatives_{s}', 0.0) for s in ('local', 'cross_device', 'bank')
        )
        print(
          f'   step {i + 1:4d} loss {last["loss"]:.3f} ({terms}) '
          f'qpm_acc {last.get("qpm_accuracy", float("nan")):.2f} '
          f'negatives/query {negatives:.0f} {rate:.0f} ex/s'
        )
  pipeline.close()
  print(f'   metrics in {metrics_path}; input stats {pipeline.stats}')
  return last
