"""Compression for offline use (methods §5): quantisation, the perfect-hashed vocabulary, the offline bundle."""
