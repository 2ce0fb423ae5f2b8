"""`bortify card` and the card stage of `bortify run`: assemble the RELEASE FOLDER that `push` uploads.

Here are the stage's arguments (CardArguments + bortify.hub.card.CardOptions), its library function
(`build_release` -> bortify.reports.CardReport) and the command; bortify.hub.card renders the card itself.

    <run>/card/
      config.json, model.safetensors, tokenizer files   <- finetune dir if present, else pretrain dir
      README.md                                         <- the model card (bortify.hub.card)
      pareto.png, rounds.png                            <- extraction / Agora plots, when the stages made them
      accuracy_speed.png                                <- accuracy vs sentences/s of the run's models (card_plots),
                                                           when finetune/compress/bench measured two points or more
      card_evidence.json                                <- every figure the card states, machine-readable

Checkpoints/, optimizer state and other Trainer bookkeeping are not copied, nor any run record
(stage_done.json): the folder holds only what is released. tokenizer.json loses the run's truncation and
padding settings; tokenizer_config.json loses the leftovers of the calls that made it (`is_local`, `max_length`,
`stride`, ...) and its `model_max_length` becomes the training length (within the position table), so
`pipeline(..., truncation=True)` cuts any text where the model was trained. config.json and tokenizer_config.json
lose remote-code hooks (`auto_map`, `custom_pipelines`): a release loads without trust_remote_code
(bortify.hygiene). The folder is assembled next to its
destination and moved into place at the end, so a half-written release is never visible.

Replacing (`--overwrite`, or the pipeline redoing an unfinished card) only ever replaces a previous release
folder: README.md + card_evidence.json and nothing but release files. Any other directory (a run directory,
the working directory) is refused, and so is an output_dir that is, contains or is inside an input
(bortify.outputs, the contract every stage's output folder follows; the release keeps no marker file).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from bortify.formatting import fmt_params
from bortify.hub.card import (REPO_PLACEHOLDER, CardError, CardEvidence, CardOptions, collect_evidence, example_literal,
                              render_card, shape_text, speed_text)
from bortify.hub.card_plots import ACCURACY_SPEED_FILE, plot_accuracy_speed
from bortify.reports import CardReport, Record
from bortify.utils import check_finite_weights, json_text, non_finite_paths
from bortify.outputs import claim
from bortify.utils import (TOKENIZER_FILES, make_shareable, overwrite_field, redact_secrets, write_bytes_atomic,
                           write_json_atomic)

# What a release folder holds from a checkpoint directory (globs); nothing else is copied.
CHECKPOINT_FILES = [
    "config.json", "generation_config.json", "model.safetensors", "model-*.safetensors", "model.safetensors.index.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.txt",
    "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model", "chat_template.jinja",
]
MARKER = "README.md"
EVIDENCE = "card_evidence.json"
# What a release folder made by bortify may hold is bortify.outputs.OUTPUTS["card"]: a folder with anything else is
# never replaced.


@dataclass
class CardArguments:
    output_dir: str = field(metadata={"help": "Release folder to write (checkpoint + README.md card + plots)."})
    extract_dir: Optional[str] = field(default=None, metadata={"help": "Output directory of `bortify extract` (report.json, pareto.png)."})
    pretrain_dir: Optional[str] = field(default=None, metadata={"help": "Output directory of `bortify pretrain` (checkpoint + report.json)."})
    finetune_dir: Optional[str] = field(default=None, metadata={"help": "Output directory of `bortify finetune` (checkpoint + report.json, rounds.png)."})
    model_dir: Optional[str] = field(default=None, metadata={
        "help": "Checkpoint to release (default: --finetune_dir if given, else --pretrain_dir)."})
    compare_dir: Optional[str] = field(default=None, metadata={
        "help": "Output directory of `bortify compare` (report.json): the card states the negative flip rate."})
    bench_dir: Optional[str] = field(default=None, metadata={
        "help": "Output directory of `bortify bench` (report.json): the card's latency line comes from it "
                "instead of the card's own measurement."})
    compress_dir: Optional[str] = field(default=None, metadata={
        "help": "Output directory of `bortify compress`: the release ships its onnx/ folder and the card states "
                "the compressed sizes, scores and int8 speed."})
    overwrite: bool = overwrite_field()  # only ever replaces a release folder made by bortify


def _copy_checkpoint(src: Path, dst: Path) -> list[str]:
    copied = []
    for pattern in CHECKPOINT_FILES:
        for path in sorted(src.glob(pattern)):
            if path.is_file() and not (dst / path.name).exists():
                shutil.copy2(path, dst / path.name)
                copied.append(path.name)
    return copied


def _copy_sentence_transformer(pretrain_dir: str | None, model_dir: Path, dst: Path) -> list[str]:
    """The pretrained student's sentence-transformers files (`bortify pretrain --compatible_with`, docs/methods/04-updates.md
    §4), when it has them, so `SentenceTransformer(RELEASE)` loads that encoder with its projection into the old
    model's space: in 0_Transformer/ when the release's root holds the fine-tuned model, else at the root."""
    from bortify.compatible_embeddings.sentence import MODULES_FILE, copy_sentence_folder

    if not pretrain_dir or not (Path(pretrain_dir) / MODULES_FILE).is_file():
        return []
    same = Path(pretrain_dir).resolve() == model_dir.resolve()
    return copy_sentence_folder(pretrain_dir, dst, CHECKPOINT_FILES, encoder_path="" if same else "0_Transformer")


def _copy_finetune_sentence(finetune_dir: str | None, model_dir: Path, dst: Path) -> list[str]:
    """`bortify finetune --compatible_with`'s sentence-transformers files (docs/methods/04-updates.md §4.4), when the release's
    root is that fine-tuned model: cls pooling + the projection trained with it, at the root."""
    from bortify.compatible_embeddings.sentence import MODULES_FILE, copy_sentence_folder

    if not finetune_dir or not (Path(finetune_dir) / MODULES_FILE).is_file():
        return []
    if Path(finetune_dir).resolve() != model_dir.resolve():
        return []
    return copy_sentence_folder(finetune_dir, dst, CHECKPOINT_FILES, encoder_path="")


def _copy_onnx(compress_dir: str | None, dst: Path) -> list[str]:
    """`bortify compress`'s onnx/model.onnx and onnx/model_quantized.onnx, where optimum and transformers.js look."""
    src = Path(compress_dir) / "onnx" if compress_dir else None
    if src is None or not src.is_dir():
        return []
    (dst / "onnx").mkdir()
    names = [p.name for p in sorted(src.glob("*.onnx")) if p.is_file()]
    for name in names:
        shutil.copy2(src / name, dst / "onnx" / name)
    return [f"onnx/{n}" for n in names]


