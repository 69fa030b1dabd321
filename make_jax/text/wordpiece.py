"""WordPiece ids for segmented words (SPEC section 2 step 3), on HuggingFace `tokenizers`.

Why a module of its own: the words (segmented, then sorted) are fixed upstream; this
module only maps each word to vocabulary pieces, the way BERT does, so that both a learned
vocabulary and a pretrained BERT `vocab.txt` (SPEC section 8) work.

How segmentation, sorting and BERT's rules interact:
- Sorting and the qid use whole words (jieba words, `t-shirt`). The words are fed to the
  Rust tokenizer pre-tokenized (`is_pretokenized=True`), so no piece ever spans two words
  and every id remembers its word (`word_index`).
- Inside a word, BERT's BasicTokenizer rules then apply: each CJK character becomes its own
  piece (`BertNormalizer(handle_chinese_chars=True)`: `连衣裙` -> `连`, `衣`, `裙`), and
  punctuation is split off (`BertPreTokenizer`: `t-shirt` -> `t`, `-`, `shirt`). This is
  what BERT vocabularies are built for (their CJK entries are single characters).
- Each resulting sub-word becomes greedy longest-match-first pieces with `##` marking a
  continuation; a sub-word longer than 100 characters, or one that cannot be pieced from
  the vocabulary, becomes one [UNK] (BERT's `max_input_chars_per_word`).
- Lower-casing and NFKC already happened (`normalize.py`); accents are kept unless
  `strip_accents=True` (use it with BERT *uncased* vocabularies such as
  all-MiniLM-L6-v2's, whose tokenizer strips accents: `café` -> `cafe`).

Because every piece carries its word index, pieces decode back to words exactly:
`decode_words(*tokenize_words(words)) == words` whenever no piece is [UNK] and no word
has an inner space. A multi-word domain word (`red chief`, see `domain.py`) is split at
its space into the pieces of its parts, all with its one word index; it decodes without
the space (`redchief`).
"""

from collections.abc import Sequence

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

# Special tokens: names, and their ids in a learned vocabulary (they come first). A BERT
# vocab.txt keeps its own ids (all-MiniLM-L6-v2: [PAD]=0 [UNK]=100 [CLS]=101 [SEP]=102
# [MASK]=103).
PAD, UNK, CLS, SEP, MASK = '[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)
CONTINUATION_PREFIX = '##'
MAX_INPUT_CHARS_PER_WORD = 100


class VocabError(ValueError):
  """A vocabulary (file or token list) that cannot be used; the message says why."""


def configure_pipeline(tokenizer: Tokenizer, *, strip_accents: bool) -> Tokenizer:
  """Sets the BERT-style in-word normaliser and pre-tokeniser (module docstring).

  Shared by encoding and by vocabulary learning (`vocab.py`), so that a learned
  vocabulary sees exactly the sub-words that encoding will look up.
  """
  tokenizer.normalizer = normalizers.BertNormalizer(
    clean_text=False,  # normalize.py already removed control characters.
    handle_chinese_chars=True,  # One piece per CJK character, as BERT.
    strip_accents=strip_accents,
    lowercase=False,  # normalize.py already lower-cased (and NFKC'd) the text.
  )
  tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  return tokenizer


def validate_vocab(tokens: Sequence[str], source: str = 'vocabulary') -> None:
  """Raises `VocabError` unless `tokens` is a usable WordPiece vocabulary.

  Usable: non-empty; every token a non-empty string without whitespace; no duplicates;
  all of `SPECIAL_TOKENS` present. `source` names the vocabulary in the message.
  """
  if not tokens:
    raise VocabError(f'{source} is empty')
  seen: dict[str, int] = {}
  for i, token in enumerate(tokens):
    if not isinstance(token, str) or not token:
      raise VocabError(f'{source}: entry {i} is empty or not a string: {token!r}')
    if any(ch.isspace() for ch in token):
      raise VocabError(f'{source}: entry {i} contains whitespace: {token!r}')
    if token in seen:
      raise VocabError(f'{source}: token {token!r} appears twice (entries {seen[token]} and {i})')
    seen[token] = i
  missing = [t for t in SPECIAL_TOKENS if t not in seen]
  if missing:
    raise VocabError(f'{source} lacks the special tokens {missing}')


