"""Retrieval evaluation during training: exact search over the whole catalogue (SPEC 9).

Why exact search here: a ScaNN index must not stand between the trainer and its signal;
brute force over the evaluation catalogue (tens of thousands of products) is cheap on
one device and has no recall loss of its own, so Recall@K moves only with the model.

Interface:

  evaluator = RetrievalEvaluator(config, preprocessor, builder, 'validation', max_queries=1000,
                                 ks=(10, 100))   # once: reads and featurises the data
  metrics = evaluator(model, params)           # at each evaluation: a dict of floats

What it evaluates:
- Products: every record of the builder's `catalogue` split, featurised with the training
  featuriser (`input/featurize.make_featurizer(require_query=False)`); records the
  featuriser rejects are skipped and counted (`skipped_products`). Rows are sorted by
  product id, so that `lax.top_k` (the lower index first among equal scores) follows the
  tie rule of `retrieval/topk.py`: equal scores go to the lower product id.
- Queries: the distinct queries of `split`, grouped by qid (`TextPreprocessor.qid`); a
  query's targets are the product ids of all its records in that split that the
  catalogue holds. With `max_queries`, the queries with the smallest qids are kept (the
  qid is a hash: a fixed, unbiased sample). A query's attribute intents (the dataset's
  `intent_features` metadata) are the judge's constraints for P_rel, its category intent
  that of P_cate.
- Returned: `recall@K`, `p_rel@K`, `p_cate@K` for each K (K beyond the catalogue means all
  of it), `<metric>_queries` (how many queries each averaged over; see metrics.py for
  who is left out), `num_queries`, `num_products`, `skipped_products`.

Cost and memory: encoding runs in jitted batches of `batch_size` (the last one padded),
so one compilation per model serves every later call (`traces` counts them). The
catalogue embeddings ([N, d] float32) stay on one device; the search scans them in
chunks keeping a running top-K, so its memory is [batch_size, chunk + K]. Decoded images
are kept in host memory when they fit `image_cache_bytes`, else decoded again per batch
from the stored bytes. `params` may be replicated or sharded jax arrays (also across
hosts: every process must then call the evaluator, since gathering them is collective);
they are copied to this process's first device. Pass unstacked params (not pmap's
per-device copies).
"""

import collections
import dataclasses
import math
from collections.abc import Hashable, MutableMapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from make_jax.input import reading
from make_jax.input.featurize import SkipRecord, decode_image, make_featurizer
from make_jax.retrieval import catalogue as catalogue_lib
from make_jax.retrieval import metrics as metrics_lib
from make_jax.retrieval import topk
from make_jax.retrieval import tower as tower_lib


@dataclasses.dataclass(frozen=True)
class FeaturisedCatalogue:
  """The catalogue as the evaluator searches it: rows sorted by product id, featurised by
  the training featuriser. Evaluators of several runs may share one (`catalogue_cache`)."""

  catalogue: catalogue_lib.Catalogue  # Ids (sorted), titles and the judged attributes.
  features: dict[str, np.ndarray]  # title_ids, title_mask, image_missing: [N, ...].
  images: np.ndarray | list[bytes]  # Decoded uint8 [N, s, s, 3], or the encoded bytes.
  image_size: int
  skipped: collections.Counter  # Records left out, by reason.

  @property
  def num_products(self) -> int:
    return len(self.catalogue)

  def batch(self, start: int, stop: int) -> dict[str, np.ndarray]:
    """The product tower's inputs of rows [start, stop) (images decoded if stored encoded)."""
    batch = {k: v[start:stop] for k, v in self.features.items()}
    if isinstance(self.images, np.ndarray):
      batch['image'] = self.images[start:stop]
    else:
      s = self.image_size
      batch['image'] = np.stack(
        [
          np.zeros((s, s, 3), np.uint8) if missing else decode_image(data, s)
          for data, missing in zip(self.images[start:stop], batch['image_missing'], strict=True)
        ]
      )
    return batch


def featurise_catalogue(
  config: ml_collections.ConfigDict,
  preprocessor: Any,
  source: Any,
  attribute_features: Sequence[str],
  judged: Sequence[str],
  cache_bytes: int,
) -> FeaturisedCatalogue:
  """Reads and featurises every product of `source` once (see the module docstring)."""
  size = config.data.image_size
  featurize = make_featurizer(
    preprocessor,
    image_size=size,
    query_len=config.text.query_len,
    title_len=config.text.title_len,
    attribute_features=attribute_features,
    require_query=False,
  )
  skipped: collections.Counter = collections.Counter()
  cache = len(source) * size * size * 3 <= cache_bytes
  rows: dict[str, list] = collections.defaultdict(list)
  seen = set()
  for record in reading.records(source):
    pid = int(record['product_id'])
    if pid in seen:
      skipped['duplicate_product_id'] += 1
      continue
    try:
      ex = featurize(record)
    except SkipRecord as e:
      skipped[e.args[0]] += 1
      continue
    seen.add(pid)
    for k in ('title_ids', 'title_mask', 'image_missing', 'product_id'):
      rows[k].append(ex[k])
    rows['title'].append(_text(record['title']))
    rows['image'].append(ex['image'] if cache else record['image'])
    for name in judged:
      rows[f'attr:{name}'].append(_text(record[name]))
  if not seen:
    raise ValueError(f'No usable product in the catalogue (skipped: {dict(skipped)})')
  order = np.argsort(np.asarray(rows['product_id']), kind='stable')
  catalogue = catalogue_lib.Catalogue(
    ids=rows['product_id'],
    titles=rows['title'],
    attributes={name: rows[f'attr:{name}'] for name in judged},
  )
  return FeaturisedCatalogue(
    catalogue=catalogue.take(order),
    features={k: np.stack(rows[k])[order] for k in ('title_ids', 'title_mask', 'image_missing')},
    images=np.stack(rows['image'])[order] if cache else [rows['image'][i] for i in order],
    image_size=size,
    skipped=skipped,
  )


