"""Output folders: the one contract every stage's `--output_dir` follows.

Nothing bortify did not write is ever replaced. Every stage (extract, pretrain, finetune, compress, bench,
compare, card) claims its output folder here, before any long work (`claim`):

- **inputs**: the folder must not be, contain, or lie inside a local input (a model, a corpus, a stage folder
  it reads); `--overwrite` does not change this.
- **ownership**: a folder bortify wrote holds `.bortify-output.json` (MARKER: the stage that wrote it and the
  top-level files it owns). A folder from an older bortify, without the marker, counts as the stage's own when
  its finished-files (`report.json`; the card: README.md + card_evidence.json) are there and every other entry
  is a file that stage writes (`StageOutput.files`). Anything else is refused, with or without `--overwrite`:
  another stage's output (bench never replaces finetune's report.json), another model's checkpoint, a user's
  own files (the names are listed). The card's release folder keeps no marker (it is uploaded as is): its own
  README.md + card_evidence.json say what it is.
- **finished / unfinished**: a folder holding the finished-files is finished: refused unless `--overwrite`. An
  unfinished one of the same stage is resumed in place where the stage can resume (extract: its cached
  candidates; pretrain: its checkpoints; finetune: the folder is reused) and rebuilt otherwise.
- **lock**: one run per folder. `<parent>/.<name>.bortify-lock` is locked with fcntl.flock (released by the
  kernel if the process dies) and holds the pid; a second run is refused naming the folder and that pid.
- **replace by rename**: a replacement (and every run of a stage that cannot resume) is built in a sibling
  `<parent>/.<name>.bortify-new` on the same file system; at the end the old folder is renamed aside
  (`.<name>.bortify-old`), the new one renamed in, and only then the old one deleted. A run that fails or is
  killed midway leaves the old output whole; the next claim puts back an old folder stranded between the two
  renames and clears a stale `-new` one (both are bortify's own, and the lock is held).

Usage in a stage::

    with claim("bench", args.output_dir, overwrite=args.overwrite, inputs={"model": args.model}) as output:
        ...                          # checks and long work
        work = output.work_dir()     # the folder to write into (the final one, or the sibling being built)
        ...                          # write files, report.json last
    # on success the folder is committed (swapped in); on an exception a replacement is dropped

`output.commit()` commits early (compare: the report stays even when its release gate then fails).
"""

from __future__ import annotations

import errno
import fcntl
import fnmatch
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from bortify.utils import OutputExistsError, is_same_or_nested, write_json_atomic

MARKER = ".bortify-output.json"
REPORT = "report.json"
RUN_RECORD = "stage_done.json"  # bortify.pipeline.DONE_FILE: `bortify run`'s record inside a stage folder

# A saved transformers checkpoint: model and tokenizer files.
CHECKPOINT_FILES = (
    "config.json", "generation_config.json", "model.safetensors", "model-*.safetensors", "model.safetensors.index.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.txt",
    "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model", "chat_template.jinja",
)
# sentence-transformers files beside a checkpoint (bortify.compatible_embeddings.sentence, docs/methods/04-updates.md §4.4)
SENTENCE_FILES = ("modules.json", "config_sentence_transformers.json", "sentence_bert_config.json", "0_Transformer",
                  "1_Pooling", "2_Dense", "3_Normalize")
# Hidden names bortify itself makes inside a folder while writing it (staging folders, atomic-write temps).
_OUR_HIDDEN = (MARKER, ".staging-*", ".final-checkpoint", ".config.*", ".write-probe-*", ".bortify*")


class OutputError(OutputExistsError):
    """The output folder cannot be used as asked; the message names the folder, the problem and the fix."""


class OutputLockedError(OutputError):
    """Another bortify process is writing the same output folder."""


@dataclass(frozen=True)
class StageOutput:
    """What a stage's output folder holds and how it is written."""

    stage: str
    files: tuple[str, ...]  # fnmatch patterns of the top-level names the stage writes
    finished: tuple[str, ...] = (REPORT,)  # all present: a finished output (each stage writes them last)
    resumable: bool = False  # True: an unfinished output is continued in place; False: every run is staged
    marker: bool = True  # False: no marker inside (the card's release folder is uploaded as it is)
    legacy: tuple[str, ...] = ()  # patterns that mark an older bortify's unfinished output of this stage
    what: str = ""  # how messages name the folder ("a release folder made by `bortify card`")

    def describe(self) -> str:
        return self.what or f"an output of `bortify {self.stage}`"

    def owns(self, name: str, listed: Iterable[str] = ()) -> bool:
        if name in (MARKER, RUN_RECORD) or name in set(listed):
            return True
        if any(fnmatch.fnmatchcase(name, p) for p in self.files):
            return True
        if name.startswith("."):  # bortify's own temporaries, or an atomic write of one of the stage's files
            return any(fnmatch.fnmatchcase(name, p) for p in _OUR_HIDDEN) or any(
                fnmatch.fnmatchcase(name, f".{p}.*") for p in self.files)
        return False


