"""Retrieval: which products score highest for these queries, and how good that list is.

One home for what training, export, serving and evaluation share: the exact top-k and its
tie rule (`topk`), the metrics of SPEC 9 (`metrics`) and the in-training evaluator
(`evaluator`). Sits above models and losses, below train, so every one of those rooms
may use it. Modules are imported by name (`from make_jax.retrieval import topk`).
"""
