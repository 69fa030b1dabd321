"""Raw TFDS record -> one example of the batch contract (SPEC section 1, 3).

The featuriser decodes the image (a non-square one padded to a square, never stretched),
tokenises query and title with the `TextPreprocessor` (normalise, segment, sort,
WordPiece, Keyword Enhancement flags) and raises `SkipRecord` for a record that cannot be
used, so that the pipeline skips and counts it instead of crashing.

Batch layout (contract 2): query_ids, query_mask, query_keyword [B, Lq] int32;
title_ids, title_mask, title_keyword [B, Lt] int32; image [B, S, S, 3] uint8;
image_missing [B] bool; product_id [B] int32; log_p [B] float32.
"""

import io
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
from PIL import Image

Batch = dict[str, np.ndarray]
# The keys of a contract-2 batch, in the order of the docstring above.
BATCH_KEYS = (
  'query_ids',
  'query_mask',
  'query_keyword',
  'title_ids',
  'title_mask',
  'title_keyword',
  'image',
  'image_missing',
  'product_id',
  'log_p',
)
# Padding of non-square images: white, the background of catalogue photos (fashion).
PAD_RGB = (255, 255, 255)


class SkipRecord(Exception):  # noqa: N818  (a signal, not an error to report)
  """Raised by a featuriser for a record that must be skipped; args[0] is the reason."""


class PairEncoder(Protocol):
  """What the pipeline needs of `make_jax.text.preprocess.TextPreprocessor`."""

  def encode_pair(
    self, query: Any, title: Any, attributes: Sequence[Any], query_len: int, title_len: int
  ) -> dict[str, np.ndarray]: ...


def _text(value: Any) -> str:
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def decode_image(data: bytes, image_size: int) -> np.ndarray:
  """Decodes PNG/JPEG bytes to RGB uint8 [image_size, image_size, 3].

  A non-square image is first padded to a square, centred, with PAD_RGB (its proportions
  are kept: a 60x80 photo gets 10 white columns on each side), then resized (bilinear).

  Raises:
    SkipRecord: the bytes are not a decodable image.
  """
  try:
    img = Image.open(io.BytesIO(data))
    img = img.convert('RGB')
  except Exception as e:  # noqa: BLE001  PIL raises many types for corrupt data.
    raise SkipRecord('bad_image') from e
  width, height = img.size
  if width != height:
    side = max(width, height)
    square = Image.new('RGB', (side, side), PAD_RGB)
    square.paste(img, ((side - width) // 2, (side - height) // 2))
    img = square
  if img.size != (image_size, image_size):
    img = img.resize((image_size, image_size), Image.Resampling.BILINEAR)
  return np.asarray(img, dtype=np.uint8)


def make_featurizer(
  preprocessor: PairEncoder,
  *,
  image_size: int,
  query_len: int,
  title_len: int,
  attribute_features: Sequence[str] = (),
  require_query: bool = True,
) -> Callable[[Mapping[str, Any]], Batch]:
  """A function from a raw TFDS record (image not decoded) to one example of contract 2.

  Args:
    preprocessor: a `TextPreprocessor` (its `encode_pair` tokenises and flags keywords).
    image_size: output image side S.
    query_len: query tokens incl. [CLS]/[SEP].
    title_len: title tokens incl. [CLS]/[SEP].
    attribute_features: record fields whose values count as product words for KE.
    require_query: skip records with an empty query (True for click pairs; False to
      featurise catalogue records, whose query is '').

  The function raises `SkipRecord` for an empty title or query or an undecodable image.
  """

  def featurize(record: Mapping[str, Any]) -> Batch:
    title = _text(record['title'])
    query = _text(record['query'])
    if not title.strip():
      raise SkipRecord('empty_title')
    if require_query and not query.strip():
      raise SkipRecord('empty_query')
    missing = bool(record['image_missing'])
    if missing:
      image = np.zeros((image_size, image_size, 3), np.uint8)
    else:
      image = decode_image(record['image'], image_size)
    ex = preprocessor.encode_pair(
      query, title, [_text(record[f]) for f in attribute_features], query_len, title_len
    )
    ex['image'] = image
    ex['image_missing'] = np.bool_(missing)
    ex['product_id'] = np.int32(record['product_id'])
    ex['log_p'] = np.float32(record['log_p'])
    return ex

  return featurize
