"""Text corpora for learning a vocabulary: plain text files and the fashion titles.

Why here: `tools/build_vocab.py` stays a thin CLI, and the reading rules (what counts as
a malformed row, what is skipped) are tested in one place.
"""

import csv
import dataclasses
import io
import os
import zipfile
from collections.abc import Iterator

FASHION_STYLES_MEMBER = 'myntradataset/styles.csv'
_TITLE_COLUMN = 'productDisplayName'


@dataclasses.dataclass
class CorpusStats:
  """What reading a corpus met: rows read, texts kept, rows repaired and skipped."""

  rows: int = 0
  texts: int = 0
  repaired: int = 0  # Rows with extra commas: the surplus fields were rejoined into the title.
  skipped: int = 0  # Rows with too few fields or an empty title.


def read_lines(path: str | os.PathLike, stats: CorpusStats | None = None) -> Iterator[str]:
  """Yields the non-blank lines of a UTF-8 text file (one text per line).

  Invalid UTF-8 bytes are replaced (then dropped by normalisation). Blank lines are
  skipped and counted in `stats.skipped`.
  """
  stats = stats if stats is not None else CorpusStats()
  with open(path, encoding='utf-8', errors='replace') as f:
    for line in f:
      stats.rows += 1
      line = line.rstrip('\r\n')
      if line.strip():
        stats.texts += 1
        yield line
      else:
        stats.skipped += 1


def numbered_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
  """Yields (line number from 1, text) for EVERY line of a file, blank lines included.

  Lines end at `\\n` only (a lone `\\r`, `\\x0b` or U+2028 stays inside its line; one
  `\\r` before the `\\n` is removed), so the numbers are those of `sed -n Np` and
  `wc -l`, plus a last line without a newline. Invalid UTF-8 becomes U+FFFD.
  """
  with open(path, 'rb') as f:
    for number, raw in enumerate(f, start=1):  # Binary files split at b'\n' only.
      if raw.endswith(b'\n'):
        raw = raw[:-1]
      if raw.endswith(b'\r'):
        raw = raw[:-1]
      yield number, raw.decode('utf-8', errors='replace')


def fashion_titles(zip_path: str | os.PathLike, stats: CorpusStats | None = None) -> Iterator[str]:
  """Yields the product titles (`productDisplayName`) of the fashion catalogue zip.

  The title is the last column. A row with more fields than the header is a title with
  unquoted commas: the surplus fields are joined back with commas (counted in
  `stats.repaired`). A row with fewer fields, or an empty title, is skipped and counted.

  Raises:
    ValueError: if the zip lacks `myntradataset/styles.csv` or its header lacks the
      title column.
  """
  stats = stats if stats is not None else CorpusStats()
  with zipfile.ZipFile(zip_path) as zf:
    if FASHION_STYLES_MEMBER not in zf.namelist():
      raise ValueError(f'{zip_path} has no {FASHION_STYLES_MEMBER}')
    with zf.open(FASHION_STYLES_MEMBER) as raw:
      reader = csv.reader(io.TextIOWrapper(raw, encoding='utf-8-sig', errors='replace', newline=''))
      header = next(reader, None)
      if not header or header[-1] != _TITLE_COLUMN:
        raise ValueError(f'{FASHION_STYLES_MEMBER}: last column is not {_TITLE_COLUMN}: {header}')
      width = len(header)
      for row in reader:
        if not row:
          continue
        stats.rows += 1
        if len(row) < width:
          stats.skipped += 1
          continue
        if len(row) > width:
          stats.repaired += 1
        title = ','.join(row[width - 1 :]).strip()
        if not title:
          stats.skipped += 1
          continue
        stats.texts += 1
        yield title
