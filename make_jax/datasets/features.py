"""The record layout every click split of every dataset shares (the input pipeline's input).

Why one definition: the input pipeline, the evaluators and the CLIs read any dataset by
these names, so the builders must not drift apart. A record is a (query, clicked product)
pair, denormalised so that training reads one record per example; catalogue records use
the same layout with an empty query.
"""

from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds


def pair_features(
  *,
  intent_features: Sequence[str],
  attribute_features: Sequence[str],
  image: tfds.features.Image,
  extra: Mapping[str, tfds.features.FeatureConnector] | None = None,
) -> tfds.features.FeaturesDict:
  """Features of a click record.

  Args:
    intent_features: the query's attribute intents (text, '' when none), e.g. query_colour.
    attribute_features: the product's attribute values (text).
    image: the product image feature (its shape and encoding are the dataset's).
    extra: further dataset-specific features.
  """
  text = tfds.features.Text
  return tfds.features.FeaturesDict(
    {
      'query': text(),
      **{k: text() for k in intent_features},
      'product_id': tfds.features.Scalar(np.int32),
      'log_p': tfds.features.Scalar(np.float32),
      'title': text(),
      'image': image,
      'image_missing': tfds.features.Scalar(np.bool_),
      **{k: text() for k in attribute_features},
      **(extra or {}),
    }
  )
