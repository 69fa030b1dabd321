"""Manifests and atomic directories for the offline artefacts (SPEC 7).

Why: an embedding export, an index and a query table are read by other jobs, often on other
machines and days later. Each directory carries a `manifest.json` that says what made it
(checkpoint step, config fingerprint, dimension, count, dtype) so that a reader can refuse
an artefact that does not match its model, and each is published by one rename of a
finished staging directory, so a crash leaves nothing that loads.

Integrity: the manifest records the size and SHA-256 of every other file of its directory
(`files`). Readers check the sizes whenever they open an artefact (a stat per file) and the
checksums when asked (`verify='checksums'`: `tools.serve --verify`); a mismatch is a
`ManifestError` naming the file and the command that rebuilds the artefact.
"""

import contextlib
import datetime
import hashlib
import json
import os
import pathlib
import shutil
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import ml_collections

from make_jax import atomic_file, rundir

MANIFEST = 'manifest.json'
FORMAT_VERSION = 1
VERIFY_MODES = ('none', 'sizes', 'checksums')


class ManifestError(rundir.ArtefactError):
  """An artefact is missing, incomplete or does not match the model that would use it."""


def config_fingerprint(
  config: ml_collections.ConfigDict, vocab_tokens: Sequence[str] | None = None
) -> str:
  """A short hash of what decides an embedding: the model and text config and the vocab.

  Paths (`text.vocab_path`) are left out and the vocabulary's tokens put in instead, so the
  same model fingerprints the same on every machine. Weights are not part of it: the
  checkpoint step is recorded separately.
  """
  text = {k: v for k, v in config.text.to_dict().items() if k != 'vocab_path'}
  payload = {
    'model': config.model.to_dict(),
    'text': text,
    'image_size': config.data.image_size,
    'vocab_sha256': (
      hashlib.sha256('\n'.join(vocab_tokens).encode('utf-8')).hexdigest()
      if vocab_tokens is not None
      else None
    ),
  }
  blob = json.dumps(payload, sort_keys=True, default=str).encode('utf-8')
  return hashlib.sha256(blob).hexdigest()[:16]


def now() -> str:
  """UTC time stamp for manifests."""
  return datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%dT%H:%M:%SZ')


def file_records(directory: str | os.PathLike) -> dict[str, dict[str, Any]]:
  """{relative path: {'size', 'sha256'}} of every file under `directory` but its manifest."""
  return rundir.file_records(directory, MANIFEST)


def write(directory: str | os.PathLike, manifest: dict[str, Any]) -> None:
  """Writes `manifest.json` atomically (with the format version and, written last, the size
  and SHA-256 of every other file of the directory)."""
  manifest = {'format_version': FORMAT_VERSION, **manifest, 'files': file_records(directory)}
  text = json.dumps(manifest, indent=2, sort_keys=True, default=str) + '\n'
  atomic_file.write_text(pathlib.Path(directory) / MANIFEST, text)


def read(
  directory: str | os.PathLike,
  kind: str | None = None,
  *,
  verify: str = 'sizes',
  rebuild: str = '',
) -> dict[str, Any]:
  """Reads `directory/manifest.json` and checks the files it records.

  Args:
    directory: the artefact.
    kind: the kind expected (None: any).
    verify: 'sizes' (every recorded file present with its size), 'checksums' (and its
      SHA-256), or 'none'.
    rebuild: the command that rebuilds the artefact, appended to every error.

  Raises:
    ManifestError: no manifest (the directory is not a finished artefact), an unreadable
      one, another kind, or a damaged file (named).
  """
  if verify not in VERIFY_MODES:
    raise ValueError(f'verify={verify!r}; expected one of {VERIFY_MODES}')
  then = f' {rebuild}' if rebuild else ''
  path = pathlib.Path(directory) / MANIFEST
  if not path.is_file():
    raise ManifestError(
      f'{directory} has no {MANIFEST}: it is not a finished artefact (an interrupted '
      f'build, or the wrong directory).{then}'
    )
  try:
    manifest = json.loads(path.read_text('utf-8'))
    if not isinstance(manifest, dict):
      raise ValueError('not a JSON object')
  except (ValueError, UnicodeDecodeError) as e:
    raise ManifestError(f'{path} is damaged ({type(e).__name__}: {e}).{then}') from None
  if kind is not None and manifest.get('kind') != kind:
    raise ManifestError(f'{directory} holds a {manifest.get("kind")!r}, not a {kind!r}')
  if verify != 'none':
    problems = rundir.damaged_files(
      directory, manifest.get('files', {}), checksums=verify == 'checksums'
    )
    if problems:
      more = f' (and {len(problems) - 1} more)' if len(problems) > 1 else ''
      raise ManifestError(f'damaged artefact: {problems[0]}{more}.{then}')
  return manifest


def check_compatible(
  manifest: dict[str, Any],
  *,
  what: str,
  rebuild: str,
  fingerprint: str | None = None,
  dim: int | None = None,
  step: int | None = None,
) -> None:
  """Refuses an artefact whose model differs from the caller's.

  Args:
    manifest: the artefact's manifest (config_fingerprint, dim, checkpoint_step).
    what: the artefact, for the message (e.g. 'index /x/idx').
    rebuild: what to rebuild, for the message (the commands).
    fingerprint, dim, step: the caller's model; None skips that check.

  Raises:
    ManifestError: a mismatch, naming both values and what to rebuild.
  """
  problems = []
  if dim is not None and manifest.get('dim') != dim:
    problems.append(f"dimension {manifest.get('dim')} != the model's {dim}")
  if fingerprint is not None and manifest.get('config_fingerprint') != fingerprint:
    problems.append(
      f"config fingerprint {manifest.get('config_fingerprint')} != the model's {fingerprint}"
    )
  if step is not None and manifest.get('checkpoint_step') != step:
    problems.append(f"checkpoint step {manifest.get('checkpoint_step')} != the model's {step}")
  if problems:
    raise ManifestError(f'{what} does not match the model: {"; ".join(problems)}. {rebuild}')


@contextlib.contextmanager
def staging_dir(final: str | os.PathLike) -> Iterator[pathlib.Path]:
  """Yields a fresh sibling directory of `final`; on success it replaces `final` by rename.

  On an exception the staging directory is removed and `final` is left as it was. A killed
  process leaves a `.<name>.tmp-*` sibling without effect on `final` (readers never look
  at it; it has no manifest until complete).
  """
  final = pathlib.Path(final).absolute()
  final.parent.mkdir(parents=True, exist_ok=True)
  tmp = final.parent / f'.{final.name}.tmp-{uuid.uuid4().hex[:8]}'
  tmp.mkdir()
  try:
    yield tmp
    publish(tmp, final)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def publish(tmp: pathlib.Path, final: pathlib.Path) -> None:
  """Renames the finished `tmp` to `final`, moving an older `final` aside first."""
  old = None
  if final.exists():
    old = final.parent / f'.{final.name}.old-{uuid.uuid4().hex[:8]}'
    os.rename(final, old)
  os.rename(tmp, final)
  if old is not None:
    shutil.rmtree(old, ignore_errors=True)
