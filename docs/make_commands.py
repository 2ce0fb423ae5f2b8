"""Write docs/commands.md: every `bortify` command's options, rendered from the parser its `--help` prints.

    python docs/make_commands.py           # rewrite docs/commands.md
    python docs/make_commands.py --check   # exit 1 when docs/commands.md is out of date (tests/test_docs.py)

The page has one section per command of bortify.cli.COMMANDS (the stage table, `run`, `resources`). In each, the
text between `<!-- prose:NAME:begin -->` and `<!-- prose:NAME:end -->` is written by hand and kept as it is; the
block between `<!-- help:NAME:begin -->` and `<!-- help:NAME:end -->` is generated: the parser that
`bortify NAME --help` builds is caught before it prints, and its description and options are rendered as a table
(not as argparse's text, whose layout changes between Python versions).
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "commands.md"
CACHE_SHOWN = "~/.cache/bortify"  # what the page says for the cache directory, whoever generates it

HEADER = """# bortify commands

One section per command: what it does and how to use it, then its options as `bortify <command> --help` gives
them. Every stage command takes `--config recipe.yaml` (its section of the recipe) and flags that override it,
and is a thin shell over a library function you can import (bortify/stages.py lists them).

<!-- The options blocks are generated from the parsers by docs/make_commands.py: edit the prose between the
prose markers, then run `.venv/bin/python docs/make_commands.py`. tests/test_docs.py fails when a block is out
of date. -->
"""

PROSE = re.compile(r"<!-- prose:(?P<name>[\w-]+):begin -->\n(?P<text>.*?)<!-- prose:(?P=name):end -->", re.S)


class _Caught(BaseException):
    """Raised in place of printing a help message, once the parser is caught."""


def command_parser(name: str) -> argparse.ArgumentParser:
    """The parser `bortify NAME --help` prints from (caught at print_help, nothing printed)."""
    import bortify.resources
    from bortify import cli

    caught: list[argparse.ArgumentParser] = []

    def catch(parser, file=None):
        caught.append(parser)
        raise _Caught

    with mock.patch.object(argparse.ArgumentParser, "print_help", catch), \
            mock.patch.object(bortify.resources, "cache_dir", lambda: Path(CACHE_SHOWN)):
        try:
            cli.main([name, "--help"])
        except _Caught:
            pass
    if not caught:
        raise RuntimeError(f"`bortify {name} --help` printed no parser's help")
    return caught[0]


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    if not action.help or action.help == argparse.SUPPRESS:
        return ""
    return _cell(parser._get_formatter()._expand_help(action))


def _value(action: argparse.Action) -> str:
    if action.nargs == 0:
        return ""
    if action.choices:
        value = "{" + ",".join(map(str, action.choices)) + "}"
    elif action.metavar:
        value = str(action.metavar)
    else:
        kind = getattr(action.type, "__name__", "")
        value = {"string_to_bool": "bool", "": "str"}.get(kind, kind)
    if action.nargs in ("+", "*"):
        value += " ..."
    return value


def options_table(parser: argparse.ArgumentParser) -> list[str]:
    rows = ["| option | value | what it does (default) |", "|---|---|---|"]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or not action.option_strings:
            continue
        names = ", ".join(f"`{s}`" for s in action.option_strings)
        required = "**required.** " if action.required else ""
        rows.append(f"| {names} | {_cell(_value(action))} | {required}{_help(parser, action)} |")
    return rows


def help_block(name: str) -> str:
    """The generated part of a command's section."""
    parser = command_parser(name)
    lines = [f"Options of `{parser.prog}` (`{parser.prog} --help`):", ""]
    if parser.description:
        lines += ["> " + _cell(parser.description), ""]
    positionals = [a for a in parser._actions if not a.option_strings and not isinstance(a, argparse._SubParsersAction)]
    for action in positionals:
        lines.append(f"- `{action.metavar or action.dest}`: {_help(parser, action)}")
    if positionals:
        lines.append("")
    table = options_table(parser)
    lines += table if len(table) > 2 else ["No options but `--help`."]
    for action in parser._actions:  # `bortify resources list|fetch`
        if isinstance(action, argparse._SubParsersAction):
            for choice, sub in action.choices.items():
                lines += ["", f"`{sub.prog}`: " + next(
                    (_cell(c.help) for c in action._choices_actions if c.dest == choice), "")]
                for arg in sub._actions:
                    if not arg.option_strings:
                        lines.append(f"- `{arg.metavar or arg.dest}`: {_help(sub, arg)}")
    return "\n".join(lines)


def render(current: str = "") -> str:
    """docs/commands.md with fresh options blocks; the prose of each command is taken from `current`."""
    from bortify.cli import COMMANDS

    prose = {m["name"]: m["text"] for m in PROSE.finditer(current)}
    parts = [HEADER]
    parts.append("| command | what it does |\n|---|---|\n" + "\n".join(
        f"| [`bortify {name}`](#bortify-{name}) | {_cell(line)} |" for name, (_, line) in COMMANDS.items()) + "\n")
    for name, (_, line) in COMMANDS.items():
        parts.append(
            f"## `bortify {name}`\n\n{line}\n\n"
            f"<!-- prose:{name}:begin -->\n{prose.get(name, '')}<!-- prose:{name}:end -->\n\n"
            f"<!-- help:{name}:begin -->\n{help_block(name)}\n<!-- help:{name}:end -->\n")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    check = "--check" in (sys.argv[1:] if argv is None else argv)
    current = PAGE.read_text(encoding="utf-8") if PAGE.exists() else ""
    fresh = render(current)
    if check:
        if fresh == current:
            return 0
        sys.stdout.writelines(difflib.unified_diff(current.splitlines(True), fresh.splitlines(True),
                                                   "docs/commands.md", "regenerated"))
        print("docs/commands.md is out of date: run `python docs/make_commands.py`", file=sys.stderr)
        return 1
    PAGE.write_text(fresh, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
