"""Human-readable views of built examples, for `tools/build_data.py` and debugging.

Why: a person checking a fresh build wants to see a query, the clicked title, its
attributes, log p and the tokens the model will get, not raw records.
"""

from collections.abc import Iterator

import tensorflow_datasets as tfds

from make_jax.text.preprocess import TextPreprocessor


def _s(value) -> str:
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def describe_examples(
  builder: tfds.core.DatasetBuilder,
  split: str,
  num: int,
  *,
  query_len: int = 16,
  title_len: int = 48,
) -> Iterator[str]:
  """Yields a few lines per example of `split`: query, title, attributes, log_p, tokens.

  Tokens come from a vocabulary learned on the split's first 2,000 titles and queries
  (enough to show segmentation and sorting; training uses cfg.text's vocabulary).
  """
  source = builder.as_data_source(split, decoders={'image': tfds.decode.SkipDecoding()})
  head = source.__getitems__(list(range(min(len(source), 2000))))
  if not head:
    yield f'{split}: empty'
    return
  corpus = [_s(r['title']) for r in head] + [_s(r['query']) for r in head]
  preprocessor = TextPreprocessor.from_corpus(corpus, 4096)
  attributes = builder.info.metadata.get('attribute_features', [])
  for r in head[:num]:
    ex = preprocessor.encode_pair(
      r['query'], r['title'], [_s(r[a]) for a in attributes], query_len, title_len
    )
    yield f'query:      {_s(r["query"])!r}  (qid {preprocessor.qid(r["query"])})'
    yield f'title:      {_s(r["title"])!r}'
    yield '  attributes: ' + ', '.join(f'{a}={_s(r[a])}' for a in attributes)
    yield f'  product_id={r["product_id"]} log_p={r["log_p"]:.3f} image_missing={r["image_missing"]}'
    yield f'  query tokens: {preprocessor.decode(ex["query_ids"])} keyword={ex["query_keyword"].tolist()}'
    yield f'  title tokens: {preprocessor.decode(ex["title_ids"])}'
