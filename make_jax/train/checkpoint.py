"""Orbax checkpoints of a training run: the whole state, the input position and the config.

Why orbax's `CheckpointManager`: it writes every step into a temporary directory and renames
it when complete, so a process killed mid-write leaves an incomplete directory that is never
read (and nothing earlier is touched); it keeps the last N; it writes sharded arrays from
every host collectively; and it saves asynchronously (the device-to-host copy blocks, the
file writing does not).

One checkpoint `<workdir>/checkpoints/<step>/` holds three items:
  state   the canonical `TrainState` (layouts.py): params, optimiser state, step, RNG key
          data, the MBNS queue;
  input   {'shards': [pipeline.get_state() of every input shard, in shard order]};
  config  the run's config as JSON (for reading a checkpoint without its workdir).

Reading a run's checkpoints without the trainer (export, serving, evaluation) is
`rundir.latest_params(path)`: the params of the newest intact checkpoint, on one device.

Damage on disk (a truncated or overwritten file, a deleted one): once a save is complete,
`<step>/integrity.json` records the size and SHA-256 of every file of that step
(`rundir.write_integrity`). A restore (training's resume here, `rundir.latest_params`
for export and serving) checks them and tries the
newest checkpoint first, then each older one: a damaged checkpoint is reported by step and
file and skipped (the trainer moves it aside to `<step>.damaged`, so the resumed run can
write that step again); with no intact checkpoint left the error says so in one line. A
checkpoint without the record (its writer died before writing it) is read as it is, and
skipped if orbax cannot read it.
"""

import os
import pathlib
import shutil
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.sharding import SingleDeviceSharding

from make_jax import rundir
from make_jax.models import bert_import
from make_jax.parallel import mesh as mesh_lib


class Checkpointer:
  """Saves and restores the checkpoints of one workdir (every process calls every method)."""

  def __init__(self, workdir: str | os.PathLike, *, keep: int, async_save: bool = True):
    self.directory = pathlib.Path(workdir).absolute() / rundir.CHECKPOINTS
    self.manager = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=async_save
      ),
      item_names=('state', 'input', 'config'),
    )

  def latest_step(self) -> int | None:
    """The newest complete checkpoint's step (None when there is none)."""
    return self.manager.latest_step()

  def _record_integrity(self) -> None:
    """Writes the integrity record of every finished step that lacks one (process 0)."""
    if jax.process_index() != 0:
      return
    for step in self.manager.all_steps():
      step_dir = self.directory / str(step)
      if step_dir.is_dir() and not (step_dir / rundir.INTEGRITY).exists():
        rundir.write_integrity(step_dir)

  def save(
    self,
    step: int,
    canonical_state: Any,
    input_shards: list[dict[str, Any]],
    config: ml_collections.ConfigDict,
  ) -> None:
    """Starts writing checkpoint `step` (returns once the state is copied off the devices).

    The previous save is finished first and its integrity recorded."""
    self.manager.wait_until_finished()
    self._record_integrity()
    self.manager.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(canonical_state),
        input=ocp.args.JsonSave({'shards': input_shards}),
        config=ocp.args.JsonSave(rundir.config_json(config)),
      ),
      force=True,
    )

  def restore(self, step: int, target: Any) -> tuple[Any, list[dict[str, Any]]]:
    """(canonical state placed as `target`'s shardings, input shard states) of `step`."""
    restored = self.manager.restore(
      step,
      args=ocp.args.Composite(state=ocp.args.StandardRestore(target), input=ocp.args.JsonRestore()),
    )
    return restored['state'], list(restored['input']['shards'])

  def restore_newest_intact(
    self, target: Any, log: Any = None
  ) -> tuple[int, Any, list[dict[str, Any]]] | None:
    """(step, canonical state, input shard states) of the newest checkpoint that reads back
    intact; None when the workdir has no checkpoint.

    A damaged checkpoint (integrity record mismatch, or orbax cannot read it) is reported
    through `log(message)` with its step and file, moved aside to `<step>.damaged` by
    process 0, and the next older one is tried.

    Raises:
      CheckpointError: checkpoints exist but none is intact (one line naming each).
    """
    log = log or logging.warning
    damaged = []
    for step in sorted(self.manager.all_steps(), reverse=True):
      step_dir = self.directory / str(step)
      why = rundir.check_integrity(step_dir)
      if why is None:
        try:
          state, shards = self.restore(step, target)
          break
        except Exception as e:  # noqa: BLE001  (orbax/tensorstore raise many types)
          why = f'{step_dir}: {rundir.one_line(e)}'
      damaged.append((step, why))
      log(f'checkpoint step {step} is damaged ({why}); trying the previous one')
    else:
      if damaged:
        raise rundir.CheckpointError(
          f'no intact checkpoint in {self.directory}: '
          + '; '.join(f'step {s}: {w}' for s, w in damaged)
        )
      return None
    if damaged:
      if jax.process_index() == 0:
        for s, _ in damaged:
          aside = self.directory / f'{s}.damaged'
          shutil.rmtree(aside, ignore_errors=True)
          (self.directory / str(s)).rename(aside)
      mesh_lib.wait_for_all_processes('damaged_checkpoints_moved')
      self.manager.reload()
    return step, state, shards

  def wait(self) -> None:
    """Blocks until pending saves are complete (and records their integrity)."""
    self.manager.wait_until_finished()
    self._record_integrity()

  def close(self) -> None:
    """Finishes pending saves and releases the manager."""
    self.manager.wait_until_finished()
    self._record_integrity()
    self.manager.close()


