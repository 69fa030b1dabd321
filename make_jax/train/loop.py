"""`train_and_evaluate(config, workdir)`: the training job (SPEC section 6), one loop for all.

What a run does, on every process of the job:
  1. process 0 writes `<workdir>/config.json`, prepares the dataset and the vocabulary
     (inputs.py); the others wait for it;
  2. builds the model, the optimiser and the layout of `config.parallelism` (layouts.py);
  3. resumes from the newest complete checkpoint in `<workdir>/checkpoints/` (state, queue,
     RNG and every input shard's position), or starts fresh, optionally from pretrained
     params (`init_from`: a HuggingFace BERT checkpoint directory, whose pooling and
     vocabulary the run then takes (`bert_import.config_for_checkpoint`), an
     `import_bert` msgpack or another run's checkpoint);
  4. steps to `config.train.num_steps`; every `train.log_every` steps the window's metrics
     are checked (a NaN or infinite loss stops the run naming the step and the term, before
     any checkpoint of that state), written (JSONL + TensorBoard, process 0) and logged;
     every `train.checkpoint_every` steps and at the end a checkpoint is written
     collectively; every `train.eval_every` steps (and before the first step of a fresh run)
     held-out Recall@K is measured by exact search over the catalogue.

Resuming is exact: the step folds the step number into the state's RNG, the queue is state,
and each shard's input position is restored, so a killed and restarted run computes the same
losses as an uninterrupted one (bit for bit on one device).
"""

import json
import pathlib
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from make_jax import atomic_file, rundir
from make_jax.input import packing
from make_jax.models import bert_import, make_model
from make_jax.parallel import mesh as mesh_lib
from make_jax.retrieval import evaluator as evaluator_lib
from make_jax.train import checkpoint as checkpoint_lib
from make_jax.train import flops as flops_lib
from make_jax.train import inputs, layouts, optimizer, reporting
from make_jax.train import state as state_lib
from make_jax.train import step as train_step


def _builder(config: ml_collections.ConfigDict) -> Any:
  """The prepared TFDS builder of `config.data` (process 0 builds it if needed), or with
  `data.source='memory'` the synthetic dataset generated in memory (no TensorFlow)."""
  data = config.data
  source = data.get('source', 'tfds')
  if source == 'memory':
    from make_jax.datasets import in_memory

    if data.name != in_memory.NAME:
      raise ValueError(f"data.source='memory' serves {in_memory.NAME} only, not {data.name!r}")
    return in_memory.SyntheticInMemory(data.builder_config)
  if source != 'tfds':
    raise ValueError(f"data.source={source!r}; expected 'tfds' or 'memory'")
  from make_jax.datasets import loading

  if jax.process_index() == 0:
    loading.prepare(data.name, data.builder_config, data.data_dir, data.manual_dir)
  inputs.sync('dataset')
  builder = loading.get_builder(data.name, data.builder_config, data.data_dir)
  if not builder.is_prepared():
    raise ValueError(f'Dataset {data.name}/{data.builder_config} is not built in {data.data_dir}')
  return builder


def _modal_weights_fn(model: Any, layout: layouts.Layout):
  """(state, placed batch) -> mean (a_title, a_image) of the batch's products."""

  def mean_weights(params, batch):
    _, weights = model.apply(
      {'params': params},
      batch['title_ids'],
      batch['title_mask'],
      batch['image'],
      batch['image_missing'],
      method=model.encode_product,
    )
    return weights.mean(axis=0)

  return layout.batch_mean(mean_weights)


def _model_flops(config, model, tx, tokens, host_batch) -> float:
  """Model FLOPs of one step at the global batch (the unsharded step: the same total work)."""
  state = jax.eval_shape(state_lib.init_fn(model, tx, config), jax.random.key(0))
  scale = jax.process_count()
  batch = {
    k: jax.ShapeDtypeStruct((v.shape[0] * scale, *v.shape[1:]), v.dtype)
    for k, v in host_batch.items()
  }
  return flops_lib.model_flops(train_step.make_train_step(model, tx, config, tokens), state, batch)


