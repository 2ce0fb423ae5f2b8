"""The run's held-out test texts: defined once, kept out of every stage upstream, overlap counted everywhere
(docs/methods/09-heldout.md §9).

A run's final test split is only a measurement if no stage saw its texts: not the extraction estimator (its
train/dev rows), not the pretraining corpus, not fine-tuning's train/dev/unlabelled pool. `bortify run` derives
the split once, from the finetune section's data options, and writes `<run>/heldout.json` before the first
stage: the sha256 of every test text after `normalise` (lower-case, white space collapsed; the same identity
task distillation uses for its transfer set), never the texts themselves. Each stage that reads data takes it as
`heldout` (the pipeline wires it), drops those texts from its inputs and records how many it dropped in its
report (`heldout_record`). A stage run alone, without the file, still counts what it can see (fine-tuning: its own
splits, the unlabelled pool, and the corpus and extraction data its base model's reports name).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from bortify.data import DataError

HELDOUT_FILE = "heldout.json"
NORMALISATION = "lower-case, white space collapsed"
VERSION = 1


def normalise(text) -> str:
    """The identity of a text for overlap: lower-cased, runs of white space as one space, ends stripped."""
    return " ".join(str(text).lower().split())


def text_hash(text) -> str:
    """sha256 (hex, first 32 digits) of the normalised text."""
    return hashlib.sha256(normalise(text).encode("utf-8")).hexdigest()[:32]


def row_hash(texts: Sequence) -> str:
    """A row's identity: its one text's hash, or (sentence pairs) the hash of the normalised texts joined."""
    if len(texts) == 1:
        return text_hash(texts[0])
    return hashlib.sha256("\x1f".join(normalise(t) for t in texts).encode("utf-8")).hexdigest()[:32]


def rows_of(ds, text_columns: Sequence[str]) -> list[tuple]:
    """The text tuples of a Dataset (or list of dicts), one per row."""
    if hasattr(ds, "column_names"):
        return list(zip(*[ds[c] for c in text_columns])) if len(ds) else []
    return [tuple(r[c] for c in text_columns) for r in ds]


@dataclass(frozen=True)
class HeldOut:
    """The held-out test split as hashes: `rows` (one per distinct test row) and `texts` (every single text, for
    raw-text inputs such as a corpus line or one half of a pair)."""

    rows: frozenset
    texts: frozenset
    count: int  # test rows (duplicates included: the split's size)
    source: dict  # the data options it was derived from
    path: str | None = None  # the file it was read from

    @classmethod
    def from_rows(cls, rows: Iterable[Sequence], source: dict | None = None) -> "HeldOut":
        rows = [tuple(r) for r in rows]
        return cls(rows=frozenset(row_hash(r) for r in rows), texts=frozenset(text_hash(t) for r in rows for t in r),
                   count=len(rows), source=dict(source or {}))

    @classmethod
    def from_task(cls, task, source: dict | None = None) -> "HeldOut":
        """The test split of a prepared task (bortify.finetuning.tasks.TaskData)."""
        return cls.from_rows(rows_of(task.test, task.text_columns),
                             {"task": task.name, "text_columns": list(task.text_columns), **(source or {})})

    @property
    def digest(self) -> str:
        """Names the split: equal digests mean the same held-out texts."""
        return hashlib.sha256("\n".join(sorted(self.rows)).encode()).hexdigest()[:16]

    def has_text(self, text) -> bool:
        return text_hash(text) in self.texts

    def has_row(self, texts: Sequence) -> bool:
        return row_hash(texts) in self.rows

    def to_dict(self) -> dict:
        return {"version": VERSION, "normalisation": NORMALISATION, "hash": "sha256[:32] of the normalised text",
                "digest": self.digest, "test_rows": self.count, "source": self.source,
                "rows": sorted(self.rows), "texts": sorted(self.texts)}

    def write(self, path: str | Path) -> Path:
        from bortify.utils import write_json_atomic

        path = Path(path)
        write_json_atomic(path, self.to_dict())
        return path

    @classmethod
    def read(cls, path: str | Path) -> "HeldOut":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            rows = frozenset(data["rows"])
            texts = frozenset(data["texts"])
            if data.get("version") != VERSION or not all(isinstance(h, str) for h in texts):
                raise ValueError(f"version {data.get('version')!r}, expected {VERSION}")
            return cls(rows=rows, texts=texts, count=int(data["test_rows"]), source=dict(data.get("source") or {}),
                       path=str(path))
        except FileNotFoundError:
            raise DataError(f"heldout {str(path)!r} does not exist: give the run's {HELDOUT_FILE} (written by "
                            "`bortify run` before the first stage) or leave heldout unset.") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"heldout {str(path)!r} is not a held-out record ({exc}); delete it and re-run "
                            "`bortify run`, or leave heldout unset.") from None

    def describe(self, dropped: int, checked: int, what: str) -> dict:
        """The record a stage keeps in its report: which split it kept out of `what` and how many it dropped."""
        return {"digest": self.digest, "test_rows": self.count, "what": what, "checked": checked, "dropped": dropped,
                "normalisation": NORMALISATION}


def load_heldout(path: str | None) -> HeldOut | None:
    """The record at `path` (a stage's `heldout` option), or None when unset."""
    return HeldOut.read(path) if path else None


def keep_texts(texts: Sequence, heldout: HeldOut | None) -> list[int]:
    """Indices of the texts that are not held-out test texts (all of them without a record)."""
    if heldout is None:
        return list(range(len(texts)))
    return [i for i, t in enumerate(texts) if not (isinstance(t, str) and heldout.has_text(t))]


def drop_from_dataset(ds, text_column: str, heldout: HeldOut | None, what: str):
    """(the Dataset without rows whose `text_column` is a held-out text, the report's record or None)."""
    if heldout is None:
        return ds, None
    keep = keep_texts(ds[text_column], heldout)
    dropped = len(ds) - len(keep)
    if dropped:
        ds = ds.select(keep)
    return ds, heldout.describe(dropped, dropped + len(ds), what)


def seen_rows(test_rows: Sequence[Sequence], texts: Iterable) -> set[int]:
    """Indices of the test rows that have a text among `texts` (raw texts, e.g. a corpus's lines)."""
    seen = {text_hash(t) for t in texts if isinstance(t, str)}
    return {i for i, r in enumerate(test_rows) if any(text_hash(t) in seen for t in r)}


def heldout_for_section(section: dict, where: str = "recipe [finetune]") -> HeldOut:
    """The held-out split a finetune section defines: its data options (dataset, files, splits, seeds, caps),
    loaded and split exactly as the finetune stage will (bortify.finetuning.tasks.load_task)."""
    import dataclasses

    from bortify.finetuning.arguments import FinetuneDataArguments
    from bortify.finetuning.tasks import dataset_display, load_task
    from bortify.recipes import args_from_dict

    keys = {f.name for f in dataclasses.fields(FinetuneDataArguments)} - {"heldout"}
    (data_args,) = args_from_dict((FinetuneDataArguments,), {k: v for k, v in section.items() if k in keys}, where)
    task = load_task(data_args)
    source = {"dataset": dataset_display(data_args.resolved_dataset(), data_args.data_files()),
              "test": task.splits.get("how", {}).get("test"), "test_split_rows": len(task.test)}
    return HeldOut.from_task(task, source)


def write_run_heldout(section: dict, run_dir: str | Path) -> Path:
    """`bortify run`: `<run>/heldout.json` from the recipe's finetune section, before the first stage."""
    return heldout_for_section(section).write(Path(run_dir) / HELDOUT_FILE)
