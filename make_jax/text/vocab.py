"""Vocabulary files and learning (SPEC section 2): BERT `vocab.txt` in, learned vocab out.

Why: a vocabulary is either taken from a pretrained BERT checkpoint (its ids must be kept,
because the checkpoint's embedding rows follow them) or learned from the training corpus.
Both are the same file format: one token per line, UTF-8, the id of a token its line
number (0-based). A learned vocabulary starts with the specials [PAD]=0 [UNK]=1 [CLS]=2
[SEP]=3 [MASK]=4, then the character alphabet, then learned pieces.
"""

import os
from collections.abc import Iterable, Iterator, Sequence

from tokenizers import Tokenizer, models, trainers

from make_jax import atomic_file
from make_jax.text import normalize as normalize_lib
from make_jax.text import segment as segment_lib
from make_jax.text import wordpiece


def load_vocab_file(path: str | os.PathLike) -> list[str]:
  """Reads a BERT-format vocab.txt and returns its tokens in id order.

  Raises:
    VocabError (a ValueError): missing or unreadable file, not UTF-8, empty, an empty line
      before the end, a token with whitespace, a duplicate token, or a missing special token.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise wordpiece.VocabError(f'vocab file not found: {path}')
  try:
    with open(path, encoding='utf-8', newline='') as f:
      text = f.read()
  except UnicodeDecodeError as e:
    raise wordpiece.VocabError(f'vocab file {path} is not UTF-8 text: {e}') from None
  except OSError as e:
    raise wordpiece.VocabError(f'vocab file {path} cannot be read: {e}') from None
  lines = text.split('\n')
  if lines and lines[-1] == '':
    lines.pop()  # The newline that ends the last line.
  tokens = [line[:-1] if line.endswith('\r') else line for line in lines]
  wordpiece.validate_vocab(tokens, source=f'vocab file {path}')
  return tokens


def save_vocab(tokens: Sequence[str], path: str | os.PathLike) -> None:
  """Writes `tokens` as vocab.txt (one per line) atomically: temp file, then rename.

  Raises:
    VocabError: if `tokens` is not a usable vocabulary (checked before anything is written).
  """
  tokens = list(tokens)
  wordpiece.validate_vocab(tokens)
  atomic_file.write_text(path, ''.join(t + '\n' for t in tokens))


def _segmented(corpus: Iterable[str | bytes]) -> Iterator[str]:
  """Yields each text's words joined by spaces (words never contain whitespace)."""
  for text in corpus:
    words = segment_lib.segment(normalize_lib.normalize(text))
    if words:
      yield ' '.join(words)


def build_vocab(
  corpus: Iterable[str | bytes],
  vocab_size: int,
  *,
  strip_accents: bool = False,
  min_frequency: int = 2,
) -> list[str]:
  """Learns a WordPiece vocabulary from raw texts (one query or title each).

  The texts go through the same normalisation, segmentation and in-word BERT rules as
  encoding, so every word of the corpus can be pieced without [UNK] (the whole character
  alphabet is kept). Trained with HuggingFace `WordPieceTrainer`.

  Not bit-reproducible: the trainer breaks ties between equally frequent merges in hash
  map order, which Rust seeds per process, so two runs on the same corpus can differ in
  a few percent of the learned pieces. Learn a vocabulary once, save it (`save_vocab`)
  and point `config.text.vocab_path` at the file; never re-learn on resume.

  Args:
    corpus: raw texts; normalised and segmented here.
    vocab_size: the largest vocabulary wanted, specials included.
    strip_accents: as `WordPieceTokenizer(strip_accents=...)`; use the same value there.
    min_frequency: a piece is learned only if it occurs this often.

  Returns:
    Tokens in id order: [PAD], [UNK], [CLS], [SEP], [MASK], then the rest.

  Raises:
    ValueError: if `vocab_size` is too small for the specials, if the corpus has no
      words, or if the corpus alphabet alone exceeds `vocab_size`.
  """
  if vocab_size < len(wordpiece.SPECIAL_TOKENS) + 1:
    raise ValueError(f'vocab_size={vocab_size} leaves no room beyond the 5 special tokens')
  tokenizer = wordpiece.configure_pipeline(
    Tokenizer(
      models.WordPiece(
        unk_token=wordpiece.UNK,
        continuing_subword_prefix=wordpiece.CONTINUATION_PREFIX,
        max_input_chars_per_word=wordpiece.MAX_INPUT_CHARS_PER_WORD,
      )
    ),
    strip_accents=strip_accents,
  )
  trainer = trainers.WordPieceTrainer(
    vocab_size=vocab_size,
    min_frequency=min_frequency,
    special_tokens=list(wordpiece.SPECIAL_TOKENS),
    continuing_subword_prefix=wordpiece.CONTINUATION_PREFIX,
    show_progress=False,
  )
  tokenizer.train_from_iterator(_segmented(corpus), trainer=trainer)
  learned = tokenizer.get_vocab()
  # Specials first (ids 0-4), then the rest in code-point order. The order of the others
  # does not change tokenization (greedy longest match only asks membership); a canonical
  # order makes two vocab files comparable with `diff`.
  specials = list(wordpiece.SPECIAL_TOKENS)
  tokens = specials + sorted(t for t in learned if t not in wordpiece.SPECIAL_TOKENS)
  if len(tokens) <= len(wordpiece.SPECIAL_TOKENS):
    raise ValueError('the corpus has no words to learn a vocabulary from')
  if len(tokens) > vocab_size:
    raise ValueError(
      f'the corpus alphabet needs {len(tokens)} tokens (characters and their ## forms), '
      f'more than vocab_size={vocab_size}; raise vocab_size'
    )
  return tokens
