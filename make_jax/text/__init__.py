"""Text preprocessing (SPEC section 2): normalise, segment, sort, qid, WordPiece ids.

The functions `normalize.normalize` and `segment.segment` are not re-exported here: their
names are those of their modules, and re-exporting would shadow the modules.
"""

from make_jax.text.preprocess import TextPreprocessor
from make_jax.text.qid import EMPTY_QID, qid_of_words
from make_jax.text.vocab import build_vocab, load_vocab_file, save_vocab
from make_jax.text.wordpiece import SPECIAL_TOKENS, VocabError, WordPieceTokenizer

__all__ = [
  'EMPTY_QID',
  'SPECIAL_TOKENS',
  'TextPreprocessor',
  'VocabError',
  'WordPieceTokenizer',
  'build_vocab',
  'load_vocab_file',
  'qid_of_words',
  'save_vocab',
]
