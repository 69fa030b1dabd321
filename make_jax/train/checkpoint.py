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

`latest_params(path, config)` is the export side's way in: the params of the newest (or a
given) checkpoint, as unsharded arrays on one device.
"""

import json
import os
import pathlib
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import SingleDeviceSharding

from make_jax.models import bert_import

CHECKPOINTS = 'checkpoints'


def _steps_dir(path: pathlib.Path) -> pathlib.Path:
  return path / CHECKPOINTS if (path / CHECKPOINTS).is_dir() else path


def config_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as a JSON-compatible dict."""
  return json.loads(config.to_json_best_effort())


class Checkpointer:
  """Saves and restores the checkpoints of one workdir (every process calls every method)."""

  def __init__(self, workdir: str | os.PathLike, *, keep: int, async_save: bool = True):
    self.directory = pathlib.Path(workdir).absolute() / CHECKPOINTS
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

  def save(
    self,
    step: int,
    canonical_state: Any,
    input_shards: list[dict[str, Any]],
    config: ml_collections.ConfigDict,
  ) -> None:
    """Starts writing checkpoint `step` (returns once the state is copied off the devices)."""
    self.manager.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(canonical_state),
        input=ocp.args.JsonSave({'shards': input_shards}),
        config=ocp.args.JsonSave(config_json(config)),
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

  def wait(self) -> None:
    """Blocks until pending saves are complete."""
    self.manager.wait_until_finished()

  def close(self) -> None:
    """Finishes pending saves and releases the manager."""
    self.manager.wait_until_finished()
    self.manager.close()


def find_checkpoint(path: str | os.PathLike) -> tuple[pathlib.Path, int]:
  """(step directory, step) of the newest complete checkpoint under `path`.

  `path` is a workdir, its `checkpoints/` directory, or one step's directory.

  Raises:
    FileNotFoundError: no complete checkpoint there.
  """
  path = pathlib.Path(path).absolute()
  if (path / 'state').is_dir() and path.name.isdigit():
    return path, int(path.name)
  steps_dir = _steps_dir(path)
  if steps_dir.is_dir():
    manager = ocp.CheckpointManager(
      steps_dir, options=ocp.CheckpointManagerOptions(read_only=True, create=False)
    )
    step = manager.latest_step()
    manager.close()
    if step is not None:
      return steps_dir / str(step), int(step)
  raise FileNotFoundError(
    f'No complete checkpoint under {path} (looked for {CHECKPOINTS}/<step>/state written by '
    'python -m tools.train)'
  )


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


def latest_params(path: str | os.PathLike, config: ml_collections.ConfigDict) -> tuple[Any, int]:
  """(params, step) of the newest checkpoint under `path` (or of a given step directory).

  The params are the `params` tree of `TrainState`, unsharded, on this process's first
  device. `config` must describe the model that wrote the checkpoint (`<workdir>/config.json`
  holds it).

  Raises:
    FileNotFoundError: no complete checkpoint there.
  """
  step_dir, step = find_checkpoint(path)
  target = _abstract_params(config)
  with ocp.StandardCheckpointer() as ckptr:
    state = ckptr.restore(step_dir / 'state', target)
  return state.params, step


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
    params, _ = latest_params(path, config)
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
