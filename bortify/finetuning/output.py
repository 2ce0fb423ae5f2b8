"""Step 5 of finetune.py: the output folder's files. The checkpoint (model + tokenizer), agora_added.jsonl, rounds.png,
the sentence-transformers files (--compatible_with) and, last, report.json (it marks a finished output); the
fine-tuned teacher beside the student (--save_teacher)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from bortify.finetuning.trainer import tokenizer_for_saving
from bortify.outputs import SENTENCE_FILES
from bortify.reports import REPORT_FILE as REPORT
from bortify.reports import FinetuneReport, write_report
from bortify.utils import json_text, make_shareable

ROUNDS_TITLES = {"agora": "Agora: score by round", "distill": "Task distillation: score and transfer-set rows added",
                 "plain": "Plain fine-tuning: score"}


def plot_rounds(rounds: list[dict], metric: str, path: Path, mode: str = "agora") -> None:
    """Dev (and test) score by round, with the examples added per round as bars; titled by the mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [r["round"] for r in rounds]
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    ax.plot(xs, [r["dev_score"] for r in rounds], "o-", label=f"dev {metric}")
    if all(r.get("test_score") is not None for r in rounds):
        ax.plot(xs, [r["test_score"] for r in rounds], "s--", label=f"test {metric}")
    ax.set_xlabel("round")
    ax.set_ylabel(metric)
    ax.set_xticks(xs)
    ax2 = ax.twinx()
    ax2.bar(xs, [r["examples_added"] for r in rounds], alpha=0.25, color="gray", label="examples added")
    ax2.set_ylabel("examples added")
    ax.set_zorder(ax2.get_zorder() + 1)  # score lines above the bars
    ax.patch.set_visible(False)
    lines = ax.get_legend_handles_labels()
    bars = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + bars[0], lines[1] + bars[1], loc="lower right", fontsize=8)
    ax.set_title(ROUNDS_TITLES.get(mode, f"{mode}: score by round"))
    fig.tight_layout()
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".rounds-", suffix=".png", delete=False) as f:
        tmp = f.name
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def write_output(out: Path, model, tokenizer, added_rows: list[dict], rounds: list[dict], metric: str,
                 report: FinetuneReport, sentence=None) -> None:
    """Checkpoint files are written into a staging dir INSIDE the output dir (same file system, so the final
    renames cannot fail across devices, e.g. when the output is a mount point), then moved in; report.json last."""
    staging = Path(tempfile.mkdtemp(dir=out, prefix=".staging-"))
    try:
        model.to("cpu").save_pretrained(staging, safe_serialization=True)
        tokenizer_for_saving(tokenizer).save_pretrained(staging)
        if added_rows:
            with open(staging / "agora_added.jsonl", "w", encoding="utf-8") as f:
                for row in added_rows:
                    f.write(json_text(row, what="agora_added.jsonl") + "\n")
        if rounds:
            plot_rounds(rounds, metric, staging / "rounds.png", report.mode)
        if sentence is not None:  # --compatible_with: the sentence-transformers files (finetuning.compatible)
            sentence(staging)
        make_shareable(staging)  # mkdtemp is 0700: the files get ordinary modes
        if (out / REPORT).exists():
            (out / REPORT).unlink()  # (overwrite) an interrupted replacement must not look finished
        for stale in ("agora_added.jsonl", "rounds.png", *SENTENCE_FILES):  # an earlier run's, not this one's
            if (out / stale).exists() and not (staging / stale).exists():
                shutil.rmtree(out / stale) if (out / stale).is_dir() else (out / stale).unlink()
        for item in staging.iterdir():
            target = out / item.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(item, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_report(out, report)


TEACHER_DIR = "teacher"  # save_teacher: the fine-tuned teacher / labeler beside the student


def save_teacher(out: Path, labeler, report: FinetuneReport) -> None:
    """The labeler's model + tokenizer as out/teacher (staged, then moved in); the report's labeler records it.
    An ensemble teacher (teachers.EnsembleModel) has no single checkpoint: its best member on dev is saved, and
    the report says so."""
    from bortify.finetuning.teachers import EnsembleModel

    model, note = labeler.model, None
    if isinstance(model, EnsembleModel):
        model = model.members[0]
        chosen = next((c for c in (labeler.selection or {}).get("candidates", []) if c.get("members")), None)
        note = f"the ensemble's best member on dev ({chosen['members'][0] if chosen else 'the first'})"
    staging = Path(tempfile.mkdtemp(dir=out, prefix=".staging-teacher-"))
    try:
        model.to("cpu").save_pretrained(staging, safe_serialization=True)
        tokenizer_for_saving(labeler.tokenizer).save_pretrained(staging)
        make_shareable(staging)
        if (out / TEACHER_DIR).is_dir():
            shutil.rmtree(out / TEACHER_DIR)
        os.replace(staging, out / TEACHER_DIR)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report.labeler["saved_to"] = TEACHER_DIR
    if note:
        report.labeler["saved_model"] = note
