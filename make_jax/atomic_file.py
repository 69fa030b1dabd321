"""Atomic file writes: readers see the old file or the new one, never a partial one.

Why: vocabularies, imported parameters and (later) indexes and tables are read by other
processes and long jobs; a crash mid-write must not leave a truncated file behind. The data
goes to a temporary file in the same directory (same filesystem), is flushed and fsynced,
then renamed over the target with `os.replace`, which is atomic on POSIX.
"""

import os
import pathlib
import tempfile


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
  """Writes `data` to `path` atomically, creating parent directories as needed."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
  umask = os.umask(0)
  os.umask(umask)
  try:
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file normal permissions.
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_text(path: str | os.PathLike, text: str) -> None:
  """Writes `text` as UTF-8 with '\\n' line ends to `path` atomically."""
  write_bytes(path, text.encode('utf-8'))
