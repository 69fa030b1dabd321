"""Vocabulary learning (`build_vocab`): deterministic, the trainer's merges, no [UNK].

HuggingFace's `WordPieceTrainer` broke ties between equally frequent merges in hash-map
order, which Rust seeds anew for every map, so two learnings on the same corpus (even in
one process) gave different vocab files and two identical tiny runs different losses from
step 2 on. `build_vocab` learns the same merges with a fixed tie order. Here: two processes
(other Rust and Python hash seeds) learn one vocabulary; the incremental learner equals a
from-scratch reference and, where the trainer itself is unambiguous, the trainer; every
corpus word is pieced; two tiny runs that each learn their vocabulary log equal losses.
"""

import collections
import itertools
import json
import os
import random
import subprocess
import sys
import unicodedata

import pytest
from conftest import SHARED_DATA
from tokenizers import Tokenizer, models, trainers

from make_jax.text import WordPieceTokenizer, build_vocab, wordpiece
from make_jax.text import corpus as corpus_lib
from make_jax.text import normalize as normalize_lib
from make_jax.text import segment as segment_lib
from make_jax.train import loop
from tests import trainer_testlib

SPECIALS = list(wordpiece.SPECIAL_TOKENS)
FASHION_ZIP = os.path.join(SHARED_DATA, 'fashion-product-images-small.zip')

# The tiny runs' corpus (synthetic en_small: 1k products, 5k train clicks), titles and
# queries as `train.inputs.corpus` reads them.
_LEARN_TINY = """
import json
from make_jax.datasets import synthetic
from make_jax.text import build_vocab
cat = synthetic.generate(synthetic.SyntheticSpec(language='en', num_products=1000, num_pairs=5000))
train = cat.pairs['train']
corpus = [t for q, p in zip(train['query'], train['product_id']) for t in (cat.titles[p], q)]
print(json.dumps(build_vocab(corpus, 2048)))
"""

_MIXED = [
  'Nike Men Red Running Shoes',
  'Café Crème T-Shirt, Naïve Print',
  '红色 连衣裙 夏季 新款',
  'iPhone15 手机壳 128GB',
  'Résumé Ångström resume',
  'red dress red shoes blue shirt cotton women men',
] * 3


def _learn_in_subprocess(hash_seed: str) -> list[str]:
  root = trainer_testlib.ROOT
  env = dict(os.environ, PYTHONHASHSEED=hash_seed, PYTHONPATH=str(root))
  out = subprocess.run(
    [sys.executable, '-c', _LEARN_TINY], cwd=root, env=env, capture_output=True, text=True
  )
  assert out.returncode == 0, out.stderr[-2000:]
  return json.loads(out.stdout)


def test_two_processes_learn_the_same_vocabulary():
  # With the trainer, 8 processes learned 8 different vocabularies from this corpus.
  first, second = _learn_in_subprocess('1'), _learn_in_subprocess('2')
  assert len(first) > 200
  assert first == second


def test_the_order_of_the_corpus_does_not_matter():
  assert build_vocab(_MIXED, 200) == build_vocab(list(reversed(_MIXED)), 200)


def _reference(word_counts: dict[str, int], vocab_size: int, min_frequency: int) -> list[str]:
  """The merge rule recomputed from scratch at every step (slow, obviously right)."""
  chars = sorted({c for w in word_counts for c in w})
  names = chars + ['##' + c for c in sorted({c for w in word_counts for c in w[1:]})]
  words = {w: [w[0]] + ['##' + c for c in w[1:]] for w in word_counts}
  while len(SPECIALS) + len(names) < vocab_size:
    counts = collections.Counter()
    for w, symbols in words.items():
      for pair in itertools.pairwise(symbols):
        counts[pair] += word_counts[w]
    if not counts:
      break
    a, b = min(counts, key=lambda p: (-counts[p], names.index(p[0]), names.index(p[1])))
    if counts[a, b] < max(min_frequency, 1):
      break
    if a + b[2:] not in names:
      names.append(a + b[2:])
    for w, symbols in words.items():
      merged, i = [], 0
      while i < len(symbols):
        if symbols[i : i + 2] == [a, b]:
          merged.append(a + b[2:])
          i += 2
        else:
          merged.append(symbols[i])
          i += 1
      words[w] = merged
  return SPECIALS + sorted(names)


@pytest.mark.parametrize('seed,vocab_size,min_frequency', [(0, 200, 2), (1, 120, 1), (2, 400, 3)])
def test_incremental_learning_equals_the_reference(seed, vocab_size, min_frequency):
  # Words over 4 letters: many ties, and pieces reached by two merge paths ('a'+'##bc' and
  # 'ab'+'##c'), which must keep their first place in the order.
  rng = random.Random(seed)
  word_counts = collections.Counter()
  for _ in range(300):
    word = ''.join(rng.choice('abcd') for _ in range(rng.randint(1, 8)))
    word_counts[word] += rng.choice([1, 1, 2, 3, 5, 8])
  corpus = [w for w, n in word_counts.items() for _ in range(n)]
  got = build_vocab(corpus, vocab_size, min_frequency=min_frequency)
  assert got == _reference(word_counts, vocab_size, min_frequency)


