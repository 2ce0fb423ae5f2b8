"""Fine-tuning a student on a classification task: task distillation (the default), plain (through the Trainer) or
with Agora.

Files: `arguments.py` (dataclasses), `tasks.py` (task -> columns/metrics table, label checks, splits),
`trainer.py` (one fine-tuning run through the Trainer, prediction, scoring), `generators.py`
(nearest-neighbour token substitution), `labelers.py` (the second model that labels generated texts),
`agora.py` (the loop, docs/methods/03-agora.md §3), `finetune.py` (the library function, -> bortify.reports.FinetuneReport);
the command and the pipeline stage are its entry in the stage table (bortify/stages.py).
"""



def __getattr__(name):  # `from bortify.finetuning import finetune` without importing torch at package import
    if name == "finetune":
        from bortify.finetuning.finetune import finetune

        return finetune
    raise AttributeError(name)
