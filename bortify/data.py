"""Where models and datasets come from: a Hub name, a local path, or an embedded default.

Every stage accepts the three forms through these two functions, so a recipe can say
`embedded:rotten-tomatoes`, `./reviews.csv` or `glue` (with `dataset_config: sst2`) alike.
"""

from __future__ import annotations

import os
from pathlib import Path

import datasets

from bortify.resources import is_embedded, load_embedded_dataset, resolve_model
from bortify.utils import is_hub_repo_id

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


# A folder's files keep the role their name gives them (datasets' own split-name convention, by file name start):
# train*, validation*/dev*/valid*, test*. Merging them would put the user's test rows into training.
_SPLIT_PREFIXES = (("validation", "validation"), ("valid", "validation"), ("dev", "validation"),
                   ("train", "train"), ("test", "test"))


def split_of_file(path: str) -> str | None:
    """'train' / 'validation' / 'test' from a data file's name (train.csv, dev-00001.parquet, ...), else None."""
    name = Path(path).name.lower()
    for prefix, split in _SPLIT_PREFIXES:
        if name.startswith(prefix) and (len(name) == len(prefix) or not name[len(prefix)].isalpha()):
            return split
    return None


def split_files_of_dir(directory: str, *, keep_roles: bool = True) -> dict[str, list[str]]:
    """The data files of a directory by split: named split files keep their roles (a file with no role name
    next to split files is an error: which split would it be?); a folder without split names is all train."""
    files = sorted(str(p) for p in Path(directory).rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise DataError(f"Directory {directory!r} holds no data files.")
    def role(f):  # the file's name, else its sub-folder's (train/part-0.csv)
        rel = Path(f).relative_to(directory).parts
        return next((r for part in reversed(rel) if (r := split_of_file(part))), None)

    roles = {f: role(f) for f in files} if keep_roles else {}
    if not any(roles.values()):
        return {"train": files}
    unnamed = [Path(f).name for f, r in roles.items() if r is None]
    if unnamed:
        raise DataError(f"Directory {directory!r} mixes split files (train*/dev*/validation*/test*) with files whose "
                        f"split is unknown: {unnamed[:5]}. Rename them (e.g. train-2.csv) or move them out.")
    if "train" not in roles.values():
        raise DataError(f"Directory {directory!r} has split files {sorted(Path(f).name for f in files)} but none "
                        "named train*: name the training file train.csv (or .json/.parquet).")
    out: dict[str, list[str]] = {}
    for f, r in roles.items():
        out.setdefault(r, []).append(f)
    return out


def local_data_files(spec: str | None, data_files: dict | None = None, *, keep_roles: bool = True) -> dict | None:
    """split -> list of local files for a local file / comma-separated files / directory / `data_files`; None for
    an embedded name, a Hub name or a saved DatasetDict folder."""
    if data_files:
        return {k: [v] if isinstance(v, str) else list(v) for k, v in data_files.items()}
    if not spec or is_embedded(spec):
        return None
    parts = [p.strip() for p in str(spec).split(",") if p.strip()]
    if parts and all(os.path.isfile(p) for p in parts):
        return {"train": parts}
    if os.path.isdir(spec) and not _is_saved_dataset(spec):
        return split_files_of_dir(spec, keep_roles=keep_roles)
    return None


def _is_saved_dataset(directory: str) -> bool:
    return (Path(directory) / "dataset_dict.json").exists() or (Path(directory) / "dataset_info.json").exists()


def _looks_local(spec: str) -> bool:
    """A spec that can only mean a local path: not a valid Hub repo id (huggingface_hub's rule: `name` or
    `owner/name`), or a data-file extension (reviews.csv is a valid repo id, but means a file)."""
    suffixes = [s for s in Path(spec).suffixes if s not in (".gz", ".bz2", ".xz", ".zst")]
    return not is_hub_repo_id(spec) or bool(suffixes and suffixes[-1].lower() in _EXTENSION_BUILDERS)


def _load_files(files_by_split: dict[str, list[str]]) -> datasets.DatasetDict:
    """datasets' file builder over split -> files, with clean errors for missing/empty/unreadable files."""
    files = [f for fs in files_by_split.values() for f in fs]
    for f in files:
        if not os.path.isfile(f):
            raise DataError(f"Data file {f!r} does not exist (or is not a file). Check the path.")
        if os.path.getsize(f) == 0:
            raise DataError(f"Data file {f!r} is empty (0 bytes): give a file with a header and rows.")
    kind = _builder_for(files)
    kwargs = {"sep": "\t"} if kind == "csv" and all(".tsv" in Path(f).suffixes for f in files) else {}
    # One split at a time: a dev/test file may lack a column or type it differently (the task checks name it)
    out = {}
    for split, split_files in files_by_split.items():
        names = ", ".join(Path(f).name for f in split_files)
        split_kwargs = dict(kwargs)
        if kind == "csv" and (cr_only := [f for f in split_files if _cr_only(f)]):
            if len(cr_only) != len(split_files):  # one line terminator per load (pandas' lineterminator)
                raise DataError(f"Data file(s) {', '.join(Path(f).name for f in cr_only)} (split {split!r}) end their "
                                "lines with a bare CR (old Mac style) and the other files of the split do not: convert "
                                "them to LF line endings (e.g. `tr '\\r' '\\n' < in.csv > out.csv`).")
            split_kwargs["lineterminator"] = "\r"  # read as lines, not as one header line
        if kind in ("csv", "json") and not any(_has_data_rows(f, kind) for f in split_files):
            raise DataError(f"Data file(s) {names} (split {split!r}) has no rows (only a header?): give data rows.")
        try:
            out[split] = datasets.load_dataset(kind, data_files={split: split_files}, split=split, **split_kwargs)
        except Exception as exc:  # a parser error: name the files, not a traceback
            raise DataError(f"Could not read {kind} file(s) {names} (split {split!r}): {type(exc).__name__}: "
                            f"{exc}") from exc
    return datasets.DatasetDict(out)


def _compressed(path: str) -> bool:
    return any(s in (".gz", ".bz2", ".xz", ".zst") for s in Path(path).suffixes)


def _cr_only(path: str, chunk: int = 1 << 20) -> bool:
    """Whether a (plain) text file ends its lines with a bare CR: a CR and no LF anywhere (classic Mac OS line
    endings, still written by some spreadsheet exports; a line reader sees one line)."""
    if _compressed(path):
        return False
    seen_cr = False
    with open(path, "rb") as f:
        while block := f.read(chunk):
            if b"\n" in block:
                return False
            seen_cr = seen_cr or b"\r" in block
    return seen_cr


def _has_data_rows(path: str, kind: str) -> bool:
    """Whether a csv has a line after its header / a json(l) file any content (compressed files: assumed yes)."""
    if _compressed(path):
        return True
    if kind == "csv" and _cr_only(path):
        with open(path, "rb") as f:
            return sum(1 for line in f.read().split(b"\r") if line.strip()) > 1
    with open(path, "rb") as f:
        lines = (line for line in f if line.strip())
        first = next(lines, None)
        if kind == "json":
            return first is not None and first.strip() not in (b"[]", b"{}")
        return next(lines, None) is not None


def load_any_dataset(spec: str | None, config: str | None = None, data_files: dict | None = None, *,
                     keep_roles: bool = True) -> datasets.DatasetDict:
    """Load `spec` as a DatasetDict.

    - `embedded:NAME` -> the packaged default (one split, 'train');
    - a local file or a comma-separated list of files -> the matching datasets builder (text/json/csv/parquet),
      split 'train'; `data_files` (split -> file(s)) names the splits itself;
    - a directory of files -> split files keep their roles by name (train*, validation*/dev*/valid*, test*;
      `keep_roles=False` reads every file as train, e.g. a raw-text corpus); otherwise all train;
    - anything else -> `datasets.load_dataset(spec, config)` (Hub name or a local dataset script-less repo).
    """
    if not data_files and is_embedded(spec):
        return datasets.DatasetDict({"train": load_embedded_dataset(spec)})
    if not data_files and spec and os.path.isdir(spec) and _is_saved_dataset(spec):
        loaded = datasets.load_from_disk(spec)
        return loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict({"train": loaded})
    files = local_data_files(spec, data_files, keep_roles=keep_roles)
    if files is not None:
        return _load_files(files)
    if not spec:
        raise DataError("No dataset given: pass a dataset or train_file.")
    if not os.path.exists(spec) and _looks_local(str(spec)):
        raise DataError(f"Local path {spec!r} does not exist. Check the path (a Hub dataset name has no file "
                        "extension).")
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
    dsd = load_any_dataset(spec, config, keep_roles=False)  # a corpus folder: every file is text to learn from
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
