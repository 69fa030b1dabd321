r"""Shows what text preprocessing (SPEC section 2) makes of queries or titles.

Run from the repository root:
  python -m tools.preprocess_text \
      --vocab=/path/to/vocab.txt --max_len=16 --text='红色 连衣裙 T-shirt'
  python -m tools.preprocess_text --vocab=vocab.txt --input=queries.txt --tsv_column=1 \
      --domain_words=brands.txt > queries.jsonl

Writes one JSON object per line to stdout: `{"line", "text", "qid", "words", "ids"}`:
`line` is the input line number (from 1; null for `--text`), `text` the input line as
read, `words` the sorted words, `ids` the token ids without padding. `--input` is a UTF-8
file with one text per line, and EVERY input line gives exactly one output line, blank
lines included (no words, `EMPTY_QID`), so output line N describes input line N (lines
end at `\n` only). With `--tsv_column=N` the N-th tab-separated field (0-based) of each
`--input` line is preprocessed and also written as `field`; a line without that field gets an
`error` instead of `qid`/`words`/`ids`, and the count of such lines goes to stderr.
`--domain_words` is a file of domain dictionary entries (brands, categories, colours),
one per line, as the dataset builders record them: the same entries give the same qids.
"""

import itertools
import json
import sys
from collections.abc import Iterator

from absl import app, flags

from make_jax.text import corpus as corpus_lib
from make_jax.text import preprocess, qid

_VOCAB = flags.DEFINE_string('vocab', None, 'BERT-format vocab.txt.', required=True)
_MAX_LEN = flags.DEFINE_integer('max_len', 16, 'Token ids incl. [CLS]/[SEP].')
_TEXT = flags.DEFINE_multi_string('text', [], 'A text to preprocess (repeatable).')
_INPUT = flags.DEFINE_string('input', None, 'Text file, one text per line.')
_TSV_COLUMN = flags.DEFINE_integer('tsv_column', None, 'Take this tab-separated field (0-based).')
_DOMAIN_WORDS = flags.DEFINE_string('domain_words', None, 'File of domain words, one per line.')
_STRIP_ACCENTS = flags.DEFINE_bool('strip_accents', False, 'True for BERT uncased vocabs.')
_SORT_WORDS = flags.DEFINE_bool('sort_words', True, 'Sort words before tokenizing.')
_BATCH = 1024  # Lines encoded per call into the tokenizer.


def _records(texts: list[str], inputs: str | None) -> Iterator[dict]:
  """The `--text` values (line null), then every line of `--input`, as output records."""
  for text in texts:
    yield {'line': None, 'text': text}
  if inputs is not None:
    for number, text in corpus_lib.numbered_lines(inputs):
      yield {'line': number, 'text': text}


def _field(record: dict, column: int | None) -> str | None:
  """The text to preprocess: the text, or its line's tab-separated field (None if missing)."""
  if column is None or record['line'] is None:
    return record['text']
  fields = record['text'].split('\t')
  if column >= len(fields):
    record['error'] = f'no tab-separated field {column} ({len(fields)} fields)'
    return None
  record['field'] = fields[column]
  return fields[column]


def main(argv: list[str]) -> None:
  del argv
  if not _TEXT.value and _INPUT.value is None:
    raise app.UsageError('give --text or --input')
  if _TSV_COLUMN.value is not None and _TSV_COLUMN.value < 0:
    raise app.UsageError('--tsv_column must be >= 0')
  domain_words = ()
  if _DOMAIN_WORDS.value is not None:
    domain_words = [t for _, t in corpus_lib.numbered_lines(_DOMAIN_WORDS.value) if t.strip()]
  pre = preprocess.TextPreprocessor.from_vocab_file(
    _VOCAB.value,
    sort_words=_SORT_WORDS.value,
    strip_accents=_STRIP_ACCENTS.value,
    domain_words=domain_words,
  )
  out = sys.stdout
  errors = 0
  records = _records(list(_TEXT.value), _INPUT.value)
  while batch := list(itertools.islice(records, _BATCH)):
    texts = [_field(r, _TSV_COLUMN.value) for r in batch]
    words = [pre.words(t) if t is not None else [] for t in texts]
    ids, mask = pre.encode_words_batch(words, _MAX_LEN.value)
    for record, text, row_words, row, row_mask in zip(batch, texts, words, ids, mask, strict=True):
      if text is None:
        errors += 1
      else:
        record['qid'] = qid.qid_of_words(row_words)
        record['words'] = row_words
        record['ids'] = row[row_mask == 1].tolist()
      out.write(json.dumps(record, ensure_ascii=False) + '\n')
  if errors:
    print(f'{errors} lines lack field {_TSV_COLUMN.value}', file=sys.stderr)


if __name__ == '__main__':
  app.run(main)
