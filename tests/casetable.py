"""The bad-input case table's harness (one row per case, peft style).

Each `Case` runs a real `bortify` command in-process (`bortify.cli.main(argv)`) inside a scratch directory
and asserts, for every row:

- the exit code (`rc`, 2 for a clean error unless the row says otherwise);
- a message on stderr matching `message` (a regex naming the problem), and no Python traceback;
- that the error came before any training: `transformers.Trainer.train` is patched to fail the test
  when `trains` is False;
- that every file that existed before the command is byte-identical afterwards (nothing lost or
  half-overwritten), unless the row lists it in `may_change`.

`setup(root)` creates the files a case needs (data files, a fake earlier run, ...) and may return a dict of
placeholders used to format `argv` (`{root}` is always available). `check(root)` runs extra assertions.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest


@dataclass
class Case:
    id: str
    argv: list[str]
    message: str  # regex that the error output must match
    setup: Callable[[Path], dict | None] | None = None
    rc: int = 2
    trains: bool = False  # True: the command is allowed to train (e.g. a case that warns and carries on)
    may_change: tuple[str, ...] = ()  # paths (relative to the scratch root) allowed to change
    check: Callable[[Path], None] | None = None
    stream: str = "stderr"  # where the message is expected: "stderr", "stdout" or "any"

    def param(self, *marks):
        return pytest.param(self, id=self.id, marks=list(marks))


def snapshot(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under `root` (hidden files included)."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


class TrainingStarted(AssertionError):
    pass


def run_case(case: Case, root: Path, monkeypatch, capsys) -> tuple[int, str, str]:
    """Run one row; returns (rc, stdout, stderr) after asserting the row's contract."""
    from bortify.cli import main

    root.mkdir(parents=True, exist_ok=True)
    values = {"root": str(root)}
    if case.setup is not None:
        values.update(case.setup(root) or {})
    argv = [a.format(**values) for a in case.argv]
    before = snapshot(root)
    if not case.trains:
        import transformers

        def refuse(self, *a, **k):
            raise TrainingStarted(f"case {case.id!r}: training started before the error")

        monkeypatch.setattr(transformers.Trainer, "train", refuse)
    monkeypatch.chdir(root)
    try:
        rc = main(argv)
    except TrainingStarted:
        raise
    except SystemExit as exc:  # argparse exits with 2 on a bad flag
        rc = exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:  # noqa: BLE001 - an exception reaching here is a traceback for the user
        pytest.fail(f"case {case.id!r}: `bortify {' '.join(argv)}` raised {type(exc).__name__}: {exc} "
                    "(the user would see a traceback)")
    out, err = capsys.readouterr()
    text = {"stderr": err, "stdout": out, "any": out + err}[case.stream]
    assert rc == case.rc, f"case {case.id!r}: exit code {rc}, expected {case.rc}\nstdout: {out}\nstderr: {err}"
    assert "Traceback" not in out + err, f"case {case.id!r}: traceback printed:\n{err}"
    assert re.search(case.message, text, re.IGNORECASE | re.DOTALL), (
        f"case {case.id!r}: message /{case.message}/ not found in {case.stream}:\n{text}")
    after = snapshot(root)
    allowed = tuple(case.may_change)
    changed = [p for p, digest in before.items() if after.get(p) != digest and not p.startswith(allowed or ("\0",))]
    assert not changed, f"case {case.id!r}: pre-existing files changed or deleted: {changed}"
    if case.check is not None:
        case.check(root)
    return rc, out, err
