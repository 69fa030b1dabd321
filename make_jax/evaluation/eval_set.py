"""The test queries, their complete target sets and the catalogue, as the evaluation reads them.

Why a module of its own: the offline evaluation (`evaluation/evaluate.py`), the baselines
(`evaluation/baselines.py`) and the results driver all need the same view of a split, and
none of them needs a model, a vocabulary or images; `retrieval/evaluator.py` reads the
same records for in-training search but featurises them for a model.

What an `EvalSet` holds (built from a TFDS builder with `from_builder`, or from plain
record dicts with `from_records`, which the tests use):
- the catalogue (`retrieval.catalogue.Catalogue`): every product id once, rows sorted by
  id (the tie rule of `retrieval/topk.py` ranks equal scores by lower product id), its
  title and its attribute values;
- the queries of the split, grouped by query text (the fashion builder writes one word
  order per query key), in order of first appearance; a query's targets are the product
  ids of all its records that the catalogue holds (a query without any is kept and left
  out of Recall by the metrics, visibly: `recall_queries`);
- each query's constraints for P_rel (eq. 5) and its category intent for P_cate (eq. 6),
  from the query's generation as the dataset records it: every record carries the
  attribute intents (`intent_features` metadata: query feature -> product attribute)
  of the template that made the query from that record's product. Two templates can make
  the same query key from different products (the word sets of two attribute
  combinations can coincide; the fashion test split of today has no such query, but the
  builder does not rule it out); each distinct intent set is one *generation*, and the
  judge scores a retrieved product by the best generation it matches (`evaluate.py`),
  so a product that satisfies any way of making the query is fully relevant.
"""

import collections
import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from make_jax.input import reading
from make_jax.retrieval import catalogue as catalogue_lib

Generation = tuple[tuple[str, str], ...]  # ((product attribute, wanted value), ...), sorted.


def _text(value: Any) -> str:
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


@dataclasses.dataclass
class EvalSet:
  """A split's queries with complete target sets, against the whole catalogue.

  Attributes:
    catalogue: the products, rows in ascending product id; its attributes are the judged
      ones (and those the dataset lists for reports).
    queries: [Q] query texts, distinct.
    targets: [Q] int64 arrays of target product ids in the catalogue, ascending.
    generations: [Q] tuples of the query's distinct constraint sets (see module docstring).
    category_attribute: the product attribute of the category intent ('' when the dataset
      has none).
    counts: what was skipped or dropped while reading, by reason.
  """

  catalogue: catalogue_lib.Catalogue
  queries: list[str]
  targets: list[np.ndarray]
  generations: list[tuple[Generation, ...]]
  category_attribute: str = ''
  counts: dict[str, int] = dataclasses.field(default_factory=dict)

  @property
  def num_products(self) -> int:
    return len(self.catalogue)

  @property
  def num_queries(self) -> int:
    return len(self.queries)

  def query_categories(self) -> list[str]:
    """[Q] each query's category intent: the one value its generations name, else ''.

    A query whose generations disagree on the category (or where only some name one)
    has no single intent and is left out of P_cate.
    """
    out = []
    for gens in self.generations:
      values = {dict(g).get(self.category_attribute, '') for g in gens}
      out.append(values.pop() if len(values) == 1 else '')
    return out


def from_records(
  catalogue: Iterable[Mapping[str, Any]],
  query_records: Iterable[Mapping[str, Any]],
  intent_features: Mapping[str, str],
  *,
  attribute_features: Iterable[str] = (),
  category_feature: str = 'query_category',
) -> EvalSet:
  """Builds an EvalSet from catalogue records and the split's (query, product) records.

  Args:
    catalogue: records with 'product_id', 'title' and the product attributes.
    query_records: records with 'query', 'product_id' and the `intent_features` keys.
    intent_features: query feature -> the product attribute it constrains.
    attribute_features: further product attributes to keep (for reports).
    category_feature: the intent feature that is the category intent.

  Raises:
    ValueError: an empty catalogue or no query.
  """
  judged = sorted(set(intent_features.values()) | set(attribute_features))
  counts: collections.Counter = collections.Counter()
  rows: dict[int, tuple[str, list[str]]] = {}
  for record in catalogue:
    pid = int(record['product_id'])
    if pid in rows:
      counts['duplicate_product_id'] += 1
      continue
    rows[pid] = (_text(record['title']), [_text(record.get(a, '')) for a in judged])
  if not rows:
    raise ValueError('The catalogue is empty')
  ids = sorted(rows)
  catalogue = catalogue_lib.Catalogue(
    ids=np.asarray(ids, np.int64),
    titles=[rows[i][0] for i in ids],
    attributes={a: [rows[i][1][j] for i in ids] for j, a in enumerate(judged)},
  )

  groups: dict[str, tuple[set[int], dict[Generation, None]]] = {}
  for record in query_records:
    query = _text(record['query'])
    if not query.strip():
      counts['empty_query_records'] += 1
      continue
    targets, gens = groups.setdefault(query, (set(), {}))
    targets.add(int(record['product_id']))
    gen = tuple(
      sorted(
        (attr, v) for feat, attr in intent_features.items() if (v := _text(record.get(feat, '')))
      )
    )
    gens.setdefault(gen, None)  # Insertion-ordered set.
  if not groups:
    raise ValueError('No query in the split')
  catalogue_ids = set(rows)
  targets_out = []
  for targets, _ in groups.values():
    kept = sorted(targets & catalogue_ids)
    counts['targets_not_in_catalogue'] += len(targets) - len(kept)
    targets_out.append(np.asarray(kept, np.int64))
  counts['queries_without_target'] = sum(not len(t) for t in targets_out)
  return EvalSet(
    catalogue=catalogue,
    queries=list(groups),
    targets=targets_out,
    generations=[tuple(g for g in gens if g) for _, gens in groups.values()],
    category_attribute=intent_features.get(category_feature, ''),
    counts=dict(counts),
  )


def from_builder(builder: Any, split: str = 'test', catalogue_split: str = 'catalogue') -> EvalSet:
  """The EvalSet of a prepared TFDS builder's `split` (images are not decoded).

  Raises:
    ValueError: a split is missing or the dataset records no query intents.
  """
  for s in (catalogue_split, split):
    if s not in builder.info.splits:
      raise ValueError(f'Split {s!r} not in {list(builder.info.splits)}')
  meta = builder.info.metadata or {}
  intents = dict(meta.get('intent_features', {}))
  if not intents:
    raise ValueError(f'{builder.name} records no intent_features: P_rel has no constraints')
  return from_records(
    reading.records(reading.undecoded_source(builder, catalogue_split), chunk=2048),
    reading.records(reading.undecoded_source(builder, split), chunk=2048),
    intents,
    attribute_features=meta.get('attribute_features', ()),
  )


def load_split(
  config_name: str,
  split: str,
  data_dir: str = '',
  manual_dir: str = '',
  dataset: str = 'fashion_products',
) -> tuple[Any, EvalSet, list[str]]:
  """(builder, EvalSet, domain words) of a dataset's split, preparing it if not built yet.

  The results table and its figures load every split this way.
  """
  from make_jax.datasets import loading  # TFDS: only when a dataset is read.

  builder = loading.prepare(dataset, config_name, data_dir, manual_dir)
  domain_words = list((builder.info.metadata or {}).get('domain_words', ()))
  return builder, from_builder(builder, split), domain_words
