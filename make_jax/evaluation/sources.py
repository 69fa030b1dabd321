"""Where the evaluated rankings come from: batch-search JSON lines, or embeddings searched here.

Why apart from the scoring (`evaluate.py`): reading files, matching query embeddings to
the split's queries by qid and the exact search are the tool's inputs; the scoring stays a
pure function of an `EvalSet` and ranked ids.

Formats:
- Ranked lists: JSON lines of the batch search CLI (`serving/batch.py`), one query a line:
  {"query": "...", "product_ids": [...], "scores": [...], ...}; `ranked_lines` writes the
  same for the baselines and the exact search.
- Embeddings: an export directory (`export/embed.py`: shards + manifest; ids are product
  ids, or qids for a query export), or one `.npz` with `ids` int64 [n] and `embedding`
  float32 [n, d] (the layout of an export shard). Query embeddings are matched to the
  split's queries by qid: the blake2b-32 of the query's sorted words, segmented with the
  run's domain dictionary (`TextPreprocessor.qid`; pass the run's `domain_words.txt`).
"""

import json
import os
import pathlib
from collections.abc import Iterable, Sequence

import numpy as np

from make_jax import atomic_file
from make_jax.evaluation.eval_set import EvalSet
from make_jax.retrieval import topk
from make_jax.text import normalize as normalize_lib
from make_jax.text import qid as qid_lib
from make_jax.text import segment as segment_lib


def read_ranked_lines(path: str | os.PathLike) -> tuple[dict[str, list[int]], dict[str, int]]:
  """{query: product ids, best first} from batch-search JSON lines, and counts.

  Blank lines are skipped; a line that is not a JSON object with a 'query' string and a
  'product_ids' list of integers is skipped and counted (`bad_lines`); a query seen again
  keeps its first list (`duplicate_queries`).
  """
  out: dict[str, list[int]] = {}
  counts = {'lines': 0, 'bad_lines': 0, 'duplicate_queries': 0}
  with open(path, 'rb') as f:
    for raw in f:
      if not raw.strip():
        continue
      counts['lines'] += 1
      try:
        record = json.loads(raw.decode('utf-8'))
        query, ids = record['query'], record['product_ids']
        if not isinstance(query, str) or not isinstance(ids, list):
          raise TypeError
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
          raise TypeError
      except (ValueError, KeyError, TypeError):  # UnicodeDecodeError is a ValueError.
        counts['bad_lines'] += 1
        continue
      if query in out:
        counts['duplicate_queries'] += 1
        continue
      out[query] = ids
  return out, counts


def ranked_lines(queries: Sequence[str], ids: np.ndarray, scores: np.ndarray) -> list[str]:
  """JSON lines in the batch search format of [Q, R] ids and scores (row q: queries[q])."""
  return [
    json.dumps(
      {
        'query': q,
        'product_ids': [int(i) for i in row_ids],
        'scores': [round(float(s), 6) for s in row_scores],
      },
      ensure_ascii=False,
    )
    for q, row_ids, row_scores in zip(queries, ids, scores, strict=True)
  ]


def write_ranked_lines(
  path: str | os.PathLike, queries: Sequence[str], ids: np.ndarray, scores: np.ndarray
) -> None:
  """Writes `ranked_lines` to `path` atomically."""
  atomic_file.write_text(path, ''.join(line + '\n' for line in ranked_lines(queries, ids, scores)))


def write_queries(path: str | os.PathLike, queries: Sequence[str]) -> None:
  """Writes the queries one a line (atomically): the input of the batch search CLI.

  Raises:
    ValueError: a query holds a line break (it would come back as two queries).
  """
  bad = [q for q in queries if '\n' in q or '\r' in q]
  if bad:
    raise ValueError(f'{len(bad)} queries hold line breaks (first: {bad[0]!r})')
  atomic_file.write_text(path, ''.join(q + '\n' for q in queries))


def rankings_of(queries: Sequence[str], ids: np.ndarray) -> dict[str, list[int]]:
  """{query: ids} of [Q, R] ranked ids (what `evaluate.evaluate_rankings` takes)."""
  return {q: [int(i) for i in row] for q, row in zip(queries, ids, strict=True)}