OUTPUTS: dict[str, StageOutput] = {s.stage: s for s in (
    StageOutput("extract", ("config.json", REPORT, "pareto.png", "partial_results.json"), resumable=True,
                legacy=("partial_results.json",)),
    StageOutput("pretrain", (*CHECKPOINT_FILES, *SENTENCE_FILES, REPORT, "run_args.json", "trainer_state.json",
                             "training_args.bin", "checkpoint-*", "runs"),
                resumable=True, legacy=("run_args.json", "checkpoint-*")),
    StageOutput("finetune", (*CHECKPOINT_FILES, *SENTENCE_FILES, REPORT, "agora_added.jsonl", "rounds.png",
                             "teacher"), resumable=True),
    StageOutput("compress", ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
                             "special_tokens_map.json", "model.q8.safetensors", "onnx", "bundle", REPORT)),
    StageOutput("bench", (REPORT, "bench.png")),
    StageOutput("compare", (REPORT, "negative_flips.jsonl")),
    # The release folder (bortify.hub.card_stage): checkpoint, card, plots, evidence, sentence-transformers
    # modules and compress's onnx/ (docs/methods/05-compression.md §5).
    StageOutput("card", (*CHECKPOINT_FILES, *SENTENCE_FILES, "README.md", "card_evidence.json", "pareto.png",
                         "rounds.png", "accuracy_speed.png", "onnx"),
                finished=("README.md", "card_evidence.json"), marker=False,
                what="a release folder made by `bortify card`"),
)}


def spec_of(stage: str | StageOutput) -> StageOutput:
    return stage if isinstance(stage, StageOutput) else OUTPUTS[stage]


# ---- inputs and writability -------------------------------------------------------------------------------

def local_input(spec: str | os.PathLike | None) -> Path | None:
    """`spec` as an existing local path (resolved), or None for a Hub or embedded name."""
    if not spec:
        return None
    path = Path(os.path.expanduser(str(spec)))
    return path.resolve() if path.exists() else None


def refuse_inputs(out: str | os.PathLike, inputs: Mapping[str, str | os.PathLike | None]) -> None:
    """Raise when `out` is, contains, or is inside one of the local `inputs` ({name: path}); Hub and embedded
    names are skipped (nothing local to clobber)."""
    target = Path(os.path.expanduser(str(out))).resolve()
    for name, spec in inputs.items():
        source = local_input(spec)
        if source is None:
            continue
        relation = is_same_or_nested(target, source)
        if relation is not None:
            raise OutputError(f"--output_dir {out} {relation} the input {name} {spec}: writing there would overwrite "
                              "or mix with it. Give the output a directory of its own, outside every input "
                              "(--overwrite never replaces an input).")


def probe_writable(out: str | os.PathLike) -> None:
    """Raise unless a file can be created in `out` (or, if it does not exist yet, in its nearest existing parent)."""
    out = Path(os.path.expanduser(str(out)))
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "it exists and is not a directory (it is a file)" if existing == out else \
            f"{existing}, on the way to it, is a file, not a directory"
        raise OutputError(f"Cannot write to --output_dir {out}: {where}. Choose another --output_dir.")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".bortify-write-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"Cannot write to --output_dir {out} ({exc.strerror or exc} in {existing}). Choose a "
                          "writable --output_dir.") from exc


# ---- what a folder holds ----------------------------------------------------------------------------------

@dataclass
class Found:
    """What `inspect` found in an output folder."""

    state: str  # "absent" | "empty" | "unfinished" | "finished"
    writer: str | None = None  # the stage named by the marker (None: no marker)
    files: tuple[str, ...] = ()  # the marker's list of the files the stage owns

    @property
    def ours(self) -> bool:
        return self.state in ("unfinished", "finished")


def read_marker(folder: str | os.PathLike) -> dict | None:
    """The marker of `folder` ({"stage", "files", ...}), None when there is none; OutputError when unreadable."""
    path = Path(folder) / MARKER
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise OutputError(f"{path} is unreadable ({exc}): bortify cannot tell which stage wrote {folder}. Choose "
                          f"another --output_dir, or delete {folder} yourself if it is a bortify output.") from exc
    if not isinstance(data, dict) or not isinstance(data.get("stage"), str):
        raise OutputError(f"{path} does not name the stage that wrote {folder}. Choose another --output_dir.")
    return data


