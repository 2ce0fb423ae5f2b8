"""The documentation stays true to the code: docs/commands.md matches every command's --help, the README is a
short front door that names every command, every `docs/methods/<file> §n` citation resolves to a § heading of an
existing file, every method file is cited by the code that implements it, and comments cite docs/ and papers,
not tracker numbers or files outside the repository."""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
METHODS = ROOT / "docs" / "methods"
README_MAX_BYTES = 15_000
# A citation: docs/methods/<file>, optionally followed (across a line break and a comment's `#`) by §n or §n.m
CITATION = re.compile(r"docs/methods/(?P<file>[\w.-]+\.md)(?:[ \t]*\n?[ \t]*(?:#[ \t]*)?§(?P<section>\d+(?:\.[0-9a-z]+)?))?")
# Where citations live: code, tests, benchmarks, docs, recipes, cards and the top-level pages
CITING = ("bortify", "tests", "benchmarks", "docs", "recipes", "model_cards")
TOP_LEVEL = ("README.md", "BENCHMARKS.md", "pyproject.toml", "Makefile")
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".j2", ""}


def _text_files(folders, names=()):
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_file() and path.suffix in TEXT_SUFFIXES and "__pycache__" not in path.parts \
                    and "results" not in path.relative_to(ROOT).parts:
                yield path
    for name in names:
        if (ROOT / name).is_file():
            yield ROOT / name


def _make_commands():
    spec = importlib.util.spec_from_file_location("make_commands", ROOT / "docs" / "make_commands.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- docs/commands.md and the README ------------------------------------------------------------------------

def test_commands_page_matches_help():
    """docs/commands.md's options blocks are what the parsers give now (regenerate: python docs/make_commands.py);
    the hand-written prose of every command is kept."""
    make_commands = _make_commands()
    current = make_commands.PAGE.read_text(encoding="utf-8")
    assert make_commands.render(current) == current, \
        "docs/commands.md is out of date with `bortify <command> --help`: run `python docs/make_commands.py`"


def test_commands_page_has_every_command_with_prose():
    from bortify.cli import COMMANDS

    text = (ROOT / "docs" / "commands.md").read_text(encoding="utf-8")
    for name in COMMANDS:
        assert f"## `bortify {name}`" in text and f"<!-- help:{name}:begin -->" in text
        prose = re.search(rf"<!-- prose:{name}:begin -->\n(.*?)<!-- prose:{name}:end -->", text, re.S)
        assert prose and prose.group(1).strip(), f"bortify {name} has no hand-written prose in docs/commands.md"


def test_readme_is_a_front_door():
    """Short; the two set-up commands shown as they run; one line per command, each linked to its reference."""
    from bortify.cli import COMMANDS

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.encode("utf-8")) <= README_MAX_BYTES
    assert re.search(r"```bash\nmake demo .*\nmake test ", readme)
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    table = re.search(r"<!-- commands:begin -->\n(.*?)<!-- commands:end -->", readme, re.S).group(1)
    for name in COMMANDS:
        assert f"[`bortify {name}`](docs/commands.md#bortify-{name})" in table
    for heading in ("## Quick start", "## Your own data", "## Push to the Hub", "## Going distributed",
                    "<!-- demo-figures:begin -->"):
        assert heading in readme


def test_markdown_links_resolve():
    """Relative links of the README, BENCHMARKS.md and docs/ point at files that exist."""
    for path in _text_files(("docs",), ("README.md", "BENCHMARKS.md")):
        if path.suffix != ".md":
            continue
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text(encoding="utf-8", errors="replace")):
            if re.match(r"[a-z]+://|#|mailto:", target):
                continue
            assert (path.parent / target.split("#")[0]).exists(), f"{path.relative_to(ROOT)}: broken link {target}"


# ---- docs/methods/ ------------------------------------------------------------------------------------------

def _method_files():
    return sorted(p for p in METHODS.glob("*.md") if p.name != "README.md")


def _citations():
    for path in _text_files(CITING, TOP_LEVEL):
        for match in CITATION.finditer(path.read_text(encoding="utf-8", errors="replace")):
            yield path, match["file"], match["section"]


def _has_heading(file: Path, section: str) -> bool:
    return re.search(rf"^#+ §{re.escape(section)}(?![\w.])", file.read_text(encoding="utf-8"), re.M) is not None


def test_method_files_are_numbered_and_indexed():
    files = _method_files()
    assert [p.name[:2] for p in files] == [f"{n:02d}" for n in range(1, len(files) + 1)]
    index = (METHODS / "README.md").read_text(encoding="utf-8")
    for n, path in enumerate(files, start=1):
        assert _has_heading(path, str(n)), f"{path.name} has no '# §{n}' heading"
        assert f"]({path.name})" in index, f"docs/methods/README.md does not list {path.name}"
    assert not (ROOT / "docs" / "methods.md").exists()


def test_every_method_citation_resolves():
    """`docs/methods/<file> §n(.m)` names an existing file that has that § heading."""
    bad = [f"{path.relative_to(ROOT)}: docs/methods/{name} §{section}"
           for path, name, section in _citations()
           if not (METHODS / name).is_file() or (section and not _has_heading(METHODS / name, section))]
    assert not bad, "citations that do not resolve:\n" + "\n".join(bad)
    assert _has_heading(METHODS / "07-task-distillation.md", "7.2") and not _has_heading(
        METHODS / "07-task-distillation.md", "7.9")  # the check itself tells them apart


def test_no_citation_of_the_old_single_page():
    """docs/methods.md was split into docs/methods/; a short `methods §n` is written out as its file."""
    stale = [f"{path.relative_to(ROOT)}" for path in _text_files(CITING, TOP_LEVEL)
             if path.name != "test_docs.py"
             and re.search(r"docs/methods\.md|(?<![/\w])methods §\d", path.read_text(encoding="utf-8", errors="replace"))]
    assert not stale, f"cite docs/methods/<file> §n instead of docs/methods.md in: {stale}"


def test_every_method_file_is_cited_by_its_code():
    cited = {name for path, name, _ in _citations() if path.is_relative_to(ROOT / "bortify")}
    missing = [p.name for p in _method_files() if p.name not in cited]
    assert not missing, f"no module of bortify/ cites {missing}"


# ---- what comments cite -------------------------------------------------------------------------------------

# Written with character classes ([s], [h], [o]) so that this file does not match its own patterns and is checked too.
@pytest.mark.parametrize("pattern", [r"\bi[s]sues? #?\d+", r"\bs[h]ared/", r"\bw[o]rk[- ]?log"])
def test_no_issue_numbers_or_outside_files(pattern):
    """Code, tests and benchmarks cite docs/ and papers: no tracker numbers, logs of past work or files outside
    the repository (state the fact instead)."""
    hits = []
    for path in _text_files(("bortify", "tests", "benchmarks"), ("BENCHMARKS.md",)):
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
            if re.search(pattern, line, re.I):
                hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not hits, "\n".join(hits)
