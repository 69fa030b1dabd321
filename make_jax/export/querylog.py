"""Query logs as Beam collections: parse lines, merge word orders, keep a surface form.

Why: the offline table (SPEC 7.3) and the query export key a query by its sorted words, as
training does (SPEC 2): 'nike red shoes' and 'shoes red nike' are one row. A log line is a
query and, optionally, a count (`query_column` / `count_column`, tab-separated). Lines are
read as bytes; a line that cannot be used is skipped and counted by its reason
(`SKIP_REASONS`: not UTF-8, no query column, a count that is not an integer in
[1, MAX_COUNT], a query the server would refuse: control characters or over
`MAX_QUERY_CHARS`), as is a query with no words. `check_bad_share` fails the job when the
skipped share passes a threshold. Of the surface forms of one key the most frequent is kept
for display (ties: the smallest string, so reruns agree).
"""

import os
import unicodedata
from collections.abc import Iterator, Mapping
from typing import Any

import apache_beam as beam
import ml_collections
from apache_beam.metrics import Metrics

from make_jax.text import qid as qid_lib
from make_jax.text.preprocess import MAX_QUERY_CHARS, TextPreprocessor

KEY_SEPARATOR = '\x1f'  # Between the sorted words of a key (never inside a word).
NAMESPACE = 'make_jax.querylog'
# Counts are summed and carried by Beam's variable-length int64 coder: at most 2**62.
MAX_COUNT = 2**62
# Why a line is skipped (counters `skipped_<reason>`).
SKIP_REASONS = ('bad_utf8', 'no_query_column', 'bad_count', 'control_characters', 'too_long')


class BadLine(ValueError):
  """A log line that cannot be used; args[0] is its reason (one of SKIP_REASONS)."""


def parse_line(line: str | bytes, query_column: int = 0, count_column: int = 1) -> tuple[str, int]:
  """(query, count) of one tab-separated log line; count 1 when its column is absent.

  Raises:
    BadLine: with the reason (SKIP_REASONS) the line cannot be used.
  """
  if isinstance(line, bytes):
    try:
      line = line.decode('utf-8')
    except UnicodeDecodeError:
      raise BadLine('bad_utf8') from None
  cols = line.rstrip('\r\n').split('\t')
  if query_column >= len(cols):
    raise BadLine('no_query_column')
  count = 1
  if 0 <= count_column < len(cols) and count_column != query_column:
    text = cols[count_column].strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
      raise BadLine('bad_count')
    count = int(text)
    if not 1 <= count <= MAX_COUNT:
      raise BadLine('bad_count')
  query = cols[query_column]
  if any(unicodedata.category(c) == 'Cc' for c in query):
    raise BadLine('control_characters')
  if len(query) > MAX_QUERY_CHARS:
    raise BadLine('too_long')
  return query, count


def check_bad_share(
  counters: Mapping[str, int],
  max_bad_fraction: float,
  what: str,
  good: tuple[str, ...] = ('lines', 'empty_queries'),
) -> None:
  """Raises ValueError when the skipped items (`skipped_*` counters) are more than
  `max_bad_fraction` of all items read (the `good` counters + skipped)."""
  skipped = {k: v for k, v in counters.items() if k.startswith('skipped_') and v}
  bad = sum(skipped.values())
  total = sum(counters.get(k, 0) for k in good) + bad
  if total and bad / total > max_bad_fraction:
    raise ValueError(
      f'{what}: {bad} of {total} unreadable ({bad / total:.1%} > max_bad_fraction '
      f'{max_bad_fraction:.1%}): {skipped}'
    )


def words_key(words: list[str]) -> str:
  """The table key of a word list: its sorted words joined by `KEY_SEPARATOR`."""
  return KEY_SEPARATOR.join(sorted(words))


def key_qid(key: str) -> int:
  """The qid of a key (the training qid of its words)."""
  return qid_lib.qid_of_words(key.split(KEY_SEPARATOR))


DOMAIN_WORDS_FILE = 'domain_words.txt'


