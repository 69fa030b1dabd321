"""make_jax: text-to-multimodal product retrieval (MAKE, CDNS, MBNS, MPM_R) in JAX/Flax."""