class WordPieceTokenizer:
  """Maps lists of words to WordPiece ids, keeping each id's word index.

  Picklable (rebuilt from the token list), so input workers can receive it.
  """

  def __init__(self, tokens: Sequence[str], *, strip_accents: bool = False):
    """Builds the tokenizer.

    Args:
      tokens: the vocabulary; the id of a token is its position.
      strip_accents: strip accents inside words before lookup (True for BERT uncased).

    Raises:
      VocabError: if the vocabulary is unusable (see `validate_vocab`).
    """
    tokens = list(tokens)
    validate_vocab(tokens)
    self._tokens = tokens
    self._strip_accents = strip_accents
    self._token_to_id = {t: i for i, t in enumerate(tokens)}
    self._tokenizer = configure_pipeline(
      Tokenizer(
        models.WordPiece(
          self._token_to_id,
          unk_token=UNK,
          continuing_subword_prefix=CONTINUATION_PREFIX,
          max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD,
        )
      ),
      strip_accents=strip_accents,
    )

  def __getstate__(self) -> dict:
    return {'tokens': self._tokens, 'strip_accents': self._strip_accents}

  def __setstate__(self, state: dict) -> None:
    self.__init__(state['tokens'], strip_accents=state['strip_accents'])

  @property
  def tokens(self) -> list[str]:
    """The vocabulary, in id order (a copy)."""
    return list(self._tokens)

  @property
  def strip_accents(self) -> bool:
    return self._strip_accents

  @property
  def vocab_size(self) -> int:
    return len(self._tokens)

  def token_to_id(self, token: str) -> int:
    """The id of `token`; raises `KeyError` naming it if it is not in the vocabulary."""
    try:
      return self._token_to_id[token]
    except KeyError:
      raise KeyError(f'token {token!r} is not in the vocabulary') from None

  def id_to_token(self, token_id: int) -> str:
    """The token of `token_id`; raises `IndexError` for an id outside the vocabulary."""
    if not 0 <= token_id < len(self._tokens):
      raise IndexError(f'token id {token_id} outside [0, {len(self._tokens)})')
    return self._tokens[token_id]

  def tokenize_words(self, words: Sequence[str]) -> tuple[list[int], list[int]]:
    """Returns (ids, word_index): the pieces of `words`, each with its word's position."""
    if not words:
      return [], []
    enc = self._tokenizer.encode(list(words), is_pretokenized=True, add_special_tokens=False)
    return enc.ids, enc.word_ids

  def tokenize_words_batch(
    self, batch: Sequence[Sequence[str]]
  ) -> list[tuple[list[int], list[int]]]:
    """`tokenize_words` over many word lists at once (one call into Rust)."""
    out: list[tuple[list[int], list[int]]] = [([], [])] * len(batch)
    nonempty = [i for i, words in enumerate(batch) if words]
    if nonempty:
      encs = self._tokenizer.encode_batch(
        [list(batch[i]) for i in nonempty], is_pretokenized=True, add_special_tokens=False
      )
      for i, enc in zip(nonempty, encs, strict=True):
        out[i] = (enc.ids, enc.word_ids)
    return out

  def pieces(self, words: Sequence[str]) -> list[list[str]]:
    """The piece strings of each word (`[['t', '-', 'shirt'], ['红'], ...]`)."""
    ids, word_index = self.tokenize_words(words)
    out: list[list[str]] = [[] for _ in words]
    for token_id, w in zip(ids, word_index, strict=True):
      out[w].append(self._tokens[token_id])
    return out

  def decode_words(self, ids: Sequence[int], word_index: Sequence[int]) -> list[str]:
    """Rebuilds the words from pieces: a word is its pieces joined, `##` removed.

    Exact inverse of `tokenize_words` for words without [UNK] pieces or inner spaces
    (and, with `strip_accents`, without accents).
    """
    if len(ids) != len(word_index):
      raise ValueError(f'{len(ids)} ids but {len(word_index)} word indices')
    words: list[list[str]] = []
    last = None
    for token_id, w in zip(ids, word_index, strict=True):
      piece = self.id_to_token(int(token_id))
      if piece.startswith(CONTINUATION_PREFIX):
        piece = piece[len(CONTINUATION_PREFIX) :]
      if w != last:
        words.append([])
        last = w
      words[-1].append(piece)
    return [''.join(p) for p in words]
