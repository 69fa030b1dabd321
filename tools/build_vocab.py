r"""Learns a WordPiece vocab.txt from a corpus (SPEC section 2).

Run from the repository root:
  python -m tools.build_vocab --fashion_zip=../shared/data/fashion-product-images-small.zip \
      --vocab_size=8000 --output=/tmp/fashion_vocab.txt
  python -m tools.build_vocab --input=texts.txt --vocab_size=30522 --output=vocab.txt

`--input` is a UTF-8 file with one text per line; `--fashion_zip` reads the product titles
of the fashion catalogue. The vocab is written atomically; [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3
[MASK]=4 come first.
"""

from absl import app, flags

from make_jax.text import corpus as corpus_lib
from make_jax.text import vocab as vocab_lib

_INPUT = flags.DEFINE_string('input', None, 'Text file, one text per line.')
_FASHION_ZIP = flags.DEFINE_string('fashion_zip', None, 'fashion-product-images-small.zip.')
_OUTPUT = flags.DEFINE_string('output', None, 'Where to write vocab.txt.', required=True)
_VOCAB_SIZE = flags.DEFINE_integer('vocab_size', 30522, 'Largest vocabulary, specials included.')
_MIN_FREQUENCY = flags.DEFINE_integer('min_frequency', 2, 'Least count of a learned piece.')
_STRIP_ACCENTS = flags.DEFINE_bool('strip_accents', False, 'Strip accents inside words.')


def main(argv: list[str]) -> None:
  del argv
  if (_INPUT.value is None) == (_FASHION_ZIP.value is None):
    raise app.UsageError('give exactly one of --input and --fashion_zip')
  stats = corpus_lib.CorpusStats()
  if _INPUT.value is not None:
    texts = corpus_lib.read_lines(_INPUT.value, stats)
  else:
    texts = corpus_lib.fashion_titles(_FASHION_ZIP.value, stats)
  tokens = vocab_lib.build_vocab(
    texts,
    _VOCAB_SIZE.value,
    strip_accents=_STRIP_ACCENTS.value,
    min_frequency=_MIN_FREQUENCY.value,
  )
  vocab_lib.save_vocab(tokens, _OUTPUT.value)
  print(
    f'wrote {len(tokens)} tokens to {_OUTPUT.value} from {stats.texts} texts '
    f'({stats.rows} rows, {stats.repaired} repaired, {stats.skipped} skipped)'
  )


if __name__ == '__main__':
  app.run(main)
