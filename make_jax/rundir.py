"""A training run's directory: where its files are, its config, its checkpoints' params.

Why on the ground floor: export, serving, evaluation and the tools all act on a run's
directory, and reading it must mean neither importing the trainer (serving never imports
train) nor reaching into serving for paths. The trainer writes what is read here
(`train/checkpoint.py` the checkpoints, `train/inputs.py` the vocabulary), the tools
write the offline artefacts.

A run directory (`RunDir`):

  config.json                   the run's config (written once a resume has succeeded)
  vocab.txt, domain_words.txt   the run's text (vocabulary, domain dictionary)
  checkpoints/<step>/           orbax: state, input, config; integrity.json once complete
  export/products/              tools.export: product embedding shards + manifest
  export/index/                 tools.build_index: the ScaNN index + manifest
  export/query_table/           tools.build_query_table: the offline top-K table
  query_log.tsv                 the quickstart's query log (`query<TAB>count`)

Interface:

  RunDir(root)                   the paths above and the commands that rebuild each artefact
  load_config(root), run_config  the run's config (a damaged one is named, one line)
  find_checkpoint(path)          (step directory, step) of the newest complete checkpoint
  write_integrity / check_integrity   size and SHA-256 of every file of a checkpoint
  latest_params(path)            (params, step) of the newest intact checkpoint, on one device

Errors a caller shows in one line: `ArtefactError` (a missing or damaged artefact, named;
`export.manifest.ManifestError` and `CheckpointError` are kinds of it).
"""

import dataclasses
import hashlib
import json
import os
import pathlib
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from jax.sharding import SingleDeviceSharding

from make_jax import atomic_file

CONFIG = 'config.json'
CHECKPOINTS = 'checkpoints'
INTEGRITY = 'integrity.json'


class ArtefactError(ValueError):
  """A run's file or artefact is missing or damaged (the message names it, one line)."""


class CheckpointError(ArtefactError):
  """No intact checkpoint where one was expected (the message is one line)."""


@dataclasses.dataclass(frozen=True)
class RunDir:
  """Where a run's files are: what the trainer and the tools write, and serving reads."""

  root: pathlib.Path

  @property
  def config(self) -> pathlib.Path:
    return self.root / CONFIG

  @property
  def vocab(self) -> pathlib.Path:
    """The run's vocabulary (the trainer copies it here)."""
    return self.root / 'vocab.txt'

  @property
  def domain_words(self) -> pathlib.Path:
    """The run's domain dictionary (one entry a line; may be empty)."""
    return self.root / 'domain_words.txt'

  @property
  def checkpoints(self) -> pathlib.Path:
    return self.root / CHECKPOINTS

  @property
  def products(self) -> pathlib.Path:
    """`tools.export` output: product embedding shards + manifest."""
    return self.root / 'export' / 'products'

  @property
  def index(self) -> pathlib.Path:
    """`tools.build_index` output: the ScaNN index (product ids as docids) + manifest."""
    return self.root / 'export' / 'index'

  @property
  def query_table(self) -> pathlib.Path:
    """`tools.build_query_table` output: the offline top-K table of the query log."""
    return self.root / 'export' / 'query_table'

  @property
  def query_log(self) -> pathlib.Path:
    """The query log the table is built from (`query<TAB>count` lines; quickstart's)."""
    return self.root / 'query_log.tsv'

  def export_command(self) -> str:
    return (
      f"python -m tools.export --config=<the run's config> --workdir={self.root} "
      f'--out={self.products}'
    )

  def index_command(self) -> str:
    return f'python -m tools.build_index --embeddings={self.products} --out={self.index}'

  def table_command(self) -> str:
    return (
      f"python -m tools.build_query_table --config=<the run's config> --workdir={self.root} "
      f'--index={self.index} --queries=<query log> --out={self.query_table}'
    )


# --- The run's config -------------------------------------------------------------------


