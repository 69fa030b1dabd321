"""The README's quickstart end to end on configs/tiny.py: the first thing a new user runs.

It must build the synthetic data, learn and save a vocabulary, train with every configured
loss and log finite metrics; a later run in the same workdir must reuse the saved vocabulary
(learning it is not bit-for-bit repeatable across processes), and a model too small for the
tokenizer must be refused with a message that says which setting to change.
"""

import json
import math

import pytest

from configs import tiny
from make_jax import quickstart
from make_jax.datasets import loading
from make_jax.models import make_model
from make_jax.train import optimizer
from make_jax.train import step as train_step


def _config():
  config = tiny.get_config()
  config.train.num_steps = 4
  config.train.log_every = 2
  return config


@pytest.mark.slow
def test_quickstart_trains_logs_and_reuses_its_vocabulary(tmp_path, capsys):
  config = _config()
  metrics = quickstart.run(config, tmp_path, show=1)
  for k in ('loss', 'qpm', 'qpc', 'mlm', 'mpm_r', 'grad_norm'):
    assert math.isfinite(metrics[k]) and metrics[k] > 0, (k, metrics)
  assert metrics['qpm_negatives_bank'] > 0  # The queue filled and fed QPM.
  lines = (tmp_path / 'metrics.jsonl').read_text().splitlines()
  logged = [json.loads(line) for line in lines]
  assert [m['step'] for m in logged] == [2, 4]
  assert logged[-1] == pytest.approx({'step': 4, **metrics})
  assert '== 4. Training 4 steps' in capsys.readouterr().out

  # A later run finds <workdir>/vocab.txt and loads it instead of learning a new one.
  vocab_path = tmp_path / 'vocab.txt'
  saved, mtime = vocab_path.read_bytes(), vocab_path.stat().st_mtime_ns
  assert len(saved.splitlines()) <= config.text.vocab_size
  builder = loading.prepare(
    config.data.name, config.data.builder_config, str(tmp_path / 'tensorflow_datasets')
  )
  text = quickstart.load_or_learn_vocab(config, builder, tmp_path)
  assert vocab_path.read_bytes() == saved and vocab_path.stat().st_mtime_ns == mtime
  assert text.vocab_size == len(saved.splitlines())

  # The model's embedding table must cover the tokenizer's vocabulary.
  config.model.vocab_size = text.vocab_size - 1
  tx = optimizer.make_optimizer(config.optim, config.train.num_steps)
  with pytest.raises(ValueError, match=r'model\.vocab_size'):
    train_step.make_train_step(make_model.build_model(config), tx, config, text)
