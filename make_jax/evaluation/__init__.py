"""Evaluation (SPEC section 9): Recall@K, P_rel@K, P_cate@K and their bootstrap intervals.

Nothing is imported here on purpose: `evaluation.metrics` is a pure-NumPy leaf that the
trainer (a lower layer) imports, and importing this package must not pull in the layers
above it.
"""