def _find_image(stage_dir: str | None, name: str | None, default: str) -> Path | None:
    """A stage's plot: the file its report names (`name`), else `default`, in the stage directory."""
    if not stage_dir:
        return None
    candidates = [Path(name), Path(stage_dir) / name] if name else []
    candidates.append(Path(stage_dir) / default)
    return next((p for p in candidates if p.is_file()), None)


def build_release(args: CardArguments, options: CardOptions) -> CardReport:
    """Assemble the release folder; return what was made (a CardReport with its summary lines)."""
    stage_dirs = {k: v for k, v in {"extract": args.extract_dir, "pretrain": args.pretrain_dir,
                                    "finetune": args.finetune_dir, "compare": args.compare_dir,
                                    "bench": args.bench_dir, "compress": args.compress_dir}.items() if v}
    for name, path in stage_dirs.items():
        if not Path(path).is_dir():
            raise CardError(f"--{name}_dir {path} does not exist; pass the output directory of `bortify {name}`.")
    model_dir = Path(args.model_dir or args.finetune_dir or args.pretrain_dir or "")
    if not (args.model_dir or args.finetune_dir or args.pretrain_dir):
        raise CardError("Nothing to release: pass --finetune_dir or --pretrain_dir (or --model_dir), "
                        "or run the card stage after the pretrain/finetune stages.")
    if not (model_dir / "config.json").is_file() or not list(model_dir.glob("*.safetensors")):
        raise CardError(f"{model_dir} is not a saved checkpoint (needs config.json and model.safetensors).")
    check_finite_weights(model_dir, f"The model {model_dir}")  # a diverged run's weights are no release
    out = Path(args.output_dir)
    final = out.resolve()
    # assembled beside the destination and swapped in at the end (bortify.outputs): a half-written release is never
    # visible, and only a previous release folder is ever replaced
    with claim("card", out, overwrite=args.overwrite,
               inputs={**{f"--{k}_dir": v for k, v in stage_dirs.items()}, "--model_dir": str(model_dir)}) as output:
        tmp = output.work_dir()
        copied = _copy_checkpoint(model_dir, tmp)
        if not any((tmp / f).exists() for f in TOKENIZER_FILES):  # e.g. a student saved without its tokenizer
            for other in [stage_dirs.get(s) for s in ("finetune", "pretrain")]:
                if other and any((Path(other) / f).exists() for f in TOKENIZER_FILES):
                    copied += [f for f in _copy_checkpoint(Path(other), tmp) if f not in ("config.json",) and "safetensors" not in f]
                    break
        release_tokenizer(tmp / "tokenizer.json")
        copied += (_copy_finetune_sentence(stage_dirs.get("finetune"), model_dir, tmp)
                   or _copy_sentence_transformer(stage_dirs.get("pretrain"), model_dir, tmp))
        release_configs(tmp)  # the sentence-transformers sub-folder's config.json too
        copied += _copy_onnx(stage_dirs.get("compress"), tmp)
        evidence = collect_evidence(stage_dirs, tmp, options)
        if bad := non_finite_paths(evidence_json(evidence)):  # a NaN score would be printed as a measured result
            raise CardError(f"The stage reports hold non-finite numbers (NaN/inf) at {bad[:5]}: a card would state "
                            "them as measured results. Re-run the stage that wrote them (a diverged training run: "
                            "lower its learning rate).")
        images = {}
        for key, stage, name in (("pareto", "extract", evidence.extract.plot), ("rounds", "finetune", None)):
            image = _find_image(stage_dirs.get(stage), name, f"{key}.png")
            if image is not None:
                shutil.copy2(image, tmp / f"{key}.png")
                images[key] = f"{key}.png"
        if evidence.accuracy_speed:  # drawn here from the reports (docs/methods/05-compression.md §5.s), not copied
            plot_accuracy_speed(evidence.accuracy_speed, tmp / ACCURACY_SPEED_FILE)
            images["accuracy_speed"] = ACCURACY_SPEED_FILE
        release_tokenizer_configs(tmp, training_length(evidence))  # before make_shareable sets the modes
        evidence = _without_local_paths(evidence, stage_dirs)
        card = render_card(evidence, options, load_from=options.repo_id or REPO_PLACEHOLDER, images=images)
        card.save(tmp / MARKER)
        write_json_atomic(tmp / EVIDENCE, redact_secrets(_without_local_paths(
            {"stage_dirs": stage_dirs, "model_dir": str(model_dir), **evidence_json(evidence)}, stage_dirs)))
        make_shareable(tmp)
    return summarize(out, evidence, str(final), copied)  # on disk now: the local summary shows the local path


