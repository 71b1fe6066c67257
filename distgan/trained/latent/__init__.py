"""Latent-space tools (``distgan latent``): interpolation, attribute vectors, arithmetic,
layer traversals, latent histograms and t-SNE."""
