"""Where models and datasets come from: a Hub name, a local path, or an embedded default.

Every stage accepts the three forms through these two functions, so a recipe can say
`embedded:rotten-tomatoes`, `./reviews.csv` or `glue` (with `dataset_config: sst2`) alike.
"""

from __future__ import annotations

import os
from pathlib import Path

import datasets

from bortify.resources import is_embedded, load_embedded_dataset, resolve_model

__all__ = ["resolve_model", "load_any_dataset", "load_text_corpus"]

_EXTENSION_BUILDERS = {
    ".txt": "text", ".text": "text", ".md": "text", ".rst": "text",
    ".json": "json", ".jsonl": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet",
}


class DataError(ValueError):
    pass


def _builder_for(files: list[str]) -> str:
    kinds = set()
    for f in files:
        suffixes = [s for s in Path(f).suffixes if s not in (".gz", ".bz2", ".xz", ".zst")]
        ext = suffixes[-1].lower() if suffixes else ""
        if ext not in _EXTENSION_BUILDERS:
            raise DataError(
                f"Cannot tell the format of {f!r}: use one of {sorted(_EXTENSION_BUILDERS)} "
                "(optionally compressed with .gz/.bz2/.xz)."
            )
        kinds.add(_EXTENSION_BUILDERS[ext])
    if len(kinds) != 1:
        raise DataError(f"Mixed file formats {sorted(kinds)}; give files of one format.")
    return kinds.pop()


def load_any_dataset(spec: str, config: str | None = None, data_files: dict | None = None) -> datasets.DatasetDict:
    """Load `spec` as a DatasetDict.

    - `embedded:NAME` -> the packaged default (one split, 'train');
    - a local file, a comma-separated list of files, or a directory of files -> the matching datasets
      builder (text/json/csv/parquet), split 'train' unless `data_files` names splits;
    - anything else -> `datasets.load_dataset(spec, config)` (Hub name or a local dataset script-less repo).
    """
    if is_embedded(spec):
        return datasets.DatasetDict({"train": load_embedded_dataset(spec)})
    if data_files:
        files = [f for v in data_files.values() for f in ([v] if isinstance(v, str) else v)]
        return datasets.load_dataset(_builder_for(files), data_files=data_files)
    parts = [p.strip() for p in str(spec).split(",") if p.strip()]
    if parts and all(os.path.isfile(p) for p in parts):
        kind = _builder_for(parts)
        kwargs = {"sep": "\t"} if kind == "csv" and all(".tsv" in Path(p).suffixes for p in parts) else {}
        return datasets.load_dataset(kind, data_files={"train": parts}, **kwargs)
    if os.path.isdir(spec):
        saved = Path(spec) / "dataset_dict.json"
        if saved.exists() or (Path(spec) / "dataset_info.json").exists():
            loaded = datasets.load_from_disk(spec)
            return loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict({"train": loaded})
        files = sorted(str(p) for p in Path(spec).rglob("*") if p.is_file() and not p.name.startswith("."))
        if not files:
            raise DataError(f"Directory {spec!r} holds no data files.")
        return datasets.load_dataset(_builder_for(files), data_files={"train": files})
    if os.path.sep in str(spec) and not os.path.exists(spec) and str(spec).startswith((".", "/", "~")):
        raise DataError(f"Local path {spec!r} does not exist.")
    try:
        return datasets.load_dataset(spec, config)
    except Exception as exc:  # a Hub failure: say what was tried and what else works
        raise DataError(
            f"Could not load dataset {spec!r}{f' ({config})' if config else ''} from the Hub: {exc}. "
            "Pass a local file (csv/json/parquet/txt), a directory, or an embedded default "
            "(see `bortify resources list`)."
        ) from exc


def load_text_corpus(spec: str, text_column: str = "text", split: str = "train", config: str | None = None) -> datasets.Dataset:
    """A raw-text corpus as one Dataset with a non-empty `text_column`; clear errors otherwise."""
    dsd = load_any_dataset(spec, config)
    if split not in dsd:
        raise DataError(f"Corpus {spec!r} has no split {split!r}; it has {list(dsd)}.")
    ds = dsd[split]
    if text_column not in ds.column_names:
        raise DataError(
            f"Corpus {spec!r} has no text column {text_column!r}; its columns are {ds.column_names}. "
            "Set text_column to the right one."
        )
    ds = ds.filter(lambda ex: isinstance(ex[text_column], str) and ex[text_column].strip() != "")
    if len(ds) == 0:
        raise DataError(f"Corpus {spec!r} is empty (no non-blank {text_column!r} rows).")
    return ds
