"""Two benchmark panels built from packaged real text: a many-class task and a long-text task.

Neither needs the Hugging Face Hub. Each panel's source is a Debian package fetched with `apt-get download
PKG=VERSION`, checked against the sha256 recorded below, unpacked with `dpkg -x` and cached under
~/.cache/bortify-bench (BORTIFY_BENCH_CACHE moves it). `build_panel(name, seed)` writes, under
CACHE/panels/NAME/seedS/:
  train.csv, dev.csv, test.csv  columns `text`, `label` (the class name)
  pool.csv                      column `text`: every remaining row of the data, labels dropped (unlabelled
                                in-domain text for task distillation)
  panel.json                    the description below, with this seed's row counts and the split fingerprint

How a split is made (`split_rows`, the same for both panels):
  1. texts are de-duplicated on their normalised form (lower case, whitespace collapsed); a text that occurs
     under two labels is dropped altogether;
  2. classes with fewer than `min_class_rows` distinct texts are dropped;
  3. TEST is drawn once, with a fixed seed (TEST_SEED) that does not depend on the run's seed, so every seed is
     scored on the same test rows;
  4. the run's seed draws dev, then train, from what is left; the rest is the pool.
So seeds change which rows are labelled (train and dev) and which are unlabelled (pool), never the test set. No
test text is in train, dev or the pool, and no text appears twice in the panel.

many-class: Debian `fortunes` + `fortunes-min` 1:1.99.1-7.3 (fortune-mod's cookie files, BSD licence per
  /usr/share/doc/fortunes/copyright; the quotations come from many authors). One entry = one text (entries are
  separated by lines holding `%`; terminal overstrike removed, whitespace collapsed); label = its cookie file.
  Kept: the 31 files with >= 100 distinct entries (ethnic-jokes file left out on purpose; the files of
  Debian's separate `fortunes-off` package are not downloaded at all; files under 100 entries, e.g. ascii-art,
  debian, goedel, magic, medicine, news, pets, tao, are dropped). Per class: test 20, dev 10, train 30, pool
  the rest -> test 620, dev 310, train 930, pool 12,442 rows. Median 28 MiniLM tokens (train+dev+test).
long-text: Debian `python3.11-doc` 3.11.2-6+deb12u8 (the reStructuredText sources of the Python 3.11
  documentation, usr/share/doc/python3.11/html/_sources/**/*.rst.txt; PSF License, per
  /usr/share/doc/python3.11-doc/copyright). Each file is cut into passages of 200-400 words (whole paragraphs
  gathered until >= 200 words; section underlines and index/label/toctree directives dropped); label = the
  top-level section (library, whatsnew, c-api, howto, reference, tutorial, faq, distutils, extending, using;
  the sections under 75 passages are dropped). Stratified by class size: test 800, dev 300, train 1,000 rows,
  pool the rest (3,923). Imbalanced as real data is: library is ~57% of every split (the majority-class rate).
  Median 456 MiniLM tokens (every text over 128): with --max_length 128 every model reads about the
  first 80-100 words.
The exact numbers of a build are in its panel.json (and in the results JSON of bench_panels.py).

    .venv/bin/python benchmarks/panels.py --seeds 1 2 3          # build both panels, print their descriptions
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

from bortify.utils import sha256_file

CACHE = Path(os.environ.get("BORTIFY_BENCH_CACHE", "~/.cache/bortify-bench")).expanduser()
TEST_SEED = 0  # the test rows of a panel are the same for every run seed
TOKENIZER = "embedded:all-MiniLM-L6-v2"


# --- sources ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Deb:
    """A Debian package pinned by version and by the sha256 of its .deb."""

    package: str
    version: str
    sha256: str

    @property
    def stem(self) -> str:
        return f"{self.package}_{self.version.replace(':', '%3a')}"


SOURCES = {
    "many-class": (Deb("fortunes", "1:1.99.1-7.3",
                       "41d0551dc0ff52f875a2ecef7c39da2f672ab468c37e170119f7e0245a9d63c5"),
                   Deb("fortunes-min", "1:1.99.1-7.3",
                       "9eed5b45064e41133dae0967cf3a17588ad77c014fcc7bf1527fa3ea48e44d07")),
    "long-text": (Deb("python3.11-doc", "3.11.2-6+deb12u8",
                      "50eb63e7f636c4281e9ce1b8f10386f1def42159eddce34fc1f41c46261df71b"),),
}


def fetch_deb(deb: Deb, cache: Path = CACHE) -> Path:
    """The unpacked tree of `deb` (cached): `apt-get download`, sha256 check, `dpkg -x`."""
    root = cache / "debs" / deb.stem
    if (root / ".complete").exists():
        return root
    archive = cache / "debs" / f"{deb.stem}_all.deb"
    archive.parent.mkdir(parents=True, exist_ok=True)
    if not archive.exists():
        with tempfile.TemporaryDirectory(dir=archive.parent) as tmp:
            run = subprocess.run(["apt-get", "download", f"{deb.package}={deb.version}"], cwd=tmp,
                                 capture_output=True, text=True)
            got = list(Path(tmp).glob("*.deb"))
            if run.returncode != 0 or len(got) != 1:
                raise SystemExit(f"apt-get download {deb.package}={deb.version} failed (rc {run.returncode}): "
                                 f"{run.stderr.strip()[-500:]}\nRun `apt-get update` first; if this version has "
                                 "left the mirror, pin the new one and its sha256 in benchmarks/panels.py SOURCES.")
            os.replace(got[0], archive)
    actual = sha256_file(archive)
    if actual != deb.sha256:
        archive.unlink()
        raise SystemExit(f"{archive.name}: sha256 {actual} != the recorded {deb.sha256}; file removed.")
    tmp = Path(tempfile.mkdtemp(dir=archive.parent, prefix=f".{deb.stem}-"))
    subprocess.run(["dpkg", "-x", str(archive), str(tmp)], check=True)
    (tmp / ".complete").write_text(deb.sha256 + "\n")
    if root.exists():
        shutil.rmtree(root)
    os.replace(tmp, root)
    return root


# --- reading each source into (text, label) rows -----------------------------------------------------------------

FORTUNE_DIR = "usr/share/games/fortunes"
FORTUNE_LEFT_OUT = {"ethnic"}  # ethnic jokes: not a topic we want a benchmark to score


def clean(text: str) -> str:
    """Terminal overstrike ("X\\bX", "_\\bX") removed, whitespace collapsed."""
    return " ".join(re.sub(r".\x08", "", text).split())


def fortune_entries(raw: str) -> list[str]:
    """The entries of one cookie file (separated by lines holding only `%`), cleaned, empty ones dropped."""
    entries, cur = [], []
    for line in raw.splitlines():
        if line.strip() == "%":
            entries.append("\n".join(cur))
            cur = []
        else:
            cur.append(line)
    entries.append("\n".join(cur))
    return [t for t in (clean(e) for e in entries) if t]


def fortunes_rows(roots: Iterable[Path]) -> list[tuple[str, str]]:
    rows = []
    for root in roots:
        folder = root / FORTUNE_DIR
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            if "." in path.name or path.is_symlink() or not path.is_file() or path.name in FORTUNE_LEFT_OUT:
                continue  # *.dat indexes and *.u8 links
            rows += [(t, path.name) for t in fortune_entries(path.read_bytes().decode("utf-8", errors="replace"))]
    return rows


DOC_DIR = "usr/share/doc/python3.11/html/_sources"
RST_UNDERLINE = re.compile(r"^\s*([=\-~^\"'`#*+<>:._])\1{2,}\s*$")
RST_SKIP = re.compile(r"^\.\.\s+(_[^:]*:|index::|highlight::|toctree::|module::|moduleauthor::|sectionauthor::|"
                      r"currentmodule::|testsetup::|\|)")


def rst_paragraphs(text: str) -> list[str]:
    out, cur = [], []
    for line in text.splitlines():
        if RST_UNDERLINE.match(line) or RST_SKIP.match(line.strip()):
            continue
        if line.strip():
            cur.append(line.strip())
        elif cur:
            out.append(" ".join(cur))
            cur = []
    if cur:
        out.append(" ".join(cur))
    return out


def passages(text: str, low: int = 200, high: int = 400, min_last: int = 150) -> list[str]:
    """Whole paragraphs gathered until a passage holds >= `low` words (cut at `high`); a tail of at least
    `min_last` words is a passage too."""
    words, out = [], []
    for paragraph in rst_paragraphs(text):
        words += paragraph.split()
        while len(words) >= low:
            take = words[:high]
            out.append(" ".join(take))
            words = words[len(take):]
    if len(words) >= min_last:
        out.append(" ".join(words))
    return out


def python_doc_rows(roots: Iterable[Path]) -> list[tuple[str, str]]:
    rows = []
    for root in roots:
        base = root / DOC_DIR
        for path in sorted(base.rglob("*.rst.txt")):
            parts = path.relative_to(base).parts
            if len(parts) < 2:  # top-level pages (about, bugs, glossary, ...) have no section
                continue
            rows += [(p, parts[0]) for p in passages(path.read_text(encoding="utf-8", errors="replace"))]
    return rows


# --- splitting ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Quota:
    """How many rows a split takes: `per_class` rows of every class, or `total` rows stratified by class size
    (largest remainder, at least one row of each class)."""

    per_class: int | None = None
    total: int | None = None

    def counts(self, sizes: dict[str, int]) -> dict[str, int]:
        if self.per_class is not None:
            return {c: min(self.per_class, n) for c, n in sizes.items()}
        n_all = sum(sizes.values())
        exact = {c: self.total * n / n_all for c, n in sizes.items()}
        out = {c: max(1, int(x)) for c, x in exact.items()}
        for c in sorted(exact, key=lambda c: (-(exact[c] - int(exact[c])), c)):
            if sum(out.values()) >= self.total:
                break
            out[c] += 1
        return {c: min(k, sizes[c]) for c, k in out.items()}


@dataclass(frozen=True)
class PanelSpec:
    name: str
    test: Quota
    dev: Quota
    train: Quota
    min_class_rows: int
    source: str
    licence: str
    label_is: str


PANELS = {
    "many-class": PanelSpec(
        "many-class", test=Quota(per_class=20), dev=Quota(per_class=10), train=Quota(per_class=30),
        min_class_rows=100,
        source="Debian fortunes + fortunes-min 1:1.99.1-7.3 (fortune-mod cookie files, usr/share/games/fortunes)",
        licence="BSD (fortune-mod, per the package's copyright file); quotations from many authors",
        label_is="the cookie file (category) of the entry"),
    "long-text": PanelSpec(
        "long-text", test=Quota(total=800), dev=Quota(total=300), train=Quota(total=1000), min_class_rows=75,
        source="Debian python3.11-doc 3.11.2-6+deb12u8 (Python 3.11 documentation sources, "
               "usr/share/doc/python3.11/html/_sources/**/*.rst.txt), passages of 200-400 words",
        licence="PSF License (per the package's copyright file)",
        label_is="the top-level section of the documentation the passage comes from"),
}
READERS = {"many-class": fortunes_rows, "long-text": python_doc_rows}


def normalise(text: str) -> str:
    return " ".join(text.lower().split())


def dedupe(rows: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """One row per normalised text (the first spelling, sorted order); texts seen under two labels dropped."""
    labels, first = defaultdict(set), {}
    for text, label in sorted(rows):
        key = normalise(text)
        labels[key].add(label)
        first.setdefault(key, (text, label))
    return [first[k] for k in sorted(first) if len(labels[k]) == 1]


def split_rows(rows: Iterable[tuple[str, str]], spec: PanelSpec, seed: int, test_seed: int = TEST_SEED) -> dict:
    """{"train", "dev", "test": [(text, label)], "pool": [text], "dropped_classes": {label: rows}} (see the
    module docstring: test from `test_seed`, dev and train from `seed`)."""
    by_class = defaultdict(list)
    for text, label in dedupe(rows):
        by_class[label].append(text)
    dropped = {c: len(t) for c, t in sorted(by_class.items()) if len(t) < spec.min_class_rows}
    kept = {c: t for c, t in sorted(by_class.items()) if c not in dropped}
    if len(kept) < 2:
        raise ValueError(f"{spec.name}: fewer than 2 classes with >= {spec.min_class_rows} distinct texts")
    sizes = {c: len(t) for c, t in kept.items()}
    out = {"test": [], "dev": [], "train": [], "pool": [], "dropped_classes": dropped}
    test_n, dev_n, train_n = spec.test.counts(sizes), spec.dev.counts(sizes), spec.train.counts(sizes)
    for c, texts in kept.items():
        rest = list(texts)
        random.Random(f"{test_seed}/{c}").shuffle(rest)
        test, rest = rest[:test_n[c]], sorted(rest[test_n[c]:])
        random.Random(f"{seed}/{c}").shuffle(rest)
        dev, train, pool = rest[:dev_n[c]], rest[dev_n[c]:dev_n[c] + train_n[c]], rest[dev_n[c] + train_n[c]:]
        out["test"] += [(t, c) for t in test]
        out["dev"] += [(t, c) for t in dev]
        out["train"] += [(t, c) for t in train]
        out["pool"] += pool
    mix = random.Random(f"{seed}/order")  # interleave the classes (a file sorted by class is a poor default)
    for split in ("test", "dev", "train", "pool"):
        mix.shuffle(out[split])
    return out


def fingerprint(splits: dict) -> str:
    digest = hashlib.sha256()
    for name in ("train", "dev", "test", "pool"):
        rows = splits[name]
        digest.update("\x1e".join(sorted(r if isinstance(r, str) else f"{r[0]}\x1f{r[1]}" for r in rows))
                      .encode("utf-8") + b"\x1d")
    return digest.hexdigest()[:16]


# --- writing a panel ----------------------------------------------------------------------------------------------

def write_csv(path: Path, rows, with_label: bool = True) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"] if with_label else ["text"])
        for row in rows:
            writer.writerow(list(row) if with_label else [row])
    os.replace(tmp, path)


def token_lengths(texts: list[str]) -> list[int]:
    """MiniLM (all-MiniLM-L6-v2) WordPiece tokens per text, [CLS] and [SEP] included, no truncation."""
    from transformers import AutoTokenizer

    from bortify.resources import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model(TOKENIZER))
    return [len(ids) for ids in tok(texts, truncation=False)["input_ids"]]


def describe(spec: PanelSpec, splits: dict, seed: int, lengths: list[int] | None = None) -> dict:
    labelled = splits["train"] + splits["dev"] + splits["test"]
    counts = Counter(c for _, c in splits["test"])
    out = {"name": spec.name, "source": spec.source, "licence": spec.licence, "label": spec.label_is,
           "classes": sorted({c for _, c in labelled}), "n_classes": len(counts),
           "rows": {k: len(splits[k]) for k in ("train", "dev", "test", "pool")},
           "train_rows_per_class": dict(sorted(Counter(c for _, c in splits["train"]).items())),
           "test_majority_rate": max(counts.values()) / len(splits["test"]),
           "dropped_classes": splits["dropped_classes"], "seed": seed, "test_seed": TEST_SEED,
           "quotas": {k: asdict(getattr(spec, k)) for k in ("test", "dev", "train")},
           "fingerprint": fingerprint(splits)}
    if lengths:
        out["tokens"] = {"tokenizer": TOKENIZER, "median": statistics.median(lengths),
                         "p90": sorted(lengths)[int(0.9 * (len(lengths) - 1))],
                         "over_128": sum(n > 128 for n in lengths) / len(lengths), "of": "train+dev+test"}
    return out


def build_panel(name: str, seed: int, cache: Path = CACHE, rows: list | None = None, tokens: bool = True) -> Path:
    """Writes the panel's CSVs for `seed` (see the module docstring) and returns their folder. `rows` replaces the
    Debian source (tests). Rebuilding gives the same files."""
    spec = PANELS[name]
    if rows is None:
        rows = READERS[name]([fetch_deb(d, cache) for d in SOURCES[name]])
    splits = split_rows(rows, spec, seed)
    out = cache / "panels" / name / f"seed{seed}"
    done = out / "panel.json"
    if done.exists() and json.loads(done.read_text()).get("fingerprint") == fingerprint(splits):
        return out
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev", "test"):
        write_csv(out / f"{split}.csv", splits[split])
    write_csv(out / "pool.csv", splits["pool"], with_label=False)
    lengths = token_lengths([t for s in ("train", "dev", "test") for t, _ in splits[s]]) if tokens else None
    info = describe(spec, splits, seed, lengths)
    if name in SOURCES:
        info["debian_packages"] = [asdict(d) for d in SOURCES[name]]
    done.write_text(json.dumps(info, indent=1) + "\n")
    return out


def panel_info(folder: Path) -> dict:
    return json.loads((Path(folder) / "panel.json").read_text())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--panels", nargs="+", default=list(PANELS), choices=list(PANELS))
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = p.parse_args(argv)
    for name in args.panels:
        for seed in args.seeds:
            folder = build_panel(name, seed)
            info = panel_info(folder)
            print(f"{name} seed {seed}: {folder}\n  {info['n_classes']} classes, rows {info['rows']}, "
                  f"median tokens {info.get('tokens', {}).get('median')}, majority {info['test_majority_rate']:.3f}"
                  f", dropped {info['dropped_classes']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