def load_embeddings(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
  """(ids int64 [n], embeddings float32 [n, d]) of an export directory or an `.npz`.

  Raises:
    ValueError: the file lacks `ids` / `embedding`, or their shapes disagree.
  """
  path = pathlib.Path(path)
  if path.is_dir():
    from make_jax.export import embed  # Beam and TF: only for an export directory.

    ids, emb, _, _ = embed.read_embeddings(path)
  else:
    with np.load(path) as z:
      if 'ids' not in z.files or 'embedding' not in z.files:
        raise ValueError(f'{path} has {z.files}; expected ids and embedding')
      ids, emb = z['ids'], z['embedding']
  ids, emb = np.asarray(ids, np.int64), np.asarray(emb, np.float32)
  if ids.ndim != 1 or emb.ndim != 2 or len(ids) != len(emb):
    raise ValueError(f'{path}: ids {ids.shape} and embedding {emb.shape} do not match')
  return ids, emb


def query_qids(queries: Sequence[str], domain_words: Iterable[str] = ()) -> np.ndarray:
  """int64 [Q] qids of the queries, as `TextPreprocessor(domain_words=...).qid` gives them."""
  segmenter = segment_lib.Segmenter(domain_words)
  return np.asarray(
    [qid_lib.qid_of_words(segmenter.segment(normalize_lib.normalize(q))) for q in queries],
    np.int64,
  )


def search_embeddings(
  eval_set: EvalSet,
  query_emb: np.ndarray,
  product_ids: np.ndarray,
  product_emb: np.ndarray,
  k: int,
  *,
  chunk: int = 256,
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
  """Exact top-k by inner product over the catalogue products that have an embedding.

  Args:
    eval_set: the split (its catalogue is searched).
    query_emb: [Q, d], in any order the caller keeps (`align_queries`).
    product_ids: [M] ids of the rows of `product_emb`.
    product_emb: [M, d].
    k: products per query (more than the catalogue gives all of it).
    chunk: queries scored at once (memory [chunk, M] float64).

  Returns:
    (ids int64 [Q, min(k, M')], scores float64 [Q, min(k, M')], counts): the M' products
    both embedded and in the catalogue are ranked (ties to the lower product id,
    `retrieval/topk.py`); the others are counted and left out.
  """
  query_emb, product_emb = np.asarray(query_emb), np.asarray(product_emb)
  product_ids = np.asarray(product_ids, np.int64)
  if query_emb.ndim != 2:
    raise ValueError(f'query embeddings have shape {query_emb.shape}, expected [Q, d]')
  if product_emb.ndim != 2 or product_emb.shape != (len(product_ids), query_emb.shape[1]):
    raise ValueError(
      f'product embeddings {product_emb.shape} vs ids {product_ids.shape} and '
      f'query embeddings {query_emb.shape}'
    )
  known = eval_set.catalogue.rows_of_ids(product_ids) >= 0
  counts = {
    'embedded_products_not_in_catalogue': int((~known).sum()),
    'catalogue_products_without_embedding': int(
      eval_set.num_products - len(np.unique(product_ids[known]))
    ),
  }
  product_ids, product_emb = product_ids[known], product_emb[known]
  if not len(product_ids):
    raise ValueError('No embedded product is in the catalogue')
  rows, scores = topk.exact_top_k(
    query_emb, product_emb, k, product_ids, dtype=np.float64, chunk=chunk
  )
  return product_ids[rows], scores, counts


def align_queries(
  eval_set: EvalSet,
  qids: np.ndarray,
  emb: np.ndarray,
  domain_words: Iterable[str] = (),
  *,
  allow_missing: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
  """(rows of the split's queries that have an embedding [Q'] , their embeddings [Q', d]).

  Raises:
    ValueError: a query has no embedding (unless `allow_missing`).
  """
  by_qid = {int(q): i for i, q in enumerate(np.asarray(qids).tolist())}
  wanted = query_qids(eval_set.queries, domain_words)
  found = np.asarray([int(q) in by_qid for q in wanted])
  if not found.all() and not allow_missing:
    first = eval_set.queries[int(np.argmin(found))]
    raise ValueError(
      f'{int((~found).sum())} of {eval_set.num_queries} queries have no embedding (first: '
      f"{first!r}); are the domain words the run's? allow_missing scores them as empty lists"
    )
  rows = np.flatnonzero(found)
  return rows, np.asarray(emb)[[by_qid[int(wanted[r])] for r in rows]]


def rankings_from_files(
  eval_set: EvalSet,
  *,
  ranked: str | os.PathLike = '',
  query_embeddings: str | os.PathLike = '',
  product_embeddings: str | os.PathLike = '',
  domain_words: Iterable[str] = (),
  k: int = 1000,
  allow_missing: bool = False,
) -> tuple[dict[str, list[int]], dict[str, int]]:
  """The rankings to evaluate: batch-search JSON lines, or exact search over embeddings.

  Exactly one source: `ranked`, or both `query_embeddings` and `product_embeddings` (then
  the top `k` of every query; `domain_words` make the queries' qids).

  Returns:
    ({query: ids}, counts of what was skipped while reading).
  """
  if bool(ranked) == bool(query_embeddings or product_embeddings):
    raise ValueError('Give either ranked lists or query and product embeddings (one source)')
  if ranked:
    return read_ranked_lines(ranked)
  if not (query_embeddings and product_embeddings):
    raise ValueError('Exact search needs both query and product embeddings')
  qids, q_emb = load_embeddings(query_embeddings)
  rows, q_emb = align_queries(eval_set, qids, q_emb, domain_words, allow_missing=allow_missing)
  p_ids, p_emb = load_embeddings(product_embeddings)
  ids, _, counts = search_embeddings(eval_set, q_emb, p_ids, p_emb, k)
  return rankings_of([eval_set.queries[r] for r in rows], ids), counts