def _text(value: Any) -> str:
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def to_one_device(params: Any, device: jax.Device) -> Any:
  """`params` as arrays on `device` (gathering arrays sharded over other hosts first)."""

  def one(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      x = multihost_utils.process_allgather(x, tiled=True)
    return jax.device_put(x, device)

  return jax.tree.map(one, params)


class RetrievalEvaluator:
  """Recall@K, P_rel@K and P_cate@K of a model over a split's queries and the catalogue."""

  def __init__(
    self,
    config: ml_collections.ConfigDict,
    preprocessor: Any,
    builder: Any,
    split: str = 'validation',
    *,
    max_queries: int | None = None,
    ks: Sequence[int] = metrics_lib.DEFAULT_KS,
    batch_size: int = 256,
    search_chunk: int = 4096,
    catalogue_split: str = 'catalogue',
    image_cache_bytes: int = 1 << 30,
    bootstrap_samples: int = 0,
    catalogue_cache: MutableMapping[Hashable, dict[str, Any]] | None = None,
    catalogue_key: Hashable = None,
  ):
    """Reads and featurises the catalogue and the split's queries.

    Args:
      config: the full config (data.image_size, text.query_len, text.title_len).
      preprocessor: the `TextPreprocessor` the model was trained with.
      builder: a prepared TFDS builder with a `catalogue_split` and `split`.
      split: the split whose queries are evaluated.
      max_queries: at most this many distinct queries (None: all).
      ks: the cut-offs K.
      batch_size: products / queries per jitted batch.
      search_chunk: catalogue rows scored at once by the search (rounded to a batch).
      catalogue_split: the split that lists every product once.
      image_cache_bytes: keep decoded images in memory up to this size.
      bootstrap_samples: > 0 adds 95% bootstrap intervals (`recall@10_lo`, `_hi`).
      catalogue_cache, catalogue_key: evaluators of several runs share the featurised
        catalogue (reading and featurising 44k products takes minutes) through this
        mapping. The caller's key must name everything the featurised catalogue depends
        on: the builder and catalogue split, the text preprocessor (vocabulary, domain
        words, flags), `data.image_size` and `text.title_len`.

    Raises:
      ValueError: a split is missing, or no product or no query is usable.
    """
    self.ks = tuple(ks)
    if not self.ks or min(self.ks) < 1:
      raise ValueError(f'ks must be positive integers, got {self.ks}')
    for s in (catalogue_split, split):
      if s not in builder.info.splits:
        raise ValueError(f'Split {s!r} not in {list(builder.info.splits)}')
    self.batch_size, self.bootstrap_samples = batch_size, bootstrap_samples
    self.device = jax.local_devices()[0]
    meta = builder.info.metadata
    intents = dict(meta.get('intent_features', {}))  # query feature -> product feature
    cached = None if catalogue_cache is None else catalogue_cache.get(catalogue_key)
    if cached is None:
      cached = featurise_catalogue(
        config,
        preprocessor,
        reading.undecoded_source(builder, catalogue_split),
        meta.get('attribute_features', ()),
        sorted(set(intents.values())),
        image_cache_bytes,
      )
      if catalogue_cache is not None:
        catalogue_cache[catalogue_key] = cached
    self.featurised: FeaturisedCatalogue = cached
    self._load_queries(
      config, preprocessor, reading.undecoded_source(builder, split), intents, max_queries
    )
    self.k_max = min(max(self.ks), self.num_products)
    chunk = min(search_chunk, math.ceil(self.num_products / batch_size) * batch_size)
    self._chunk = max(batch_size, chunk // batch_size * batch_size)
    self._padded_products = math.ceil(self.num_products / self._chunk) * self._chunk
    self._jit()

  # --- Data -------------------------------------------------------------------------------

  @property
  def product_ids(self) -> np.ndarray:
    return self.featurised.catalogue.ids

  @property
  def products(self) -> dict[str, np.ndarray]:
    return self.featurised.features

  @property
  def num_products(self) -> int:
    return self.featurised.num_products

  @property
  def skipped(self) -> collections.Counter:
    return self.featurised.skipped

  def _load_queries(self, config, preprocessor, source, intents, max_queries):
    groups: dict[int, dict[str, Any]] = {}
    self.skipped_queries = 0
    for record in reading.records(source):
      query = _text(record['query'])
      if not query.strip():
        self.skipped_queries += 1
        continue
      group = groups.setdefault(
        preprocessor.qid(query),
        {'text': query, 'targets': set()}
        | {product: _text(record[q]) for q, product in intents.items()},
      )
      group['targets'].add(int(record['product_id']))
    qids = sorted(groups)[:max_queries]
    if not qids:
      raise ValueError('No query to evaluate in the split')
    chosen = [groups[q] for q in qids]
    catalogue = set(self.product_ids.tolist())
    self.qids = np.asarray(qids, np.int64)
    self.query_texts = [g['text'] for g in chosen]
    self.targets = [np.asarray(sorted(g['targets'] & catalogue), np.int64) for g in chosen]
    ids, mask = preprocessor.encode_batch(self.query_texts, config.text.query_len)
    self.queries = {'query_ids': ids, 'query_mask': mask}
    self._constraints = {p: [g[p] for g in chosen] for p in intents.values()}
    self._category = intents.get('query_category')
    self.num_queries = len(qids)

  # --- Device work ------------------------------------------------------------------------

  def _jit(self):
    n, k, chunk = self.num_products, self.k_max, self._chunk

    def search(queries, products):
      self._search_traces += 1
      return topk.running_top_k(queries, products, k, n, chunk)

    self._search_traces = 0
    self._towers: dict[tuple[Any, str], tower_lib.TowerEncoder] = {}
    self._search = jax.jit(search)

  @property
  def traces(self) -> int:
    """Jit traces so far: one per tower and model, and the search's."""
    return self._search_traces + sum(t.traces for t in self._towers.values())

  def _tower(self, model: Any, tower: str) -> tower_lib.TowerEncoder:
    """The model's tower encoder on this evaluator's device (one per model: compiled once)."""
    key = (model, tower)
    if key not in self._towers:
      self._towers[key] = tower_lib.TowerEncoder(
        model, tower=tower, batch_size=self.batch_size, devices=[self.device]
      )
    return self._towers[key]

  def embed_products(self, model: Any, params: Any) -> jax.Array:
    """Catalogue embeddings [N_padded, d] on one device, rows in product-id order."""
    tower = self._tower(model, 'product')
    params = tower.place(to_one_device(params, self.device))
    out = [
      tower.on_device(self.featurised.batch(start, start + self.batch_size), params)[0]
      for start in range(0, self.num_products, self.batch_size)
    ]
    emb = jnp.concatenate(out)
    return jnp.pad(emb, ((0, self._padded_products - self.num_products), (0, 0)))

  def embed_queries(self, model: Any, params: Any) -> jax.Array:
    """Query embeddings [Q_padded, d] on one device, in the order of `self.qids`."""
    tower = self._tower(model, 'query')
    params = tower.place(to_one_device(params, self.device))
    (emb,) = tower.on_device(self.queries, params)
    padded = math.ceil(self.num_queries / self.batch_size) * self.batch_size
    return jnp.pad(emb, ((0, padded - self.num_queries), (0, 0)))

  def search(self, query_emb: jax.Array, product_emb: jax.Array) -> np.ndarray:
    """Exact top-`k_max` catalogue rows per query [Q, k_max] (ties: lower product id)."""
    rows = [
      self._search(query_emb[start : start + self.batch_size], product_emb)
      for start in range(0, self.num_queries, self.batch_size)
    ]
    return np.concatenate(jax.device_get(rows))[: self.num_queries]

  # --- Metrics ----------------------------------------------------------------------------

  def metrics_of(self, rows: np.ndarray) -> dict[str, float]:
    """The metrics dict of retrieved catalogue rows [Q, k_max] (best first)."""
    per_query = {'recall': metrics_lib.recall_at_k(self.product_ids[rows], self.targets, self.ks)}
    if self._constraints:
      retrieved = {name: v[rows] for name, v in self.featurised.catalogue.attributes.items()}
      per_query['p_rel'] = metrics_lib.p_rel_at_k(retrieved, self._constraints, self.ks)
      if self._category:
        per_query['p_cate'] = metrics_lib.p_cate_at_k(
          retrieved[self._category], self._constraints[self._category], self.ks
        )
    out = metrics_lib.summarize(
      per_query, self.ks, bootstrap_samples=self.bootstrap_samples, seed=0
    )
    out |= {
      'num_queries': float(self.num_queries),
      'num_products': float(self.num_products),
      'skipped_products': float(sum(self.skipped.values())),
    }
    return out

  def __call__(self, model: Any, params: Any) -> dict[str, float]:
    """Encodes catalogue and queries with `params`, searches exactly, returns the metrics."""
    params = to_one_device(params, self.device)
    return self.metrics_of(
      self.search(self.embed_queries(model, params), self.embed_products(model, params))
    )
