"""Resuming a pretraining run: never lose or mix up a run.

The output folder itself (not an input, writable, not foreign, not finished unless --overwrite, locked) is claimed
through bortify.outputs, like every stage's. All checks here are cheap (small JSON files, safetensors headers) and
run before any model is loaded:

- `changed_run_args`: what an unfinished run was started with (run_args.json) against this invocation.
- `find_resume_checkpoint`: the newest *complete* checkpoint-N (a save killed half-way is skipped).
- `checkpoint_step`: the optimiser step a checkpoint was saved at, from its trainer_state.json.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path

from safetensors import SafetensorError, safe_open
from transformers import TrainerState


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


def checkpoints(out: str | os.PathLike) -> list[Path]:
    """checkpoint-N directories of `out`, newest (largest N) first."""
    out = Path(out)
    if not out.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in out.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


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
        return os.path.exists(old) and os.path.exists(new) and os.path.realpath(old) == os.path.realpath(new)
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