def evidence_json(evidence: CardEvidence) -> dict:
    """The evidence as JSON data (its reports as their report.json form), in card_evidence.json's key order."""
    return {k: v.to_dict() if isinstance(v, Record) else v for k, v in evidence.items()}


def release_tokenizer(path: Path) -> None:
    """Clear the run's truncation/padding from a copied tokenizer.json: users of the release set their own (the
    card states the training max length)."""
    if not path.is_file():
        return
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CardError(f"{path.name} of the checkpoint is not valid JSON ({exc}); re-save the tokenizer.") from exc
    if isinstance(data, dict) and (data.get("truncation") is not None or data.get("padding") is not None):
        data["truncation"] = data["padding"] = None
        write_bytes_atomic(path, json_text(data, what=str(path), ensure_ascii=False, indent=2).encode("utf-8"))


def release_configs(folder: Path) -> None:
    """Drop remote-code hooks (auto_map, custom_pipelines) from every config.json of the release folder."""
    from bortify.hygiene import clean_release_config

    for path in sorted(folder.rglob("config.json")):
        data = _read_json(path)
        if isinstance(data, dict) and clean_release_config(data):
            write_json_atomic(path, data)


def training_length(evidence: CardEvidence) -> int | None:
    """The length the released model was trained on: the finetune report's max_length for a task model, else the
    pretrain report's (None: not recorded)."""
    ft, pt = evidence.finetune, evidence.pretrain
    lengths = ([getattr(ft, "max_length", None)] if evidence.is_task else []) + [getattr(pt, "seq_len", None)]
    return next((int(n) for n in lengths if isinstance(n, int) and n > 0), None)


def position_table(config: dict) -> int | None:
    """The longest input the model's position embeddings take (RoBERTa-style models lose padding_idx + 1)."""
    limit = config.get("max_position_embeddings")
    if not isinstance(limit, int):
        return None
    if config.get("model_type") in ("roberta", "xlm-roberta", "camembert", "longformer", "mpnet"):
        limit -= int(config.get("pad_token_id") or 0) + 1
    return limit


