"""Guards for the pretraining output directory: never clobber an input, never lose or mix up a run.

All checks here are cheap (paths, small JSON files, safetensors headers) and run before any model is loaded:

- `refuse_overlap`: the output directory must not be, contain, or lie inside an input (teacher, student
  config, corpus); otherwise the run would overwrite it.
- `probe_writable`: the output directory (or its nearest existing parent) accepts a file.
- `check_not_foreign`: a non-empty output directory that is neither a finished nor an unfinished bortify
  pretraining run (no report.json, run_args.json or checkpoint-*) is someone else's: refuse.
- `changed_run_args`: what an unfinished run was started with (run_args.json) against this invocation.
- `find_resume_checkpoint`: the newest *complete* checkpoint-N (a save killed half-way is skipped).
- `checkpoint_step`: the optimiser step a checkpoint was saved at, from its trainer_state.json.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import zipfile
from pathlib import Path

from safetensors import SafetensorError, safe_open
from transformers import TrainerState

from bortify.utils import OutputExistsError, is_same_or_nested

RUN_ARGS_NAME = "run_args.json"
TRAINER_STATE_NAME = "trainer_state.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# Arguments that change what is trained; a resume with other values would mix two runs. torch_threads,
# overwrite and preprocessing_num_workers change only how it runs; max_steps may grow to extend a run.
IGNORED_ON_RESUME = {"torch_threads", "overwrite", "preprocessing_num_workers"}
TRAINING_KEYS = ("seed", "temperature", "w_mlm", "w_kd", "kd_reduction", "w_hidden", "w_attn", "layer_map",
                 "relation_heads", "relation_teacher_layer", "w_compat", "compat_loss", "compat_batch_size",
                 "compat_texts", "compat_init")
_PATH_KEYS = {"student_config", "teacher", "corpus", "compatible_with"}


class RunDirError(ValueError):
    """The output directory cannot be used as asked; the message names the fix."""


def _real(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(os.path.expanduser(str(path))))


def refuse_overlap(out: str | os.PathLike, inputs: dict[str, str | None]) -> None:
    """Raise when `out` is, contains, or is inside one of the local `inputs` ({flag: path}); others are skipped."""
    target = _real(out)
    for flag, spec in inputs.items():
        if not spec or not os.path.exists(os.path.expanduser(str(spec))):
            continue  # a Hub or embedded name: nothing local to clobber
        relation = is_same_or_nested(target, _real(spec))
        if relation is None:
            continue
        raise RunDirError(f"--output_dir {out} {relation} the {flag} input {spec}: pretraining would write its "
                          f"checkpoints and model over it. Choose an --output_dir outside {spec} "
                          "(--overwrite does not allow this).")


def probe_writable(out: str | os.PathLike) -> None:
    """Raise unless a file can be created in `out` (or, if it does not exist yet, in its nearest existing parent)."""
    out = Path(os.path.expanduser(str(out)))
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "--output_dir" if existing == out else f"{existing}, on the way to --output_dir,"
        raise RunDirError(f"Cannot write to --output_dir {out}: {where} is a file, not a directory. Choose "
                          "another --output_dir.")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".bortify-write-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise RunDirError(f"Cannot write to --output_dir {out} ({exc.strerror} in {existing}). Choose a writable "
                          "--output_dir.") from exc


def checkpoints(out: str | os.PathLike) -> list[Path]:
    """checkpoint-N directories of `out`, newest (largest N) first."""
    out = Path(out)
    if not out.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in out.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def check_not_foreign(out: str | os.PathLike, marker: str) -> None:
    """Refuse a non-empty `out` that holds no bortify pretraining run (finished or not): it is not ours to resume."""
    out = Path(out)
    if not out.is_dir() or not any(out.iterdir()):
        return
    if (out / marker).exists() or (out / RUN_ARGS_NAME).exists() or checkpoints(out):
        return
    raise OutputExistsError(f"Output directory {out} is not empty and holds no bortify pretraining run (no "
                            f"{marker}, {RUN_ARGS_NAME} or checkpoint-*). Choose another --output_dir, or pass "
                            "--overwrite to write into it anyway.")


def checkpoint_problem(path: str | os.PathLike) -> str | None:
    """Why checkpoint directory `path` cannot be resumed from, or None when it is complete.

    Complete: trainer_state.json (the Trainer writes it last) loads with `TrainerState.load_from_json`, the
    model weights are there, every *.safetensors file's header covers the file (safetensors `safe_open`),
    and every torch.save file (*.pt, *.pth: optimizer, scheduler, RNG state) is a whole zip archive.
    """
    path = Path(path)
    state = path / TRAINER_STATE_NAME
    if not state.is_file():
        return f"it has no {TRAINER_STATE_NAME} (its save was interrupted)"
    try:
        TrainerState.load_from_json(str(state))
    except (OSError, ValueError, TypeError) as exc:
        return f"its {TRAINER_STATE_NAME} is unreadable ({exc})"
    weights = sorted(path.glob("*.safetensors"))
    sharded = (path / "model.safetensors.index.json").exists() or any(p.is_dir() for p in path.iterdir())
    if not weights and not sharded:
        return "it has no model weights (model.safetensors)"
    for file in weights:
        try:
            with safe_open(str(file), framework="pt") as handle:
                handle.keys()
        except (SafetensorError, OSError) as exc:
            return f"{file.name} is truncated or corrupt ({exc})"
    for file in [*path.glob("*.pt"), *path.glob("*.pth")]:
        if not zipfile.is_zipfile(file):
            return f"{file.name} is truncated or corrupt"
    return None


def checkpoint_step(path: str | os.PathLike) -> int:
    """The global step checkpoint `path` was saved at, read from its trainer_state.json (`TrainerState`), not
    guessed from the folder's name."""
    return TrainerState.load_from_json(str(Path(path) / TRAINER_STATE_NAME)).global_step


