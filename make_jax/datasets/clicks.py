"""Click-log mechanics shared by the dataset builders: popularity, splits and log p.

Both shipped datasets derive their (query, clicked product) pairs the same way, so the
sampling-probability rules of SPEC section 1 live here once and are tested once:

* Product popularity is Zipf-skewed: the product of popularity rank r (0-based) is
  clicked with probability proportional to 1 / (r + 1) ** exponent, so the head and the
  tail of the catalogue differ by orders of magnitude in `p(product)`.
* A pair goes to train / validation / test by a stable hash of its query's sorted word
  set, so an evaluation query never occurs in training (and `red dress` and `dress red`
  land in the same split).
* `log_p` of a product = log(count of the product as positive in the TRAIN pairs /
  number of train pairs). Validation, test and catalogue records carry the same value
  for their product (it is a property of the product, estimated on train). A product
  never clicked in train gets log(0.5 / number of train pairs): half a click, below every
  clicked product, finite so that the eq. 3 correction stays finite.

Evaluation splits are different: they are judged by distinct queries, not by clicks.
Validation and test hold, for every query whose key hashes there, one record per
product that satisfies it (the evaluator takes the union of a query's product ids as its
target set), so a query counts once however popular it is. A query satisfied by more
than `max_targets` products (a broad one, e.g. `tshirts`) is kept in train instead
(`evaluation_split`), so every evaluation target set is complete and none dominates a
split. A click whose query is an evaluation query is not a training pair.
"""

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

SPLITS = ('train', 'validation', 'test')


def zipf_probabilities(num_items: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
  """Returns click probabilities of `num_items` items, Zipf-skewed over a random rank order.

  Args:
    num_items: catalogue size (> 0).
    exponent: Zipf exponent s in p(rank r) ~ 1 / (r + 1)^s (> 0).
    rng: source of the random assignment of ranks to items.

  Returns:
    float64 [num_items] summing to 1; item i has the probability of its random rank.
  """
  if num_items <= 0:
    raise ValueError(f'num_items must be positive, got {num_items}')
  if exponent <= 0:
    raise ValueError(f'Zipf exponent must be positive, got {exponent}')
  by_rank = 1.0 / np.arange(1, num_items + 1, dtype=np.float64) ** exponent
  by_rank /= by_rank.sum()
  return by_rank[rng.permutation(num_items)]


def query_key(words: Sequence[str]) -> str:
  """The split key of a query: its words, lower-cased, deduplicated and sorted."""
  return ' '.join(sorted({w.lower() for w in words if w}))


def query_words(values: Iterable[str]) -> list[str] | None:
  """The lower-cased words of the attribute values a query names, in order; None when a
  word would repeat (`casual shoes casual`): such a query is never made."""
  words = [w for v in values for w in v.lower().split()]
  return words if len(set(words)) == len(words) else None


def split_of_query(
  words: Sequence[str], validation_share: float, test_share: float, salt: str = ''
) -> str:
  """Assigns a query to 'train', 'validation' or 'test' by a stable hash of its words.

  The hash is MD5 of the sorted word set (stable across processes and Python versions),
  mapped to [0, 1); the first `test_share` of that interval is test, the next
  `validation_share` validation, the rest train.
  """
  if validation_share < 0 or test_share < 0 or validation_share + test_share >= 1:
    raise ValueError(
      f'validation_share ({validation_share}) and test_share ({test_share}) must be '
      'non-negative and sum to less than 1'
    )
  digest = hashlib.md5((salt + '|' + query_key(words)).encode('utf-8')).digest()
  u = int.from_bytes(digest[:8], 'little') / 2.0**64
  if u < test_share:
    return 'test'
  if u < test_share + validation_share:
    return 'validation'
  return 'train'


def train_log_p(product_ids: np.ndarray, num_products: int) -> np.ndarray:
  """Per-product log p from the train pairs' product ids (see the module docstring).

  Args:
    product_ids: int [N] product index (0..num_products-1) of every train pair, N > 0.
    num_products: catalogue size.

  Returns:
    float32 [num_products]: log(count / N), or log(0.5 / N) for never-clicked products.
  """
  n = len(product_ids)
  if n == 0:
    raise ValueError('log p needs at least one train pair; the train split is empty')
  counts = np.bincount(product_ids, minlength=num_products).astype(np.float64)
  counts = np.where(counts > 0, counts, 0.5)
  return np.log(counts / n).astype(np.float32)


def evaluation_split(
  words: Sequence[str],
  num_targets: int,
  validation_share: float,
  test_share: float,
  max_targets: int,
  salt: str = '',
) -> str:
  """The split of a query satisfied by `num_targets` products: `split_of_query`, except
  that a broad query (more than `max_targets` products) always trains."""
  if max_targets < 1:
    raise ValueError(f'max_targets must be >= 1, got {max_targets}')
  if num_targets > max_targets:
    return 'train'
  return split_of_query(words, validation_share, test_share, salt)


def query_stats(queries: Sequence[str]) -> dict[str, float]:
  """Distinct queries (by `query_key`), records, and the largest query's records and share."""
  counts = Counter(query_key(q.split()) for q in queries)
  top = max(counts.values(), default=0)
  return {
    'queries': len(counts),
    'records': len(queries),
    'largest_query_records': top,
    'largest_query_share': top / len(queries) if queries else 0.0,
  }