def _trainer_vocab(texts: list[str], vocab_size: int) -> list[str]:
  """What `build_vocab` returned when it ran HuggingFace's `WordPieceTrainer`."""
  tokenizer = wordpiece.configure_pipeline(
    Tokenizer(models.WordPiece(unk_token=wordpiece.UNK)), strip_accents=False
  )
  trainer = trainers.WordPieceTrainer(
    vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIALS, show_progress=False
  )
  segmented = (' '.join(segment_lib.segment(normalize_lib.normalize(t))) for t in texts)
  tokenizer.train_from_iterator(segmented, trainer=trainer)
  return SPECIALS + sorted(set(tokenizer.get_vocab()) - set(SPECIALS))


def test_the_trainers_vocabulary_where_its_ties_do_not_matter():
  # On the fashion titles the trainer's first ~1000 tokens came out the same in every
  # process (10 of 10); beyond, its hash-map order starts to decide ties. Where it is one
  # vocabulary, `build_vocab` learns exactly that one.
  titles = list(corpus_lib.fashion_titles(FASHION_ZIP))
  trainer = {tuple(_trainer_vocab(titles, 1000)) for _ in range(3)}
  assert tuple(build_vocab(titles, 1000)) in trainer


@pytest.mark.parametrize('strip_accents', [False, True])
def test_every_corpus_word_is_pieced_without_unk(strip_accents):
  tokens = build_vocab(_MIXED, 300, strip_accents=strip_accents)
  assert tokens[:5] == SPECIALS and tokens[5:] == sorted(tokens[5:])
  tok = WordPieceTokenizer(tokens, strip_accents=strip_accents)
  for text in _MIXED:
    words = segment_lib.segment(normalize_lib.normalize(text))
    ids, word_index = tok.tokenize_words(words)
    assert tok.token_to_id(wordpiece.UNK) not in ids, text
    if not strip_accents:
      assert tok.decode_words(ids, word_index) == words
  # Learned on what encoding looks up: a CJK character and punctuation are pieces of their
  # own, and stripped accents never reach the vocabulary.
  assert '连' in tokens and '连衣' not in tokens and '##衣' not in tokens
  assert '-' in tokens and not any('-' in t for t in tokens if t != '-')
  nfd = (unicodedata.normalize('NFD', t) for t in tokens)
  assert any(unicodedata.combining(c) for t in nfd for c in t) != strip_accents


def test_ties_go_to_the_pair_of_older_symbols_and_min_frequency_holds():
  # 5 specials + the alphabet a b c d ##b ##d leave room for one merge. Both pairs occur
  # twice: the tie goes to the pair whose first symbol ranks first ('a' < 'c').
  alphabet = ['##b', '##d', 'a', 'b', 'c', 'd']
  for corpus in (['ab cd'] * 2, ['cd ab'] * 2):
    assert build_vocab(corpus, 12) == SPECIALS + sorted(alphabet + ['ab'])
  # With room for two merges both are learned, unless min_frequency=3 stops at 'cd' (2).
  corpus = ['ab cd'] * 2 + ['ab']
  assert build_vocab(corpus, 13) == SPECIALS + sorted(alphabet + ['ab', 'cd'])
  assert build_vocab(corpus, 13, min_frequency=3) == SPECIALS + sorted(alphabet + ['ab'])
  # A pair seen once is not learned at the default min_frequency=2.
  assert build_vocab(['xyz'], 100) == SPECIALS + ['##y', '##z', 'x', 'y', 'z']


@pytest.mark.slow
def test_two_identical_tiny_runs_log_identical_losses(tmp_path_factory, tmp_path):
  """Each run learns its own vocabulary into its workdir; the logged losses are bit-equal."""
  data_dir, _ = trainer_testlib.prepare(tmp_path_factory)
  vocabs, histories = [], []
  for name in ('a', 'b'):
    config = trainer_testlib.tiny_config(data_dir)  # vocab_path='': learned in the workdir.
    loop.train_and_evaluate(config, tmp_path / name, stop_at=2)
    vocabs.append((tmp_path / name / 'vocab.txt').read_text())
    lines = (tmp_path / name / 'metrics.jsonl').read_text().splitlines()
    histories.append([json.loads(line) for line in lines])
  assert vocabs[0] == vocabs[1]
  assert [h['step'] for h in histories[0]] == [1, 2]
  for a, b in zip(*histories, strict=True):
    assert {k: a[k] for k in trainer_testlib.TERMS} == {k: b[k] for k in trainer_testlib.TERMS}