def find_resume_checkpoint(out: str | os.PathLike) -> tuple[Path | None, list[tuple[Path, str]]]:
    """(the newest complete checkpoint or None, [(newer incomplete checkpoint, why it was skipped), ...])."""
    skipped = []
    for path in checkpoints(out):
        problem = checkpoint_problem(path)
        if problem is None:
            return path, skipped
        skipped.append((path, problem))
    return None, skipped


def run_args_record(model_args, data_args, training_args) -> dict:
    """The arguments that define a run, as written to run_args.json (JSON-normalised)."""
    from dataclasses import asdict

    record = {"model": asdict(model_args), "data": asdict(data_args),
              "training": {k: getattr(training_args, k) for k in TRAINING_KEYS}}
    from bortify.utils import json_text

    return json.loads(json_text(record, what="run_args.json"))


def _same(key: str, old, new) -> bool:
    if old == new:
        return True
    if key in _PATH_KEYS and isinstance(old, str) and isinstance(new, str):
        return os.path.exists(old) and os.path.exists(new) and _real(old) == _real(new)
    return False


def changed_run_args(out: str | os.PathLike, current: dict) -> list[str]:
    """'name: old -> new' for each run-defining argument that differs from `out`/run_args.json (none: [])."""
    path = Path(out) / RUN_ARGS_NAME
    if not path.is_file():
        return []
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunDirError(f"{path} is unreadable ({exc}); pass --overwrite to start the run again, or choose "
                          "another --output_dir.") from exc
    changes = []
    for group, values in current.items():
        old_group = previous.get(group)
        if not isinstance(old_group, dict):
            continue  # written by an older bortify without this group
        for key, new in values.items():
            if key in IGNORED_ON_RESUME or key not in old_group:
                continue
            if not _same(key, old_group[key], new):
                changes.append(f"{key}: {old_group[key]!r} -> {new!r}")
    return changes
