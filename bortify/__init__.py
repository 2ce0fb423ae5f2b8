"""bortify: a model factory that turns a big BERT-family model into a small, fast one that still performs.

Stages (each importable on its own, each a `bortify <stage>` subcommand):
extraction (Bort FPTAS) -> pretraining (knowledge distillation) -> fine-tuning (Agora) -> compression -> hub.
"""

__version__ = "0.1.0"
