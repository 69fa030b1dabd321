r"""Shows what text preprocessing (SPEC section 2) makes of queries or titles.

Run from the repository root:
  python -m tools.preprocess_text \
      --vocab=/path/to/vocab.txt --max_len=16 --text='红色 连衣裙 T-shirt'
  python -m tools.preprocess_text --vocab=vocab.txt --input=queries.txt

Prints one line per text: `qid<TAB>sorted words (space-separated)<TAB>ids` (ids without
padding). `--input` is a UTF-8 file with one text per line; with `--tsv_column=N` the
N-th tab-separated field of each line is the text (e.g. 1 for `qid<TAB>query` files).
"""

import sys

from absl import app, flags

from make_jax.text import corpus as corpus_lib
from make_jax.text import preprocess

_VOCAB = flags.DEFINE_string('vocab', None, 'BERT-format vocab.txt.', required=True)
_MAX_LEN = flags.DEFINE_integer('max_len', 16, 'Token ids incl. [CLS]/[SEP].')
_TEXT = flags.DEFINE_multi_string('text', [], 'A text to preprocess (repeatable).')
_INPUT = flags.DEFINE_string('input', None, 'Text file, one text per line.')
_TSV_COLUMN = flags.DEFINE_integer('tsv_column', None, 'Take this tab-separated field.')
_STRIP_ACCENTS = flags.DEFINE_bool('strip_accents', False, 'True for BERT uncased vocabs.')
_SORT_WORDS = flags.DEFINE_bool('sort_words', True, 'Sort words before tokenizing.')


def main(argv: list[str]) -> None:
  del argv
  if not _TEXT.value and _INPUT.value is None:
    raise app.UsageError('give --text or --input')
  pre = preprocess.TextPreprocessor.from_vocab_file(
    _VOCAB.value, sort_words=_SORT_WORDS.value, strip_accents=_STRIP_ACCENTS.value
  )
  texts = list(_TEXT.value)
  if _INPUT.value is not None:
    texts.extend(corpus_lib.read_lines(_INPUT.value))
  if _TSV_COLUMN.value is not None:
    texts = [
      t.split('\t')[_TSV_COLUMN.value] if t.count('\t') >= _TSV_COLUMN.value else '' for t in texts
    ]
  ids, mask = pre.encode_batch(texts, _MAX_LEN.value)
  out = sys.stdout
  for text, row, row_mask in zip(texts, ids, mask, strict=True):
    id_str = ' '.join(str(i) for i in row[row_mask == 1])
    out.write(f'{pre.qid(text)}\t{" ".join(pre.words(text))}\t{id_str}\n')


if __name__ == '__main__':
  app.run(main)
