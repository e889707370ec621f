"""Applications built on implicit_jax; run from the repository (not part of the installed package)."""
