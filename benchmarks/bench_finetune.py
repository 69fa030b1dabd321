r"""Fine-tuning throughput: the text-only two-tower from MiniLM against a plain PyTorch loop.

  python -m benchmarks.bench_finetune --data_dir=/tmp/tfds --rounds=5 --steps_per_round=5

What a user could do without this project: fine-tune all-MiniLM-L6-v2 in PyTorch
(`transformers.BertModel`, one encoder for queries and titles, mean pooling, in-batch softmax
at scale 20, AdamW 2e-5, batch 64, each batch padded to its longest text as
sentence-transformers pads). Against it: this project's real train step
(`train/step.make_train_step`, jitted with the state donated, as the trainer runs it) of the
`minilm_two_tower_text` results row (configs/finetune.py, `model.product_image=False`, QPM
alone; separate query and title encoders, lengths 12 and 24, each batch's texts packed into
shared rows as the trainer packs them: `data.pack_text`, make_jax/input/packing.py). The
step is compiled for every batch shape before the timing starts.

Both train on the same real (query, title) pairs of fashion_products' train split, each
tokenised its own way outside the timing. Rounds alternate: `steps_per_round` steps of one,
then of the other; each round's ratio (this project's examples/s over PyTorch's) uses the
two timings of that round. Printed: examples/s of each (median [range]) and the ratio.
"""

import os
import statistics
import time

from absl import app, flags

from make_jax.train import flops as flops_lib

_DATA_DIR = flags.DEFINE_string('data_dir', '', "TFDS data_dir ('' = TFDS's default).")
_MANUAL_DIR = flags.DEFINE_string('manual_dir', '../shared/data', 'Folder of the fashion zip.')
_BATCH = flags.DEFINE_integer('batch_size', 64, 'Examples per step (both loops).')
_ROUNDS = flags.DEFINE_integer('rounds', 5, 'Interleaved rounds.')
_STEPS = flags.DEFINE_integer('steps_per_round', 5, 'Steps of each loop per round.')
_THREADS = flags.DEFINE_integer('torch_threads', os.cpu_count() or 1, 'PyTorch intra-op threads.')


def _pairs(n: int) -> list[tuple[str, str]]:
  from make_jax.datasets import loading
  from make_jax.input import reading

  builder = loading.prepare('fashion_products', 'default', _DATA_DIR.value, _MANUAL_DIR.value)
  source = reading.undecoded_source(builder, 'train')
  text = lambda v: v.decode('utf-8') if isinstance(v, bytes) else str(v)
  records = source.__getitems__(list(range(n)))
  return [(text(r['query']), text(r['title'])) for r in records]


def _torch_loop(pairs, batch, steps):
  """A closure running `steps` PyTorch fine-tuning steps over `pairs` (cycled)."""
  import tokenizers
  import torch
  import transformers

  from make_jax.models import bert_import

  torch.set_num_threads(_THREADS.value)
  path = bert_import.default_checkpoint_dir()
  model = transformers.BertModel.from_pretrained(str(path))
  model.train()
  opt = torch.optim.AdamW(model.parameters(), lr=2e-5)
  tok = tokenizers.Tokenizer.from_file(str(path / 'tokenizer.json'))
  tok.enable_padding(pad_id=0)
  tok.enable_truncation(256)

  def tensors(texts):
    enc = tok.encode_batch(texts)
    ids = torch.tensor([e.ids for e in enc])
    mask = torch.tensor([e.attention_mask for e in enc])
    return ids, mask

  batches = [
    (tensors([q for q, _ in pairs[i : i + batch]]), tensors([t for _, t in pairs[i : i + batch]]))
    for i in range(0, len(pairs) - batch + 1, batch)
  ]

  def embed(ids, mask):
    out = model(input_ids=ids, attention_mask=mask).last_hidden_state
    m = mask.unsqueeze(-1).float()
    pooled = (out * m).sum(1) / m.sum(1).clamp(min=1.0)
    return torch.nn.functional.normalize(pooled, dim=-1)

  position = [0]

  def run():
    for _ in range(steps):
      (qi, qm), (ti, tm) = batches[position[0] % len(batches)]
      position[0] += 1
      scores = embed(qi, qm) @ embed(ti, tm).T * 20.0
      loss = torch.nn.functional.cross_entropy(scores, torch.arange(len(qi)))
      opt.zero_grad()
      loss.backward()
      opt.step()

  return run


