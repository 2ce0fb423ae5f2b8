"""Pretraining by knowledge distillation (PAPERS.md §2): `pretrain()`, `DistillationTrainer`, pure losses."""
