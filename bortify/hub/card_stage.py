"""The card stage of `bortify run`: assemble the RELEASE FOLDER that `push` uploads.

    <run>/card/
      config.json, model.safetensors, tokenizer files   <- finetune dir if present, else pretrain dir
      README.md                                         <- the model card (bortify.hub.card)
      pareto.png, rounds.png                            <- extraction / Agora plots, when the stages made them
      card_evidence.json                                <- every figure the card states, machine-readable

Checkpoints/, optimizer state and other Trainer bookkeeping are not copied. The folder is assembled next
to its destination and moved into place at the end, so a half-written release is never visible.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from bortify.hub.card import CardError, CardOptions, collect_evidence, fmt_params, render_card, scores, speed_text
from bortify.utils import check_output_dir, make_shareable, write_json_atomic

# What a release folder holds from a checkpoint directory (globs); nothing else is copied.
CHECKPOINT_FILES = [
    "config.json", "generation_config.json", "model.safetensors", "model-*.safetensors", "model.safetensors.index.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.txt",
    "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model", "chat_template.jinja",
]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")
MARKER = "README.md"


@dataclass
class CardArguments:
    output_dir: str = field(metadata={"help": "Release folder to write (checkpoint + README.md card + plots)."})
    extract_dir: Optional[str] = field(default=None, metadata={"help": "Output directory of `bortify extract` (report.json, pareto.png)."})
    pretrain_dir: Optional[str] = field(default=None, metadata={"help": "Output directory of `bortify pretrain` (checkpoint + report.json)."})
    finetune_dir: Optional[str] = field(default=None, metadata={"help": "Output directory of `bortify finetune` (checkpoint + report.json, rounds.png)."})
    model_dir: Optional[str] = field(default=None, metadata={
        "help": "Checkpoint to release (default: --finetune_dir if given, else --pretrain_dir)."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing release folder."})


def _copy_checkpoint(src: Path, dst: Path) -> list[str]:
    copied = []
    for pattern in CHECKPOINT_FILES:
        for path in sorted(src.glob(pattern)):
            if path.is_file() and not (dst / path.name).exists():
                shutil.copy2(path, dst / path.name)
                copied.append(path.name)
    return copied


def _find_image(stage_dir: str | None, report_key: str, default: str) -> Path | None:
    if not stage_dir:
        return None
    report_path = Path(stage_dir) / "report.json"
    candidates = []
    if report_path.is_file():
        try:
            value = json.loads(report_path.read_text(encoding="utf-8")).get(report_key)
        except (json.JSONDecodeError, AttributeError):
            value = None
        if isinstance(value, str):
            candidates += [Path(value), Path(stage_dir) / value]
    candidates.append(Path(stage_dir) / default)
    return next((p for p in candidates if p.is_file()), None)


def build_release(args: CardArguments, options: CardOptions, *, done_marker: str | None = None) -> dict:
    """Assemble the release folder; return the stage summary (with `summary_lines`).

    With `done_marker` (the pipeline's stage_done.json), a folder without that marker is an interrupted
    earlier attempt and is replaced: the card is cheap and rebuilt from the same inputs.
    """
    stage_dirs = {k: v for k, v in {"extract": args.extract_dir, "pretrain": args.pretrain_dir,
                                    "finetune": args.finetune_dir}.items() if v}
    for name, path in stage_dirs.items():
        if not Path(path).is_dir():
            raise CardError(f"--{name}_dir {path} does not exist; pass the output directory of `bortify {name}`.")
    model_dir = Path(args.model_dir or args.finetune_dir or args.pretrain_dir or "")
    if not (args.model_dir or args.finetune_dir or args.pretrain_dir):
        raise CardError("Nothing to release: pass --finetune_dir or --pretrain_dir (or --model_dir), "
                        "or run the card stage after the pretrain/finetune stages.")
    if not (model_dir / "config.json").is_file() or not list(model_dir.glob("*.safetensors")):
        raise CardError(f"{model_dir} is not a saved checkpoint (needs config.json and model.safetensors).")
    out = Path(args.output_dir)
    check_output_dir(out, args.overwrite or (done_marker is not None and not (out / done_marker).exists()))

    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        copied = _copy_checkpoint(model_dir, tmp)
        if not any((tmp / f).exists() for f in TOKENIZER_FILES):  # e.g. a student saved without its tokenizer
            for other in [stage_dirs.get(s) for s in ("finetune", "pretrain")]:
                if other and any((Path(other) / f).exists() for f in TOKENIZER_FILES):
                    copied += [f for f in _copy_checkpoint(Path(other), tmp) if f not in ("config.json",) and "safetensors" not in f]
                    break
        images = {}
        for key, stage, report_key, default in (("pareto", "extract", "plot", "pareto.png"),
                                                ("rounds", "finetune", "rounds_plot", "rounds.png")):
            image = _find_image(stage_dirs.get(stage), report_key, default)
            if image is not None:
                shutil.copy2(image, tmp / f"{key}.png")
                images[key] = f"{key}.png"
        evidence = _without_local_paths(collect_evidence(stage_dirs, tmp, options), stage_dirs)
        load_from = options.repo_id or str(out.resolve())
        card = render_card(evidence, options, load_from=load_from, images=images)
        card.save(tmp / "README.md")
        write_json_atomic(tmp / "card_evidence.json", _without_local_paths(
            {"stage_dirs": stage_dirs, "model_dir": str(model_dir), **evidence}, stage_dirs))
        make_shareable(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summarize(out, evidence, str(out.resolve()), copied)  # on disk now; the card names the repo


def _without_local_paths(obj, stage_dirs: dict):
    """Replace this machine's run directory by `<run>` so a pushed card and its evidence leak no local paths."""
    dirs = [os.path.abspath(d) for d in stage_dirs.values() if d]
    if not dirs:
        return obj
    root = os.path.commonpath(dirs) if len(dirs) > 1 else os.path.dirname(dirs[0])

    def clean(value):
        if isinstance(value, str) and value:
            absolute = os.path.abspath(value) if os.path.sep in value else value
            if absolute == root or absolute.startswith(root + os.path.sep):
                return "<run>" + absolute[len(root):]
            return value
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return clean(obj)


def summarize(out: Path, evidence: dict, load_from: str, copied: list[str]) -> dict:
    params = evidence["parameters"] or {}
    test = scores(evidence["finetune"].get("test"))
    dev = scores(evidence["finetune"].get("dev"))
    lat = evidence["latency"]
    lines = [
        f"release folder: {out} ({len(copied)} checkpoint files + README.md card)",
        f"model: {evidence['architecture']} D={evidence['shape']['D']} A={evidence['shape']['A']} "
        f"H={evidence['shape']['H']} I={evidence['shape']['I']}, {fmt_params(params.get('total'))} parameters "
        f"({fmt_params(params.get('effective'))} effective), {params.get('bytes', 0) / 2**20:.1f} MiB",
        "scores: " + (", ".join(f"test {k}={v:.4f}" for k, v in test.items()) or
                      ", ".join(f"dev {k}={v:.4f}" for k, v in dev.items()) or "not measured"),
        "CPU latency: " + (f"{lat['model_seconds'] * 1e3:.1f} ms vs {lat['source_seconds'] * 1e3:.1f} ms for "
                           f"{lat['source']} ({speed_text(lat['speedup'])}; batch {lat['batch_size']} x {lat['seq_len']})"
                           if lat else "not measured"),
        "how to load:",
        "    from transformers import pipeline",
        f"    classifier = pipeline(\"text-classification\", model=\"{load_from}\")"
        if evidence["kind"] == "task" else f"    encoder = pipeline(\"feature-extraction\", model=\"{load_from}\")",
        "    print(classifier(\"A gripping, beautifully acted film.\"))"
        if evidence["kind"] == "task" else "    print(len(encoder(\"A gripping, beautifully acted film.\")[0]))",
    ]
    return {"release_dir": str(out), "kind": evidence["kind"], "parameters": params.get("total"),
            "test": test, "dev": dev, "latency_speedup": lat["speedup"] if lat else None, "summary_lines": lines}


def run_stage(config: dict, *, overwrite: bool = False) -> dict:
    """`bortify run` entry point: config = the recipe's card section + output_dir + stage_dirs."""
    from bortify.recipes import args_from_dict

    config = dict(config)
    stage_dirs = config.pop("stage_dirs", None) or {}
    for stage in ("extract", "pretrain", "finetune"):
        if stage_dirs.get(stage) and config.get(f"{stage}_dir") is None:
            config[f"{stage}_dir"] = stage_dirs[stage]
    config["overwrite"] = bool(overwrite or config.get("overwrite"))
    args, options = args_from_dict((CardArguments, CardOptions), config, where="recipe [card]")
    from bortify.pipeline import DONE_FILE

    return build_release(args, options, done_marker=DONE_FILE)
