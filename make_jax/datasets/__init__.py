"""Dataset builders of make_jax, registered with TFDS on import (SPEC section 1).

`import make_jax.datasets` makes `tfds.builder('synthetic_products/en')` and
`tfds.builder('fashion_products')` available.
"""

from make_jax.datasets import (
  fashion_products,  # noqa: F401  (registers the builder)
  synthetic_products,  # noqa: F401  (registers the builder)
)
