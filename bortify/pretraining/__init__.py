"""Pretraining by knowledge distillation (docs/methods/02-pretraining.md §2): `pretrain()`, `DistillationTrainer`, pure losses."""