def release_tokenizer_configs(folder: Path, max_length: int | None) -> None:
    """Every tokenizer_config.json of the release without call leftovers, with model_max_length set to the
    training length (else the old value), never above the model's position table."""
    from bortify.hygiene import clean_tokenizer_config

    for path in sorted(folder.rglob("tokenizer_config.json")):
        data = _read_json(path)
        if not isinstance(data, dict):
            continue
        config = _read_json(path.parent / "config.json") or _read_json(folder / "config.json") or {}
        table = position_table(config) if isinstance(config, dict) else None
        current = data.get("model_max_length")
        length = max_length or (current if isinstance(current, int) and current < 10**9 else None) or table
        if table and length:
            length = min(length, table)
        cleaned = clean_tokenizer_config(data, length)
        if cleaned != data:
            write_json_atomic(path, cleaned)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, json.JSONDecodeError) as exc:
        raise CardError(f"{path.name} of the checkpoint is not valid JSON ({exc}); re-save the model.") from exc


def _without_local_paths(obj, stage_dirs: dict):
    """Replace this machine's run directory by `<run>`, and any other absolute path by `<local>/NAME`, so a
    pushed card and its evidence leak no local paths."""
    dirs = [os.path.abspath(d) for d in stage_dirs.values() if d]
    root = (os.path.commonpath(dirs) if len(dirs) > 1 else os.path.dirname(dirs[0])) if dirs else None

    def clean(value):
        if isinstance(value, str) and value:
            absolute = os.path.abspath(value) if os.path.sep in value else value
            if root and (absolute == root or absolute.startswith(root + os.path.sep)):
                return "<run>" + absolute[len(root):]
            if os.path.isabs(value) or value.startswith("~"):
                return f"<local>/{os.path.basename(value.rstrip(os.path.sep))}"
            return value
        if isinstance(value, Record):
            return type(value).from_dict(clean(value.to_dict()))
        if isinstance(value, CardEvidence):
            return CardEvidence.from_dict(clean(dict(value)))
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return clean(obj)


def summarize(out: Path, evidence: CardEvidence, load_from: str, copied: list[str]) -> CardReport:
    params = evidence.parameters or {}
    ft = evidence.finetune
    lat = evidence.latency
    shape = evidence.shape
    example = example_literal(ft, evidence.kind)
    lines = [
        f"release folder: {out} ({len(copied)} checkpoint files + README.md card)",
        f"model: {evidence.architecture} " + " ".join(f"{k}={shape_text(shape.get(k))}" for k in "DAHI")
        + f", {fmt_params(params.get('total'))} parameters "
        f"({fmt_params(params.get('effective'))} effective), {params.get('bytes', 0) / 2**20:.1f} MiB",
        "scores: " + (", ".join(f"test {k}={v:.4f}" for k, v in ft.test.items()) or
                      ", ".join(f"dev {k}={v:.4f}" for k, v in ft.dev.items()) or "not measured"),
        "CPU latency: " + (f"{lat['model_seconds'] * 1e3:.1f} ms vs {lat['source_seconds'] * 1e3:.1f} ms for "
                           f"{lat['source']} ({speed_text(lat['speedup'])}; batch {lat['batch_size']} x {lat['seq_len']})"
                           if lat else "not measured"),
        "how to load:",
        "    from transformers import pipeline",
        f"    classifier = pipeline(\"text-classification\", model=\"{load_from}\")"
        if evidence.is_task else f"    encoder = pipeline(\"feature-extraction\", model=\"{load_from}\")",
        f"    print(classifier({example}, truncation=True))" if evidence.is_task
        else f"    print(len(encoder({example}, truncation=True)[0]))",
    ]
    return CardReport(release_dir=str(out), kind_of_model=evidence.kind, parameters=params.get("total"),
                      test=dict(ft.test), dev=dict(ft.dev), latency_speedup=lat["speedup"] if lat else None, lines=lines)


def run_stage(config: dict, *, overwrite: bool = False) -> dict:
    """The card stage from a mapping of settings, as `bortify run` runs it (bortify.pipeline.run_config); returns
    its record. For older callers, `stage_dirs` ({stage: output dir}) fills extract_dir / pretrain_dir /
    finetune_dir and `push_repo_id` stands for the recipe's push.repo_id, as the stage table wires them."""
    from bortify.pipeline import run_config, stage_config, stage_spec

    config = dict(config)
    outputs = config.pop("stage_dirs", None) or {}
    push = {"repo_id": config.pop("push_repo_id", None)}
    output_dir = config.pop("output_dir")
    config = {**stage_config(stage_spec("card"), {"card": config, "push": push}, outputs, Path(".")),
              "output_dir": output_dir}
    return run_config("card", config, overwrite=overwrite).record()


def main(argv: list[str] | None = None) -> int:
    """`bortify card ...` (the stage table's card entry, run by bortify.pipeline.run_command)."""
    from bortify.pipeline import run_command

    return run_command("card", argv)
