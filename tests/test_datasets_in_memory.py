"""The in-memory synthetic dataset holds the records the TFDS builder stores (no TensorFlow)."""

import json
import subprocess
import sys

import pytest
import tensorflow_datasets as tfds

from make_jax.datasets import in_memory


def _canonical(record):
  return tuple(sorted(record.items()))


@pytest.fixture(scope='module')
def memory():
  return in_memory.SyntheticInMemory('en_small')


@pytest.mark.parametrize('split', in_memory.SPLITS)
def test_every_split_holds_the_stored_records(builder, memory, split):
  stored = builder.as_data_source(split, decoders={'image': tfds.decode.SkipDecoding()})
  source = memory.as_data_source(split)
  assert len(source) == len(stored) == builder.info.splits[split].num_examples
  ours = source.__getitems__(range(len(source)))
  theirs = stored.__getitems__(range(len(stored)))
  # Same keys and the same Python types as a TFDS data source returns.
  assert {k: type(v) for k, v in ours[0].items()} == {k: type(v) for k, v in theirs[0].items()}
  # The same records; TFDS stores them shuffled by key, so the order differs.
  assert sorted(map(_canonical, ours)) == sorted(map(_canonical, theirs))


def test_metadata_and_errors(builder, memory):
  as_json = lambda m: json.loads(json.dumps(dict(m), default=str))
  assert as_json(memory.info.metadata) == as_json(builder.info.metadata)
  with pytest.raises(ValueError, match='Split .nope. not in'):
    memory.as_data_source('nope')
  with pytest.raises(IndexError):
    memory.as_data_source('test')[len(memory.as_data_source('test'))]
  with pytest.raises(ValueError, match='Unknown synthetic_products config'):
    in_memory.SyntheticInMemory('fr_small')


def test_the_trainers_reading_imports_no_tensorflow():
  # What a machine without TensorFlow runs: the dataset, the input pipeline, the
  # evaluator and the trainer import no TensorFlow or TFDS.
  code = (
    'import sys\n'
    'from make_jax.datasets import in_memory\n'
    'from make_jax.train import loop\n'
    'from make_jax.input import pipeline\n'
    'from make_jax.retrieval import evaluator\n'
    "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tensorflow_datasets', 'scann'))\n"
    'print(bad)\n'
  )
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == '[]', out.stdout
