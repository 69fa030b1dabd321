"""Vocabulary files and learning (SPEC section 2): BERT `vocab.txt` in, learned vocab out.

Why: a vocabulary is either taken from a pretrained BERT checkpoint (its ids must be kept,
because the checkpoint's embedding rows follow them) or learned from the training corpus.
Both are the same file format: one token per line, UTF-8, the id of a token its line
number (0-based). A learned vocabulary starts with the specials [PAD]=0 [UNK]=1 [CLS]=2
[SEP]=3 [MASK]=4, then the character alphabet and the learned pieces in code-point order.
Learning is deterministic: the same corpus and arguments give the same file in any process.
"""

import heapq
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from itertools import pairwise

from tokenizers import Tokenizer, models

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


def _word_counts(corpus: Iterable[str | bytes], strip_accents: bool) -> Counter[str]:
  """How often each sub-word occurs: what encoding looks up, counted over the corpus.

  Each text is normalised and segmented (`normalize.py`, `segment.py`), then each word
  goes through the in-word pipeline of encoding (`wordpiece.configure_pipeline`: CJK
  characters and punctuation split off, accents stripped if asked), one word at a time as
  `WordPieceTokenizer` feeds it. Words repeat, so the pipeline runs once per distinct word.
  """
  words: Counter[str] = Counter()
  for text in corpus:
    words.update(segment_lib.segment(normalize_lib.normalize(text)))
  pipeline = wordpiece.configure_pipeline(
    Tokenizer(models.WordPiece(unk_token=wordpiece.UNK)), strip_accents=strip_accents
  )
  normalizer, pre_tokenizer = pipeline.normalizer, pipeline.pre_tokenizer
  sub_words: Counter[str] = Counter()
  for word, count in words.items():
    for sub_word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(word)):
      sub_words[sub_word] += count
  return sub_words


def _learn_pieces(word_counts: Mapping[str, int], vocab_size: int, min_frequency: int) -> set[str]:
  """The alphabet and the pieces learned by merging the most frequent adjacent pair.

  The merge learning of HuggingFace's `WordPieceTrainer` (a BPE trainer with the `##`
  prefix), made deterministic. Words start as characters, `##` on all but the first; the
  alphabet is every character, plain and, where it follows another, in its `##` form.
  Then, until the vocabulary (specials included) holds `vocab_size` tokens or no pair of
  adjacent symbols occurs `min_frequency` times (counted over the words, each weighted by
  its count), the most frequent pair becomes one symbol in every word (`ab` + `##c` ->
  `abc`; a symbol already known keeps its place).

  Ties between equally frequent pairs go, as in the trainer, to the pair of older symbols:
  symbols are ranked characters first, then `##` characters, then learned pieces in the
  order learned, and pairs compare by (rank of the first, rank of the second). The trainer
  numbered the `##` characters in hash-map order, which Rust seeds per process; here they
  are in code-point order (as the characters), and nothing depends on the iteration
  order of a hashed container, so a corpus gives one vocabulary in every process.
  """
  prefix = wordpiece.CONTINUATION_PREFIX
  words = sorted(word_counts)
  chars = sorted({ch for word in words for ch in word})
  following = sorted({ch for word in words for ch in word[1:]})
  names = chars + [prefix + ch for ch in following]  # A symbol's rank is its index.
  rank = {name: r for r, name in enumerate(names)}
  symbols = [[rank[w[0]]] + [rank[prefix + ch] for ch in w[1:]] for w in words]
  counts = [word_counts[w] for w in words]
  # Pair counts, the words each pair may be in (a superset: a merge that takes a pair out
  # of a word leaves the entry), and a min-heap of (-count, pair). For every pair the heap
  # holds an entry with at least its current count (a count that rises is pushed, one that
  # falls is re-pushed when its stale entry comes up), so the first entry popped whose
  # count is current is the most frequent pair, ties to the smallest ranks.
  pair_counts: defaultdict[tuple[int, int], int] = defaultdict(int)
  where: defaultdict[tuple[int, int], set[int]] = defaultdict(set)
  for i, word in enumerate(symbols):
    for pair in pairwise(word):
      pair_counts[pair] += counts[i]
      where[pair].add(i)
  heap = [(-count, pair) for pair, count in pair_counts.items()]
  heapq.heapify(heap)
  size = len(wordpiece.SPECIAL_TOKENS) + len(set(names) - set(wordpiece.SPECIAL_TOKENS))
  least = max(min_frequency, 1)
  while size < vocab_size and heap:
    negative_count, pair = heapq.heappop(heap)
    count = pair_counts[pair]
    if count != -negative_count:
      if count > 0:
        heapq.heappush(heap, (-count, pair))
      continue
    if count < least:
      break
    first, second = pair
    name = names[first] + names[second].removeprefix(prefix)
    if name not in rank:
      rank[name] = len(names)
      names.append(name)
      size += name not in wordpiece.SPECIAL_TOKENS
    merged = rank[name]
    changed: defaultdict[tuple[int, int], int] = defaultdict(int)
    for i in where.pop(pair):
      old = symbols[i]
      new: list[int] = []
      j, n = 0, len(old)
      while j < n:
        if j + 1 < n and old[j] == first and old[j + 1] == second:
          new.append(merged)
          j += 2
        else:
          new.append(old[j])
          j += 1
      if len(new) == n:
        continue  # An earlier merge took the pair out of this word.
      symbols[i] = new
      for p in pairwise(old):
        changed[p] -= counts[i]
      for p in pairwise(new):
        changed[p] += counts[i]
        where[p].add(i)
    for p, delta in changed.items():
      pair_counts[p] += delta
      if delta > 0:
        heapq.heappush(heap, (-pair_counts[p], p))
  return set(names)


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
  alphabet is kept, each character also in its `##` form where it follows another).
  Pieces are learned by merging the most frequent adjacent pair, as HuggingFace's
  `WordPieceTrainer` does, with ties broken in a fixed order (`_learn_pieces`): the same
  corpus and arguments give the same vocabulary in every process.

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
  learned = _learn_pieces(_word_counts(corpus, strip_accents), vocab_size, min_frequency)
  # Specials first (ids 0-4), then the rest in code-point order. The order of the others
  # does not change tokenization (greedy longest match only asks membership); a canonical
  # order makes two vocab files comparable with `diff`.
  specials = list(wordpiece.SPECIAL_TOKENS)
  tokens = specials + sorted(learned - set(specials))
  if len(tokens) <= len(wordpiece.SPECIAL_TOKENS):
    raise ValueError('the corpus has no words to learn a vocabulary from')
  if len(tokens) > vocab_size:
    raise ValueError(
      f'the corpus alphabet needs {len(tokens)} tokens (characters and their ## forms), '
      f'more than vocab_size={vocab_size}; raise vocab_size'
    )
  return tokens