def text_preprocessor(config: ml_collections.ConfigDict, vocab_path: str) -> TextPreprocessor:
  """The training tokenizer of `config.text` over the vocabulary file `vocab_path`.

  The segmenter gets the run's domain dictionary: `domain_words.txt` beside the vocabulary,
  one entry a line, as the trainer writes both into its workdir. A query's words, and so its
  key and qid, are then the ones training and serving give it.
  """
  path = os.path.join(os.path.dirname(vocab_path), DOMAIN_WORDS_FILE)
  domain_words: tuple[str, ...] = ()
  if os.path.isfile(path):
    with open(path, encoding='utf-8') as f:
      domain_words = tuple(line.rstrip('\n') for line in f if line.strip())
  return TextPreprocessor.from_config(config.text, vocab_path, domain_words)


class _KeyLines(beam.DoFn):
  """line -> (key, (surface, count)); unreadable and wordless lines are counted."""

  def __init__(self, config, vocab_path, query_column, count_column):
    self._config, self._vocab_path = config, vocab_path
    self._query_column, self._count_column = query_column, count_column

  def setup(self):
    self._text = text_preprocessor(self._config, self._vocab_path)

  def process(self, line: str | bytes) -> Iterator[tuple[str, tuple[str, int]]]:
    try:
      query, count = parse_line(line, self._query_column, self._count_column)
    except BadLine as e:
      Metrics.counter(NAMESPACE, f'skipped_{e.args[0]}').inc()
      return
    words = self._text.words(query)
    if not words:
      Metrics.counter(NAMESPACE, 'empty_queries').inc()
      return
    Metrics.counter(NAMESPACE, 'lines').inc()
    yield words_key(words), (query.strip(), count)


class SurfaceCombine(beam.CombineFn):
  """(surface, count)s of one key -> (total count, most frequent surface)."""

  def create_accumulator(self) -> dict[str, int]:
    return {}

  def add_input(self, acc: dict[str, int], element: tuple[str, int]) -> dict[str, int]:
    acc[element[0]] = acc.get(element[0], 0) + element[1]
    return acc

  def merge_accumulators(self, accs: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for acc in accs:
      for k, v in acc.items():
        out[k] = out.get(k, 0) + v
    return out

  def extract_output(self, acc: dict[str, int]) -> tuple[int, str]:
    surface = min(acc, key=lambda s: (-acc[s], s))
    return sum(acc.values()), surface


class _Encode(beam.DoFn):
  """(key, (count, surface)) -> a query element with token ids for the query tower."""

  def __init__(self, config, vocab_path):
    self._config, self._vocab_path = config, vocab_path

  def setup(self):
    self._text = text_preprocessor(self._config, self._vocab_path)

  def process(self, item: tuple[str, tuple[int, str]]) -> Iterator[dict[str, Any]]:
    key, (count, surface) = item
    query_len = self._config.text.query_len
    if self._text.sort_words and not self._text.keep_punctuation:
      # The key's words are what `encode` would encode.
      ids, mask = self._text.encode_words_batch([key.split(KEY_SEPARATOR)], query_len)
      ids, mask = ids[0], mask[0]
    else:
      ids, mask = self._text.encode(surface, query_len)
    Metrics.counter(NAMESPACE, 'distinct_queries').inc()
    yield {
      'key': key,
      'qid': key_qid(key),
      'surface': surface,
      'count': count,
      'query_ids': ids,
      'query_mask': mask,
    }


class DistinctQueries(beam.PTransform):
  """Log lines -> one element per distinct sorted-word sequence, ready for the query tower."""

  def __init__(
    self,
    config: ml_collections.ConfigDict,
    vocab_path: str,
    *,
    query_column: int = 0,
    count_column: int = 1,
  ):
    """`query_column` / `count_column`: tab-separated columns (count_column -1: none)."""
    super().__init__()
    self._args = (config, vocab_path)
    self._columns = (query_column, count_column)

  def expand(self, lines):
    return (
      lines
      | 'KeyLines' >> beam.ParDo(_KeyLines(*self._args, *self._columns))
      | 'MergeWordOrders' >> beam.CombinePerKey(SurfaceCombine())
      | 'Encode' >> beam.ParDo(_Encode(*self._args))
    )


def metric_totals(result: Any, namespace: str = NAMESPACE) -> dict[str, int]:
  """The committed counters of `namespace` from a finished pipeline result."""
  from apache_beam.metrics.metric import MetricsFilter

  totals: dict[str, int] = {}
  for c in result.metrics().query(MetricsFilter().with_namespace(namespace))['counters']:
    totals[c.key.metric.name] = totals.get(c.key.metric.name, 0) + c.committed
  return totals