def _abstract_params(config: ml_collections.ConfigDict) -> Any:
  """ShapeDtypeStructs of the canonical state of `config`, on this process's first device."""
  from make_jax.models import make_model
  from make_jax.train import optimizer
  from make_jax.train import state as state_lib

  model = make_model.build_model(config)
  tx = optimizer.make_optimizer(config.optim, config.train.num_steps)
  init = state_lib.init_fn(model, tx, config)
  shapes = jax.eval_shape(
    lambda r: (s := init(r)).replace(rng=jax.random.key_data(s.rng)), jax.random.key(0)
  )
  one = SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=one), shapes)


def init_from_dir(value: str) -> str:
  """`--init_from` as a path: 'minilm' names the packaged all-MiniLM-L6-v2 checkpoint."""
  return str(bert_import.default_checkpoint_dir()) if value == 'minilm' else value


def load_init_params(
  path: str | os.PathLike, config: ml_collections.ConfigDict, initial: Any = None
) -> Any:
  """Pretrained params for `--init_from`: a HuggingFace BERT checkpoint directory (imported
  into the text encoders of `initial`, the freshly initialised params, which keep every
  other part), an `import_bert` msgpack file, or a run's checkpoint.

  Raises:
    FileNotFoundError: nothing usable at `path`.
    ValueError: the params do not fit the model of `config` (names or shapes differ).
  """
  path = pathlib.Path(path)
  if bert_import.is_checkpoint_dir(path):
    if initial is None:
      raise ValueError(f'--init_from {path} is a checkpoint directory: pass the initial params')
    params, _ = bert_import.import_bert(
      jax.device_get(initial), path, num_heads=int(config.model.num_heads)
    )
    return params
  if path.is_file():
    params = bert_import.load_params(path)
  else:
    params, _ = rundir.latest_params(path)
  want = _abstract_params(config).params
  got_paths = {jax.tree_util.keystr(p): np.shape(x) for p, x in jax.tree.leaves_with_path(params)}
  for p, x in jax.tree.leaves_with_path(want):
    key = jax.tree_util.keystr(p)
    if key not in got_paths:
      raise ValueError(f'--init_from {path} has no parameter {key}: it was made for another model')
    if tuple(got_paths.pop(key)) != tuple(x.shape):
      raise ValueError(f'--init_from {path}: parameter {key} has another shape than {x.shape}')
  if got_paths:
    raise ValueError(f'--init_from {path} has parameters the model lacks: {sorted(got_paths)[:5]}')
  return jax.tree.map(lambda w, a: np.asarray(w, dtype=a.dtype), params, want)
