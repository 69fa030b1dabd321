"""Serving (SPEC 7): relevance control, the Searcher, the HTTP server and its page.

Imports models, text, datasets and export, never train: what is served must not depend on
how it was trained. Modules are imported by name (`from make_jax.serving import search`).
"""
