"""TFDS CLI entry for `synthetic_products`: `tfds build data/synthetic_products --config=en`.

The builder lives in the package (make_jax.datasets.synthetic_products) so code and
tests import it; this file only re-exports it under the name the TFDS CLI looks for.
"""

import os
import sys

# The TFDS CLI imports this file by path; make the repository root importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from make_jax.datasets import synthetic_products  # noqa: E402


class Builder(synthetic_products.SyntheticProducts, skip_registration=True):
  """The package's SyntheticProducts builder, under the TFDS CLI's class name."""