def config_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as a JSON-compatible dict (what `config.json` holds)."""
  return json.loads(config.to_json_best_effort())


def load_config(root: str | os.PathLike) -> ml_collections.ConfigDict:
  """The run's config from `<root>/config.json`.

  Raises:
    FileNotFoundError: no config.json (not a run directory).
    ArtefactError: config.json is damaged (named, with where a copy is).
  """
  path = RunDir(pathlib.Path(root)).config
  if not path.exists():
    raise FileNotFoundError(
      f'{path} not found: a served workdir holds config.json, vocab.txt, checkpoints/ and export/'
    )
  try:
    return ml_collections.ConfigDict(json.loads(path.read_text('utf-8')))
  except (ValueError, TypeError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors.
    raise ArtefactError(
      f'{path} is damaged ({type(e).__name__}): it is written by python -m tools.train at the '
      'start of a run; restore it from the run (its checkpoints hold a copy under config/)'
    ) from None


def run_config(
  root: str | os.PathLike, flag_config: ml_collections.ConfigDict, given: bool
) -> ml_collections.ConfigDict:
  """The config a tool acting on a run uses: `--config` if `given`, else the run's own.

  A run directory with `config.json` and no explicit `--config` means the run's config (so
  an export or table is made with the model that was trained); otherwise `flag_config`.
  """
  if not given and root and RunDir(pathlib.Path(root)).config.exists():
    return load_config(root)
  return flag_config


# --- Checkpoints: integrity and reading -------------------------------------------------


def _sha256(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with path.open('rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      digest.update(chunk)
  return digest.hexdigest()


def file_records(directory: str | os.PathLike, exclude: str) -> dict[str, dict[str, Any]]:
  """{relative path: {'size', 'sha256'}} of every file under `directory` but `exclude`
  (the record itself): what a checkpoint's integrity.json and an artefact's manifest hold."""
  directory = pathlib.Path(directory)
  return {
    p.relative_to(directory).as_posix(): {'size': p.stat().st_size, 'sha256': _sha256(p)}
    for p in sorted(directory.rglob('*'))
    if p.is_file() and p.relative_to(directory).as_posix() != exclude
  }


def damaged_files(
  directory: str | os.PathLike,
  records: dict[str, dict[str, Any]],
  *,
  checksums: bool = False,
  prefix: str = '',
) -> list[str]:
  """'<path>: <what>' for each recorded file (under `prefix`) that is missing, of another
  size or, with `checksums`, of other contents; [] when all match."""
  directory = pathlib.Path(directory)
  problems = []
  for name, want in sorted(records.items()):
    if not name.startswith(prefix):
      continue
    path = directory / name
    if not path.is_file():
      problems.append(f'{path}: missing')
    elif (size := path.stat().st_size) != want['size']:
      problems.append(f'{path}: {size} bytes, {want["size"]} written')
    elif checksums and _sha256(path) != want['sha256']:
      problems.append(f'{path}: contents changed since written (SHA-256 mismatch)')
  return problems


def write_integrity(step_dir: str | os.PathLike) -> None:
  """Records size and SHA-256 of every file of a complete checkpoint (atomically)."""
  files = file_records(step_dir, INTEGRITY)
  atomic_file.write_text(pathlib.Path(step_dir) / INTEGRITY, json.dumps({'files': files}, indent=1))


def check_integrity(step_dir: str | os.PathLike) -> str | None:
  """Why the checkpoint in `step_dir` is damaged ('<file>: <what>'), or None: intact by its
  record, or written without one (nothing to check against)."""
  step_dir = pathlib.Path(step_dir)
  record = step_dir / INTEGRITY
  if not record.is_file():
    return None
  try:
    files = json.loads(record.read_text())['files']
    problems = damaged_files(step_dir, files, checksums=True)
  except (OSError, ValueError, KeyError, TypeError) as e:
    return f'{record}: unreadable integrity record ({type(e).__name__})'
  return problems[0] if problems else None


def one_line(error: BaseException) -> str:
  """An exception as '<Type>: <first line>' (orbax and tensorstore errors run long)."""
  text = str(error).strip().splitlines()
  return f'{type(error).__name__}: {text[0] if text else ""}'[:300]


def _steps_dir(path: pathlib.Path) -> pathlib.Path:
  return path / CHECKPOINTS if (path / CHECKPOINTS).is_dir() else path


def step_dirs(path: str | os.PathLike) -> list[tuple[pathlib.Path, int]]:
  """(step directory, step) of every complete checkpoint under `path`, newest first.

  `path` is a run directory, its `checkpoints/` directory, or one step's directory.
  """
  path = pathlib.Path(path).absolute()
  if (path / 'state').is_dir() and path.name.isdigit():
    return [(path, int(path.name))]
  steps_dir = _steps_dir(path)
  if not steps_dir.is_dir():
    return []
  manager = ocp.CheckpointManager(
    steps_dir, options=ocp.CheckpointManagerOptions(read_only=True, create=False)
  )
  steps = sorted(manager.all_steps(), reverse=True)
  manager.close()
  return [(steps_dir / str(step), int(step)) for step in steps]


def find_checkpoint(path: str | os.PathLike) -> tuple[pathlib.Path, int]:
  """(step directory, step) of the newest complete checkpoint under `path`.

  Raises:
    FileNotFoundError: no complete checkpoint there.
  """
  found = step_dirs(path)
  if found:
    return found[0]
  raise FileNotFoundError(
    f'No complete checkpoint under {pathlib.Path(path).absolute()} (looked for '
    f'{CHECKPOINTS}/<step>/state written by python -m tools.train)'
  )


def _read_params(state_dir: pathlib.Path) -> Any:
  """The `params` of the TrainState saved in `state_dir`, unsharded on this process's first
  device. The target is the checkpoint's own metadata (shapes and dtypes), so reading needs
  no model: the devices and sharding it was written with do not matter."""
  one = SingleDeviceSharding(jax.local_devices()[0])
  with ocp.StandardCheckpointer() as ckptr:
    meta = ckptr.metadata(state_dir)
    tree = getattr(meta, 'item_metadata', meta)
    tree = getattr(tree, 'tree', tree)
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one), tree)
    return ckptr.restore(state_dir, target)['params']


def latest_params(path: str | os.PathLike) -> tuple[Any, int]:
  """(params, step) of the newest intact checkpoint under `path` (or of a step directory).

  The params are the `params` tree of `TrainState`, unsharded, on this process's first
  device. A damaged checkpoint (its integrity record disagrees, or orbax cannot read it)
  is logged with its step and file and the next older one is read.

  Raises:
    FileNotFoundError: no complete checkpoint there.
    CheckpointError: checkpoints exist but none is intact (one line naming each).
  """
  candidates = step_dirs(path)
  if not candidates:
    find_checkpoint(path)  # Raises the FileNotFoundError.
  damaged = []
  for step_dir, step in candidates:
    why = check_integrity(step_dir)
    if why is None:
      try:
        return _read_params(step_dir / 'state'), step
      except Exception as e:  # noqa: BLE001  (orbax/tensorstore raise many types)
        why = f'{step_dir}: {one_line(e)}'
    damaged.append((step, why))
    logging.warning('checkpoint step %d is damaged (%s); trying the previous one', step, why)
  raise CheckpointError(
    f'no intact checkpoint under {pathlib.Path(path).absolute()}: '
    + '; '.join(f'step {s}: {w}' for s, w in damaged)
  )