def _listing(names: list[str], limit: int = 8) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def inspect(stage: str | StageOutput, out: str | os.PathLike) -> Found:
    """What `out` is to `stage`; raises OutputError for a folder the stage must not write into or replace: a
    file, another stage's output, foreign files, or a folder with no sign that bortify made it."""
    spec = spec_of(stage)
    out = Path(os.path.expanduser(str(out)))
    if out.exists() and not out.is_dir():
        raise OutputError(f"Cannot write to --output_dir {out}: it exists and is not a directory (it is a file). "
                          "Choose another --output_dir.")
    if not out.exists():
        return Found("absent")
    names = sorted(p.name for p in out.iterdir())
    if not names:
        return Found("empty")
    marker = read_marker(out) if spec.marker else None
    if marker is not None and marker["stage"] != spec.stage:
        raise OutputError(f"{out} holds the output of `bortify {marker['stage']}` ({MARKER}); `bortify {spec.stage}` "
                          "neither writes into it nor replaces it, even with --overwrite. Choose another --output_dir "
                          f"(e.g. a {spec.stage} folder beside it).")
    listed = tuple(marker.get("files") or ()) if marker else ()
    foreign = [n + ("/" if (out / n).is_dir() else "") for n in names if not spec.owns(n, listed)]
    if foreign:
        raise OutputError(f"{out} is not {spec.describe()} (it holds {_listing(foreign)}), so bortify neither writes "
                          "into it nor replaces it, even with --overwrite: it never touches files it did not make. "
                          "Choose a new or empty --output_dir, or move those files out.")
    finished = all((out / f).exists() for f in spec.finished)
    if marker is None and not finished and not (spec.resumable and any(
            fnmatch.fnmatchcase(n, p) for n in names for p in spec.legacy)):
        visible = [n for n in names if not n.startswith(".")] or names
        raise OutputError(f"{out} is not {spec.describe()}: it holds {_listing(visible)} but no {MARKER} or "
                          f"{' + '.join(spec.finished)} saying bortify made it (another model's checkpoint, or your "
                          "own files?), so bortify neither writes into it nor replaces it, even with --overwrite. "
                          "Choose a new or empty --output_dir.")
    return Found("finished" if finished else "unfinished", marker["stage"] if marker else None, listed)


# ---- the lock -------------------------------------------------------------------------------------------------

def _sibling(final: Path, what: str) -> Path:
    return final.parent / f".{final.name}.bortify-{what}"


class Lock:
    """An exclusive, non-blocking fcntl.flock on `<parent>/.<name>.bortify-lock`, holding the owner's pid."""

    def __init__(self, final: Path):
        self.path = _sibling(final, "lock")
        self.fd: int | None = None

    def acquire(self, shown: str | os.PathLike) -> None:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                raise OutputLockedError(
                    f"--output_dir {shown} is being written by another bortify run (pid {self._holder()}; lock "
                    f"{self.path}). Wait for it to finish, or choose another --output_dir.") from None
            try:  # the file may have been unlinked by its previous holder between our open and flock
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def _holder(self) -> str:
        try:
            return self.path.read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)  # unlinked while still locked: a waiting opener re-checks the inode (acquire)
        except FileNotFoundError:
            pass
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None


# ---- the claim ------------------------------------------------------------------------------------------------

def _swap(new: Path, final: Path) -> None:
    """Rename `final` aside, `new` into its place, then delete the old one; a failure between the two renames
    puts the old one back."""
    old = _sibling(final, "old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    try:
        os.replace(new, final)
    except BaseException:
        if old.exists() and not final.exists():
            os.replace(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)


def recover(final: Path) -> None:
    """Undo what a killed replacement left beside `final` (call with the lock held): an old folder stranded
    between the two renames goes back into place; a half-built new one is deleted."""
    old, new = _sibling(final, "old"), _sibling(final, "new")
    if old.is_dir() and not final.exists():
        os.replace(old, final)
    for leftover in (old, new):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)


