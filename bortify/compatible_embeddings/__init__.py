"""Backward-compatible embeddings (BCT, Shen et al. 2020; docs/methods/04-updates.md §4).

A small model that replaces an old sentence encoder can answer queries against an index the old one built,
with no re-indexing ("backfilling"), when its embeddings live in the old model's space:

- `bortify.compatible_embeddings.losses`: the pure losses (compatibility of Dense(pool(new)) with the old embedding; BCT's
  influence loss through the old model's frozen classifier);
- `bortify.compatible_embeddings.sentence`: sentence embeddings as sentence-transformers computes them (pooling, Dense,
  Normalize), read from / written to a sentence-transformers folder (modules.json, 1_Pooling, 2_Dense, ...);
- `bortify.compatible_embeddings.metric`: BCT's empirical compatibility test (gallery by the old model, queries by the new:
  kNN-classification accuracy and recall@k) and the function that runs it.

Imports here stay light (torch only); sentence-transformers itself is never needed to write or use a folder.
"""