def _jax_loop(pairs, batch, steps):
  """A closure running `steps` of this project's train step of the text-only row."""
  import jax
  import numpy as np

  from benchmarks import step_setup
  from configs import finetune
  from make_jax.evaluation import results
  from make_jax.input import packing
  from make_jax.models import bert_import
  from make_jax.models.make_model import build_model, example_batch, init_params
  from make_jax.text.preprocess import TextPreprocessor
  from make_jax.train import checkpoint, optimizer
  from make_jax.train import step as train_step

  row = next(r for r in results.ROWS if r.name == 'minilm_two_tower_text')
  config = results.apply_overrides(finetune.get_config(), row.overrides)
  config = bert_import.config_for_checkpoint(config, bert_import.default_checkpoint_dir())
  config.data.global_batch_size = batch
  text = TextPreprocessor.from_config(config.text, config.text.vocab_path)
  model = build_model(config)
  tx = optimizer.make_optimizer(config.optim, config.train.num_steps)
  template = step_setup.random_batch(config, batch)
  params = init_params(model, jax.random.key(0), example_batch(config, 1))
  params = checkpoint.load_init_params(bert_import.default_checkpoint_dir(), config, params)
  state = train_step.create_train_state(model, params, tx, config, jax.random.key(1))
  tokens = text  # pad/cls/sep/mask ids and vocab size, as the trainer passes them.
  step = jax.jit(train_step.make_train_step(model, tx, config, tokens), donate_argnums=0)
  batches = []
  for i in range(0, len(pairs) - batch + 1, batch):
    chunk = pairs[i : i + batch]
    b = dict(template)
    b['query_ids'], b['query_mask'] = text.encode_batch(
      [q for q, _ in chunk], config.text.query_len
    )
    b['title_ids'], b['title_mask'] = text.encode_batch(
      [t for _, t in chunk], config.text.title_len
    )
    b['product_id'] = np.arange(i, i + batch, dtype=np.int32)
    if config.data.pack_text:
      b = packing.add_pack_indices(b, int(config.data.pack_row_multiple))
    batches.append(jax.device_put(b))
  holder = {'state': state, 'i': 0}

  def run():
    for _ in range(steps):
      holder['state'], metrics = step(holder['state'], batches[holder['i'] % len(batches)])
      holder['i'] += 1
    jax.block_until_ready(metrics)

  for _ in range(-(-len(batches) // steps)):
    run()  # Compile (once per batch shape) and warm up.
  return run


def main(argv):
  del argv
  batch, steps = _BATCH.value, _STEPS.value
  pairs = _pairs(batch * 16)
  loops = {'make_jax': _jax_loop(pairs, batch, steps), 'pytorch': _torch_loop(pairs, batch, steps)}
  loops['pytorch']()  # Warm up (allocator, first step).
  seconds = {name: [] for name in loops}
  for _ in range(_ROUNDS.value):
    for name, run in loops.items():
      t = time.perf_counter()
      run()
      seconds[name].append(time.perf_counter() - t)
  rate = {name: [batch * steps / s for s in values] for name, values in seconds.items()}
  ratio = [a / b for a, b in zip(rate['make_jax'], rate['pytorch'], strict=True)]
  print(f'batch {batch}, {steps} steps a round, {_ROUNDS.value} rounds alternating')
  for name, values in rate.items():
    s = flops_lib.median_range('v', values)
    print(f'{name:9s} {s["v"]:7.1f} examples/s [{s["v_min"]:.1f}-{s["v_max"]:.1f}]')
  s = flops_lib.median_range('r', ratio)
  print(
    f'ratio make_jax / pytorch: {s["r"]:.2f}x [{s["r_min"]:.2f}-{s["r_max"]:.2f}] '
    f'(per round; mean {statistics.mean(ratio):.2f}x)'
  )


if __name__ == '__main__':
  app.run(main)
