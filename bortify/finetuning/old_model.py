"""The model an update replaces (docs/methods/04-updates.md §4): a fine-tuned classifier whose labels are matched to the
task's BY NAME, and its logits in the task's label order.

`bortify compare` (negative flips) and `bortify finetune --old_model` (focal distillation) both read an old
classifier through here. Its class names (config.id2label) must be the task's label names, as a set: a
different set is an error before any weights are loaded or any text is predicted; the same names in another
order are re-mapped (column j of `TaskClassifier.logits` is always the task's class j). Weights load as
safetensors only, never with remote code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bortify.utils import BortifyError


class LabelSetError(BortifyError):
    """An old/new classifier whose label names are not the task's (named, with the fix)."""


def _config(name: str, what: str):
    from transformers import AutoConfig

    import bortify.finetuning.pooled  # noqa: F401 - registers bortify's mean-pooling teacher (a saved teacher/)
    from bortify.resources import resolve_model

    try:
        return AutoConfig.from_pretrained(resolve_model(name), trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - any load failure is the user's path/name to fix
        raise LabelSetError(f"Cannot read the config of the {what} {name!r} ({exc}). Give a fine-tuned classifier "
                            "directory (config.json + model.safetensors), e.g. a `bortify finetune` output.") from None


def label_names(name: str, what: str) -> list[str]:
    """The class names of a sequence classifier, in its index order (config only: nothing is loaded)."""
    config = _config(name, what)
    if not any(a.endswith("ForSequenceClassification") for a in (config.architectures or [])):
        raise LabelSetError(f"The {what} {name!r} is not a sequence classifier (architectures: "
                            f"{config.architectures}); give a fine-tuned classification checkpoint.")
    if getattr(config, "problem_type", None) == "regression" or config.num_labels < 2:
        raise LabelSetError(f"The {what} {name!r} is a regression model: flips are defined for classifiers only.")
    return [str(config.id2label[i]) for i in range(config.num_labels)]


def model_config(name: str, what: str):
    """The config of a classifier (nothing else is loaded), or a LabelSetError naming it."""
    return _config(name, what)


def check_max_length(name: str, what: str, max_length: int | None, flag: str = "--max_length") -> None:
    """Refuse `max_length` above the classifier's position table (config only: nothing is loaded)."""
    from bortify.utils import check_sequence_length

    check_sequence_length(max_length, _config(name, what), flag, f"the {what} {name!r}")


def label_order(model_names: list[str], task_names: list[str], what: str) -> list[int]:
    """For each class index of the model, the task's index of the same NAME. Same names in another order are
    re-mapped; a different set of names is a LabelSetError."""
    if sorted(model_names) != sorted(map(str, task_names)) or len(set(model_names)) != len(model_names):
        raise LabelSetError(
            f"The {what} predicts labels {model_names} but the task's labels are {list(task_names)}: label sets must "
            "match by name (config.id2label), not by index. Give a model fine-tuned on this task's labels, or fix "
            "its config.json id2label/label2id.")
    return [list(map(str, task_names)).index(n) for n in model_names]


@dataclass
class TaskClassifier:
    """A loaded classifier with `id_map[i]` = the task's index of its class i."""

    model: object
    tokenizer: object
    name: str
    id_map: list[int]

    @property
    def remapped(self) -> bool:
        return self.id_map != list(range(len(self.id_map)))

    def logits(self, split, text_columns: list[str], *, max_length: int = 128, batch_size: int = 64) -> np.ndarray:
        """Logits (rows, task classes) over a task split (its text columns and `label`), columns in TASK order."""
        from bortify.finetuning.trainer import predict, tokenize

        raw = predict(self.model, self.tokenizer, tokenize(split, self.tokenizer, text_columns, max_length), batch_size)
        out = np.empty_like(raw)
        out[:, self.id_map] = raw
        return out


def load_task_classifier(name: str, task_names: list[str], what: str = "old model", *,
                         max_length: int | None = None) -> TaskClassifier:
    """Check the label names and `max_length` (config only), then load weights (safetensors, refused when they
    hold NaN/inf: utils.check_finite_weights) and tokenizer."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from bortify.resources import resolve_model

    id_map = label_order(label_names(name, what), task_names, what)
    check_max_length(name, what, max_length)
    path = resolve_model(name)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(path, use_safetensors=True, trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as exc:  # noqa: BLE001
        raise LabelSetError(f"Cannot load the {what} {name!r} as a classifier with safetensors weights and a tokenizer "
                            f"({exc}).") from None
    from bortify.utils import check_finite_weights

    check_finite_weights(model, f"The {what} {name!r} ({path})")
    model.eval()
    return TaskClassifier(model, tokenizer, name, id_map)
