"""Compression for offline use (docs/methods/05-compression.md §5): quantisation, the perfect-hashed vocabulary, the offline bundle."""
