"""Parallelism: axis-name collectives, logical partitioning rules, the mesh and jax.distributed.

The lowest layer of the package after the standard library: every other room may import it.
"""
