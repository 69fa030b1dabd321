"""TFDS CLI entry for `fashion_products`:
`tfds build data/fashion_products --manual_dir=../shared/data`.

The builder lives in the package (make_jax.datasets.fashion_products) so code and tests
import it; this file only re-exports it under the name the TFDS CLI looks for.
"""

import os
import sys

# The TFDS CLI imports this file by path; make the repository root importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from make_jax.datasets import fashion_products  # noqa: E402


class Builder(fashion_products.FashionProducts, skip_registration=True):
  """The package's FashionProducts builder, under the TFDS CLI's class name."""