def train_and_evaluate(
  config: ml_collections.ConfigDict,
  workdir: str | pathlib.Path,
  *,
  init_from: str = '',
  stop_at: int | None = None,
) -> dict[str, Any]:
  """Trains (resuming if `workdir` has checkpoints) and evaluates; see the module docstring.

  Args:
    config: the full config (configs/*.py).
    workdir: the run's directory (checkpoints, metrics, vocabulary, config).
    init_from: pretrained params for a fresh run: a HuggingFace BERT checkpoint directory
      ('minilm': the packaged all-MiniLM-L6-v2), a `tools/import_bert.py` msgpack file, or
      a workdir / checkpoint directory of another run. Ignored when resuming (a checkpoint
      directory still sets the config it implies).
    stop_at: end this run after this step (checkpointed and evaluated like the last step)
      while schedules still follow `train.num_steps`: a job with a time slot, or a test.

  Returns:
    {'step': last step, 'metrics': the last window's mean metrics, 'history': every
    logged window's means with its 'step', 'evals': [{'step': s, 'recall@10': ..., ...}
    for each evaluation on this process, in order], 'input_stats': skipped records by
    reason}.

  Raises:
    FloatingPointError: a loss became NaN or infinite (no checkpoint of that state exists).
    ValueError: a config that does not fit the devices, the data or the checkpoint.
  """
  workdir = pathlib.Path(workdir)
  init_from = checkpoint_lib.init_from_dir(init_from)
  if init_from and bert_import.is_checkpoint_dir(init_from):
    config = bert_import.config_for_checkpoint(config, init_from)
  primary = jax.process_index() == 0
  train = config.train
  num_steps = int(train.num_steps)
  last_step = num_steps if stop_at is None else min(int(stop_at), num_steps)
  if primary:
    workdir.mkdir(parents=True, exist_ok=True)
  builder = _builder(config)
  preprocessor = inputs.load_preprocessor(config, builder, workdir)
  model = make_model.build_model(config)
  tx = optimizer.make_optimizer(config.optim, num_steps)
  schedule = optimizer.learning_rate_schedule(config.optim, num_steps)
  pretrained_schedule = optimizer.pretrained_schedule(config.optim, num_steps)
  layout = layouts.make_layout(config, model, tx, preprocessor)
  pack_text = bool(config.data.get('pack_text', False))
  if pack_text and not layout.packs_text:
    raise ValueError(
      f"data.pack_text packs each batch on one device: it needs parallelism='single', "
      f'not {layout.name!r}'
    )
  data = inputs.ShardedInput(
    config, preprocessor, builder, local_device_count=len(layout.local_devices)
  )
  ckpt = checkpoint_lib.Checkpointer(workdir, keep=int(train.keep_checkpoints))

  # The newest intact checkpoint (damaged ones are reported and moved aside).
  restored = ckpt.restore_newest_intact(layout.restore_target)
  if restored is not None:
    start, canonical, shard_states = restored
    state = layout.from_canonical(canonical)
    data.restore(shard_states)
    logging.info('Resumed from step %d of %s', start, ckpt.directory)
  else:
    start = 0
    state = layout.init(jax.random.key(config.seed))
    if init_from:
      canonical = layout.canonical(state)
      params = checkpoint_lib.load_init_params(init_from, config, canonical.params)
      state = layout.from_canonical(canonical.replace(params=params))
      logging.info('Parameters initialised from %s', init_from)
  if primary:  # Only once the restore has succeeded: a failed resume leaves the run as it was.
    atomic_file.write_text(
      workdir / 'config.json', json.dumps(rundir.config_json(config), indent=2)
    )
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(layout.restore_target.params))
  logging.info(
    '%s layout on %d devices (%d processes); %s parameters; global batch %d; steps %d -> %d',
    layout.name,
    jax.device_count(),
    jax.process_count(),
    f'{n_params:,}',
    config.data.global_batch_size,
    start,
    num_steps,
  )

  eval_every = int(train.get('eval_every', 0))
  evaluator = None
  if eval_every > 0 and primary:
    evaluator = evaluator_lib.RetrievalEvaluator(
      config,
      preprocessor,
      builder,
      split=train.eval_split,
      max_queries=int(train.eval_max_queries),
    )
  evals: list[dict[str, Any]] = []

  def evaluate(step: int) -> dict[str, float]:
    params = layout.params(state)  # On every process: gathering sharded params is collective.
    if evaluator is None:
      return {}
    result = evaluator(model, params)
    evals.append({'step': step, **result})
    return result

  writer = reporting.MetricsWriter(workdir, start_step=start, is_primary=primary)
  modal_weights = _modal_weights_fn(model, layout)
  if eval_every > 0 and (start == 0 or start >= last_step):
    # Before training, or once for a run that has nothing left to do.
    result = evaluate(start)
    if start == 0 and result:
      writer.write(0, result)
  pending: list[tuple[int, Any]] = []  # (step, this process's copy of the step's metrics).
  last: dict[str, float] = {}
  history: list[dict[str, float]] = []
  logger = None
  # The step compiled per batch shape: one shape, except with packing (a few row counts).
  compiled: dict[tuple[Any, ...], Any] = {}
  step = start
  try:
    for step in range(start + 1, last_step + 1):
      host_batch = next(data)
      if pack_text:
        host_batch = packing.add_pack_indices(host_batch, int(config.data.pack_row_multiple))
      batch = layout.put_batch(host_batch)
      shapes = tuple(sorted((k, np.shape(v)) for k, v in host_batch.items()))
      step_fn = compiled.get(shapes)
      if step_fn is None:  # Compiled explicitly: the FLOPs of the step give the MFU.
        step_fn = compiled[shapes] = layout.step.lower(state, batch).compile()
        if len(compiled) > 1:
          logging.info('step %d: compiled for a new batch shape (%d so far)', step, len(compiled))
      if logger is None:
        logger = reporting.WindowLogger(
          log_every=int(train.log_every),
          total_steps=last_step,
          examples_per_step=config.data.global_batch_size,
          flops_per_step=flops_lib.compiled_flops(step_fn) * layout.program_copies,
          model_flops_per_step=_model_flops(config, model, tx, preprocessor, host_batch),
          dtype=config.model.dtype,
          log_fn=(lambda line: print(line, flush=True)) if primary else (lambda line: None),
        )
        # Every process compiled: meet before the step's first collective (gloo's 30 s).
        mesh_lib.wait_for_all_processes(f'step_{step}_compiled')
      state, metrics = step_fn(state, batch)
      # This process's copy of the (replicated) metrics: fetchable without a collective.
      metrics = jax.tree.map(lambda x: x.addressable_data(0), metrics)
      pending.append((step, metrics))
      summary = logger.update(step, metrics)
      save = step % int(train.checkpoint_every) == 0 or step == last_step
      record: dict[str, float] = {}
      if summary is not None or save:
        for s, m in jax.device_get(pending):
          reporting.check_finite(m, s)  # Before any checkpoint of this state.
        pending = []
      if summary is not None:
        record = dict(summary, learning_rate=float(schedule(step - 1)))
        if optimizer.has_pretrained_group(config.optim):
          record['learning_rate_pretrained'] = float(pretrained_schedule(step - 1))
        a_title, a_image = modal_weights(state, batch)
        record['modal_weight_title'], record['modal_weight_image'] = float(a_title), float(a_image)
        record['negatives_per_query'] = sum(
          record.get(f'qpm_negatives_{k}', 0.0) for k in ('local', 'cross_device', 'bank')
        )
        last = record
        history.append({'step': step, **record})
      if save:
        ckpt.save(step, layout.canonical(state), data.global_states(), config)
      if eval_every > 0 and (step % eval_every == 0 or step == last_step):
        record = {**record, **evaluate(step)}
      if record:
        writer.write(step, record)
  finally:
    ckpt.close()
    data.close()
    writer.close()
  return {
    'step': step,
    'metrics': last,
    'history': history,
    'evals': evals,
    'input_stats': data.stats,
  }