class Output:
    """A claimed output folder (see `claim`)."""

    def __init__(self, spec: StageOutput, path: str | os.PathLike, overwrite: bool, main_process: bool = True):
        self.spec, self.path, self.overwrite, self.main = spec, Path(path), overwrite, main_process
        self.final = Path(os.path.abspath(os.path.expanduser(str(path))))
        self.lock = Lock(self.final)
        self.found = Found("absent")
        self.staged = False  # True: written into a sibling and swapped in at the end
        self._work: Path | None = None
        self._made: list[Path] = []  # directories this claim created (removed again if nothing was written)
        self.committed = False

    @property
    def resuming(self) -> bool:
        """An unfinished output of this stage is continued in place."""
        return self.found.state == "unfinished" and not self.staged

    @property
    def replacing(self) -> bool:
        """A previous output (finished or not) is replaced at the end."""
        return self.staged and self.found.ours

    def _check(self, inputs: Mapping[str, str | os.PathLike | None]) -> None:
        refuse_inputs(self.path, inputs)
        probe_writable(self.path)
        if self.main:
            missing = []
            parent = self.final.parent
            while not parent.exists():
                missing.append(parent)
                parent = parent.parent
            self.final.parent.mkdir(parents=True, exist_ok=True)
            self._made = missing
            self.lock.acquire(self.path)
            recover(self.final)
        self.found = inspect(self.spec, self.path)
        if self.found.state == "finished" and not self.overwrite:
            raise OutputError(f"Output directory {self.path} already holds results. Pass --overwrite to replace "
                              f"them (only bortify {self.spec.stage}'s own output is ever replaced), or choose another "
                              "--output_dir.")
        self.staged = not self.spec.resumable or (self.overwrite and self.found.ours)

    def work_dir(self) -> Path:
        """The folder to write into, created now: the sibling being built (replacement, or a stage that cannot
        resume), else the output folder itself with its marker."""
        if self._work is not None:
            return self._work
        if self.staged:
            work = _sibling(self.final, "new")
            if self.main:
                if work.exists():
                    shutil.rmtree(work)
                work.mkdir()
        else:
            work = self.final
            if self.main:
                if not work.exists():
                    work.mkdir(parents=True)
                    self._made.insert(0, work)
                for stale in [*work.glob(".staging-*"), *work.glob(".config.*")]:  # an interrupted run's temps
                    if stale.is_dir():
                        shutil.rmtree(stale, ignore_errors=True)
                self._write_marker(work)
        self._work = work
        return work

    def _write_marker(self, folder: Path) -> None:
        if not self.spec.marker:
            return
        files = sorted(n for n in os.listdir(folder) if n != MARKER and not n.startswith("."))
        write_json_atomic(folder / MARKER, {"stage": self.spec.stage, "files": files,
                                            "finished": all((folder / f).exists() for f in self.spec.finished)})

    def commit(self) -> Path:
        """Finish the output: record the files in its marker and, if it was built aside, swap it in."""
        if self.committed or not self.main:
            self.committed = True
            return self.final
        work = self.work_dir()
        self._write_marker(work)
        if self.staged:
            _swap(work, self.final)
            self._made = [d for d in self._made if d != self.final]
        self.committed = True
        return self.final

    def abort(self) -> None:
        """Drop a half-built replacement; remove folders this claim created that hold nothing but its marker."""
        if not self.main or self.committed:
            return
        if self.staged and self._work is not None:
            shutil.rmtree(self._work, ignore_errors=True)

    def release(self) -> None:
        if not self.main:
            return
        self.lock.release()
        if not self.committed:
            for folder in self._made:  # innermost first
                try:
                    if folder.is_dir() and set(os.listdir(folder)) <= {MARKER}:
                        (folder / MARKER).unlink(missing_ok=True)
                        folder.rmdir()
                except OSError:
                    break

    def __enter__(self) -> "Output":
        return self

    def __exit__(self, kind, exc, tb) -> None:
        try:
            if kind is None:
                if self._work is not None and not self.committed:
                    try:
                        self.commit()
                    except BaseException:
                        self.abort()
                        raise
            else:
                self.abort()
        finally:
            self.release()


def claim(stage: str | StageOutput, path: str | os.PathLike, *, overwrite: bool = False,
          inputs: Mapping[str, str | os.PathLike | None] | None = None, main_process: bool = True) -> Output:
    """Check `path` for `stage` and lock it; use the result as a context manager (see the module docstring).

    Raises OutputError before any work: `path` is/contains/is inside an input, cannot be written, is locked by
    another run, holds another stage's output or files bortify did not write, or is finished and `overwrite` is
    off. Other processes of a distributed run pass main_process=False: they check, but only the main process
    locks, writes the marker and swaps."""
    output = Output(spec_of(stage), path, overwrite, main_process)
    try:
        output._check(inputs or {})
    except BaseException:
        output.release()
        raise
    return output
