"""Evaluation (SPEC section 9): the results table, its rows and sources, the figures.

The formulas (Recall@K, P_rel@K, P_cate@K, bootstrap intervals) live in
`retrieval/metrics.py`, shared with the trainer. Modules are imported by name.
"""
