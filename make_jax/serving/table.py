"""The offline query -> top-K table as serving looks it up (SPEC 7.3).

Serving reads the table through the `TableLookup` protocol: the export's memory-mapped
table (`export.query_table.QueryTable`) behind `ExportTable`, or a small `DictTable`
(tests, demos). The table answers in product ids, as the offline job wrote them; the
Searcher maps them to catalogue rows.

The table is looked up by the query's words, not its 32-bit qid: two word sequences may
share a qid, and the export table compares the stored key. `DictTable` is keyed by qid and
hashes the words it is given.
"""

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from make_jax.text import qid as qid_lib


@runtime_checkable
class TableLookup(Protocol):
  """The offline query -> top-K (product ids, scores) table."""

  def lookup(self, words: Sequence[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """(product ids int64 [K], scores float32 [K]) best first, or None on a miss.

    words: the query's words (`TextPreprocessor.words`), in any order.
    """
    ...


class DictTable:
  """A qid-keyed table held in a dict (small tables, tests); the big one is memory-mapped.

  Keyed by the qid alone, so two word sequences with one qid would share a row: fine for
  a handful of entries, not for a query log (use `ExportTable`).
  """

  def __init__(self, entries: Mapping[int, tuple[np.ndarray, np.ndarray]]):
    """entries: qid (`TextPreprocessor.qid`) -> (product ids, scores), best first."""
    self._entries = {
      int(q): (np.asarray(ids, np.int64), np.asarray(s, np.float32))
      for q, (ids, s) in entries.items()
    }

  def __len__(self) -> int:
    return len(self._entries)

  def lookup(self, words: Sequence[str]) -> tuple[np.ndarray, np.ndarray] | None:
    return self._entries.get(qid_lib.qid_of_words(list(words)))


class ExportTable:
  """`TableLookup` over the export's table (`export.query_table.QueryTable`, key compared)."""

  def __init__(self, table: Any):
    """table: an opened `export.query_table.QueryTable` (or anything with its `lookup`)."""
    self.table = table

  def __len__(self) -> int:
    return len(self.table)

  def health(self) -> dict[str, Any]:
    """Damaged shards (answered online) and the lookups they turned away."""
    return {
      'bad_shards': {str(k): v for k, v in getattr(self.table, 'bad_shards', {}).items()},
      'degraded_lookups': int(getattr(self.table, 'degraded_lookups', 0)),
    }

  def lookup(self, words: Sequence[str]) -> tuple[np.ndarray, np.ndarray] | None:
    row = self.table.lookup(list(words))
    if row is None:
      return None
    ids, scores = np.asarray(row['ids'], np.int64), np.asarray(row['scores'], np.float32)
    keep = ids >= 0  # Rows of a query with fewer than K neighbours are padded with -1.
    return ids[keep], scores[keep]
