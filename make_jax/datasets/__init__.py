"""Datasets of make_jax (SPEC section 1).

The TFDS builders register themselves when their modules are imported
(`make_jax.datasets.loading` imports both): `synthetic_products` and `fashion_products`.
`synthetic` (the generator) and `in_memory` (the synthetic dataset served from memory,
for machines without TensorFlow) import no TensorFlow, so this package imports nothing
on its own.
"""
