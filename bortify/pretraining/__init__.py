"""Pretraining by knowledge distillation (docs/methods.md §2): `pretrain()`, `DistillationTrainer`, pure losses."""
