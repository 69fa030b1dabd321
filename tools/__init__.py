"""Command-line entry points (absl): thin wrappers over make_jax."""
