r"""Input-pipeline throughput: examples/second through the full pipeline (record read,
image decode + resize, tokenisation with keyword flags, batching), fashion vs synthetic.

  python -m benchmarks.bench_input --data_dir=/tmp/make_jax_tfds --manual_dir=../shared/data

Builds the datasets first if needed (not timed). Prints the median over repeats of each
and their ratio, measured side by side in one run.
"""

import statistics
import time

import tensorflow_datasets as tfds
from absl import app, flags

from configs import tiny
from make_jax.datasets import loading
from make_jax.input import pipeline as input_pipeline
from make_jax.text.preprocess import TextPreprocessor

_DATA_DIR = flags.DEFINE_string('data_dir', '/tmp/make_jax_tfds', 'TFDS data_dir.')
_MANUAL_DIR = flags.DEFINE_string('manual_dir', '../shared/data', 'Folder with the fashion zip.')
_SYNTHETIC = flags.DEFINE_string('synthetic_config', 'en_small', 'synthetic_products config.')
_BATCH = flags.DEFINE_integer('batch_size', 64, 'Host batch size.')
_STEPS = flags.DEFINE_integer('steps', 20, 'Batches per repeat.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Repeats (the median is reported).')
_WORKERS = flags.DEFINE_integer('worker_count', 0, 'Featurising threads.')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 64, 'Output image side.')


def _throughput(name: str, builder_config: str) -> float:
  builder = loading.prepare(name, builder_config, _DATA_DIR.value, _MANUAL_DIR.value)
  source = builder.as_data_source('catalogue', decoders={'image': tfds.decode.SkipDecoding()})
  text = TextPreprocessor.from_corpus(
    [r['title'] for r in source.__getitems__(range(min(len(source), 5000)))], 8000
  )
  config = tiny.get_config()
  config.data.name, config.data.builder_config = name, builder_config
  config.data.global_batch_size = _BATCH.value
  config.data.image_size = _IMAGE_SIZE.value
  config.data.worker_count = _WORKERS.value
  pipeline = input_pipeline.create_pipeline(
    config, text, builder=builder, process_index=0, process_count=1, local_device_count=1
  )
  next(pipeline)  # Warm-up: opens files, first allocations.
  rates = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    for _ in range(_STEPS.value):
      next(pipeline)
    rates.append(_STEPS.value * _BATCH.value / (time.perf_counter() - start))
  pipeline.close()
  median = statistics.median(rates)
  print(
    f'{name}/{builder_config}: median {median:,.0f} examples/s '
    f'(repeats: {", ".join(f"{r:,.0f}" for r in rates)})'
  )
  return median


def main(argv):
  del argv
  print(
    f'batch {_BATCH.value}, {_STEPS.value} batches x {_REPEATS.value} repeats, '
    f'image {_IMAGE_SIZE.value}px, worker_count {_WORKERS.value}'
  )
  fashion = _throughput('fashion_products', 'default')
  synthetic = _throughput('synthetic_products', _SYNTHETIC.value)
  print(f'ratio fashion / synthetic: {fashion / synthetic:.2f}')


if __name__ == '__main__':
  app.run(main)
