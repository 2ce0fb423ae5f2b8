"""`pretrain(...)`: the library function behind `bortify pretrain` and the pipeline's pretrain stage.

Everything that can be wrong with the inputs (student config, teacher kind, vocabularies, corpus) is checked
before any weight is loaded for training; then the student is distilled through `DistillationTrainer` and
written as a standard BertForMaskedLM checkpoint with the teacher's tokenizer, the training log
(`trainer_state.json`) and `report.json` (the marker of a finished run; what the model card reads).

The steps, in order (each a function here): the output folder is claimed (bortify.outputs: not an input, not
foreign, not finished unless --overwrite, locked), `_guard_output_dir` (an unfinished run's arguments, the checkpoint
to resume), `load_student_config`, `plan_distillation` (teacher config + tokenizer, KD mode, layer map, relation
settings), `load_pretraining_data`, `prepare_output_dir`, `build_models`, `heldout_mlm_loss` (before),
`DistillationTrainer.train`, `_save_final`, `heldout_mlm_loss` (after), `build_report`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import datasets
import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    PrinterCallback,
    Trainer,
    TrainingArguments,
    set_seed,
)

from bortify.data import resolve_model
from bortify.resources import is_embedded
from bortify.pretraining.arguments import DataArguments, DistillationArguments, ModelArguments
from bortify.pretraining.compat import CompatResume, finish_compat, plan_compat, setup_compat
from bortify.heldout import load_heldout
from bortify.pretraining.data import load_pretraining_data, make_collator
from bortify.pretraining.losses import IGNORE_INDEX, default_relation_heads, masked_cross_entropy
from bortify.pretraining.rundir import (
    RUN_ARGS_NAME,
    RunDirError,
    changed_run_args,
    checkpoint_problem,
    checkpoint_step,
    find_resume_checkpoint,
    run_args_record,
)
from bortify.pretraining.trainer import DistillationStudent, DistillationTrainer
from bortify.reports import PretrainReport, write_report
from bortify.slicing import default_layer_map, init_from_teacher
from bortify.trainer import FiniteGuard
from bortify.outputs import Output, claim, refuse_inputs
from bortify.utils import (check_finite_weights, check_sequence_length, is_hub_repo_id,
                           torch_threads, write_json_atomic)

logger = logging.getLogger(__name__)


class PretrainError(ValueError):
    """Bad pretraining input, reported before training starts."""


def _check_local(spec: str, what: str) -> None:
    """A spec that is neither an existing path nor an embedded name nor a valid Hub repo id (huggingface_hub's
    rule: `name` or `owner/name`) is a local path that does not exist; say so instead of the Hub's error."""
    spec = str(spec)
    if os.path.exists(os.path.expanduser(spec)) or is_embedded(spec) or is_hub_repo_id(spec):
        return
    raise PretrainError(f"{what} {spec!r} does not exist. Give an existing directory/file, a Hub name, or an "
                        "embedded model (bortify resources list).")


def load_student_config(spec: str) -> BertConfig:
    """A BertConfig from a directory with config.json, a config.json path, or a Hub/embedded model name."""
    _check_local(spec, "student_config")
    path = resolve_model(spec)
    try:
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            config = AutoConfig.for_model(**data) if "model_type" in data else BertConfig(**data)
        else:
            config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise PretrainError(f"Cannot read a student config from {spec!r}: {exc}. Pass the extraction output "
                            "directory, a config.json, or a model name.") from exc
    if config.model_type != "bert":
        raise PretrainError(f"The student config {spec!r} is model_type {config.model_type!r}; bortify pretrains "
                            "BERT students (model_type 'bert'). Extract one with `bortify extract`.")
    return config


def teacher_kind(config) -> str:
    """'mlm' when the teacher checkpoint declares a masked-LM head, else 'encoder'."""
    archs = getattr(config, "architectures", None) or []
    return "mlm" if any(a.endswith("ForMaskedLM") for a in archs) else "encoder"


def resolve_kd_mode(kd_mode: str, kind: str) -> str:
    if kd_mode == "auto":
        return "logit" if kind == "mlm" else "representation"
    if kd_mode == "logit" and kind != "mlm":
        raise PretrainError("kd_mode 'logit' needs a teacher with a masked-LM head (its config lists a *ForMaskedLM "
                            "architecture); this teacher is an encoder. Use kd_mode 'representation' or 'auto'.")
    return kd_mode


def check_compatible(student_cfg: BertConfig, teacher_cfg, tokenizer, kd_mode: str, seq_len: int) -> None:
    if kd_mode == "logit" and student_cfg.vocab_size != teacher_cfg.vocab_size:
        raise PretrainError(f"Vocabulary mismatch: the student has vocab_size {student_cfg.vocab_size}, the teacher "
                            f"{teacher_cfg.vocab_size}. Logit KD compares distributions over the same vocabulary: "
                            f"set the student's vocab_size to {teacher_cfg.vocab_size} (extract from this teacher).")
    if student_cfg.vocab_size < len(tokenizer):
        raise PretrainError(f"Vocabulary mismatch: the teacher's tokenizer has {len(tokenizer)} tokens but the student "
                            f"has vocab_size {student_cfg.vocab_size}; set the student's vocab_size to at least "
                            f"{len(tokenizer)}.")
    check_sequence_length(seq_len, student_cfg, "--seq_len", "the student")
    check_sequence_length(seq_len, teacher_cfg, "--seq_len", "the teacher")


def pretrain(model_args: ModelArguments, data_args: DataArguments, training_args: DistillationArguments, *,
             overwrite: bool = False) -> PretrainReport | None:
    """Distil a pretrained masked-LM student; return its report (None on processes other than the main one of a
    distributed run). See the module docstring.

    `model_args.overwrite` (or the `overwrite` keyword, the same) replaces a finished run in the output directory
    and starts an unfinished one again instead of resuming it. `model_args.torch_threads` applies for the call."""
    overwrite = bool(overwrite or model_args.overwrite)
    inputs = {"--teacher": model_args.teacher, "--student_config": model_args.student_config,
              "--corpus": data_args.corpus, "--compatible_with": model_args.compatible_with}
    # The output folder (bortify.outputs): an unfinished run there resumes from its checkpoints; a replacement
    # (--overwrite) trains in a sibling folder swapped in at the end. Only the main process locks and swaps.
    with torch_threads(model_args.torch_threads), claim("pretrain", training_args.output_dir, overwrite=overwrite,
                                                        inputs=inputs,
                                                        main_process=training_args.process_index == 0) as output:
        return _pretrain(model_args, data_args, training_args, overwrite, output)


def _guard_output_dir(out: Path, model_args: ModelArguments, data_args: DataArguments,
                      training_args: DistillationArguments, overwrite: bool) -> str | None:
    """Refuse, before any work, to resume an unfinished run started with other arguments (the folder itself was
    claimed before: bortify.outputs). Returns the checkpoint to resume."""
    try:
        if not overwrite:
            changes = changed_run_args(out, run_args_record(model_args, data_args, training_args))
            if changes:
                raise PretrainError(
                    f"The unfinished run in {out} was started with other arguments ({'; '.join(changes)}); resuming "
                    "it would mix two runs. Pass --overwrite to start it again, or choose another --output_dir.")
        return _resume_checkpoint(out, training_args.resume_from_checkpoint, overwrite)
    except RunDirError as exc:
        raise PretrainError(str(exc)) from exc


def _resume_checkpoint(out: Path, requested, overwrite: bool) -> str | None:
    """The checkpoint to resume from: the one asked for (checked complete), else the newest complete one of an
    unfinished run (a newer, half-written one is skipped, saying why), else None."""
    if requested not in (None, True, "true", "True"):
        problem = checkpoint_problem(requested) if os.path.isdir(requested) else "it is not a directory"
        if problem:
            raise PretrainError(f"--resume_from_checkpoint {requested}: cannot resume from it: {problem}. Give a "
                                "complete checkpoint-N directory, or omit the flag.")
        return str(requested)
    if overwrite and requested is None:
        return None
    found, skipped = find_resume_checkpoint(out)
    for path, why in skipped:
        print(f"[bortify pretrain] skipping {path.name}: {why}; "
              + (f"resuming from the newest complete checkpoint, {found.name}" if found else
                 "no complete checkpoint is left, starting from step 0"), flush=True)
    if found is None and requested is not None:
        raise PretrainError(f"--resume_from_checkpoint: no complete checkpoint-* directory in {out}.")
    return str(found) if found else None


@dataclass
class KDPlan:
    """What the inputs decide before any weight is loaded: the teacher's kind, the KD mode and its layers."""

    teacher_path: str
    teacher_cfg: object
    tokenizer: object
    kind: str  # 'mlm' | 'encoder'
    kd_mode: str  # 'logit' | 'representation'
    teacher_layers: list[int] | None = None  # 0-based teacher layer per student layer (bortify.slicing.default_layer_map)
    relation_heads: int | None = None
    relation_layer: int | None = None  # 0-based teacher layer distilled by attention relations


def load_teacher(spec: str, out: Path) -> tuple[str, object, object]:
    """(local path, config, tokenizer) of the teacher; refuses an output directory that overlaps its local copy."""
    _check_local(spec, "teacher")
    teacher_path = resolve_model(spec)
    refuse_inputs(out, {"--teacher": teacher_path})  # a Hub/embedded teacher's local copy
    try:
        return teacher_path, AutoConfig.from_pretrained(teacher_path), AutoTokenizer.from_pretrained(teacher_path)
    except (OSError, ValueError) as exc:
        raise PretrainError(f"Cannot load teacher {spec!r}: {exc}") from exc


def teacher_layers(args: DistillationArguments, n_student: int, n_teacher: int) -> list[int]:
    """0-based teacher layer for each student layer: --layer_map (1-based, as `hidden_states[j]` numbers layers)
    or the uniform default (bortify.slicing.default_layer_map, the same map slicing initialises from)."""
    asked = args.parsed_layer_map()
    if asked is None:
        return default_layer_map(n_student, n_teacher)
    if len(asked) != n_student or any(not 1 <= j <= n_teacher for j in asked):
        raise PretrainError(f"layer_map {asked} must give one teacher layer in 1..{n_teacher} for each of the "
                            f"student's {n_student} layers.")
    return [j - 1 for j in asked]


def relation_settings(args: DistillationArguments, student_cfg, teacher_cfg) -> tuple[int, int]:
    """(relation heads, 0-based teacher layer) of MiniLMv2 attention-relation KD, checked against both models."""
    n_teacher = teacher_cfg.num_hidden_layers
    asked = n_teacher if args.relation_teacher_layer == -1 else args.relation_teacher_layer
    if not 1 <= asked <= n_teacher:
        raise PretrainError(f"relation_teacher_layer {asked} is outside 1..{n_teacher}.")
    heads = args.relation_heads or default_relation_heads(
        student_cfg.hidden_size, teacher_cfg.hidden_size,
        max(student_cfg.num_attention_heads, teacher_cfg.num_attention_heads))
    for width, who in ((student_cfg.hidden_size, "student"), (teacher_cfg.hidden_size, "teacher")):
        if width % heads:
            raise PretrainError(f"relation_heads {heads} does not divide the {who}'s width {width}.")
    return heads, asked - 1


def plan_distillation(student_cfg: BertConfig, model_args: ModelArguments, data_args: DataArguments,
                      training_args: DistillationArguments, out: Path) -> KDPlan:
    """Load the teacher's config and tokenizer and decide the KD mode and its layers; every check is cheap."""
    teacher_path, teacher_cfg, tokenizer = load_teacher(model_args.teacher, out)
    kind = teacher_kind(teacher_cfg)
    plan = KDPlan(teacher_path, teacher_cfg, tokenizer, kind, resolve_kd_mode(model_args.kd_mode, kind))
    check_compatible(student_cfg, teacher_cfg, tokenizer, plan.kd_mode, data_args.seq_len)
    representation = plan.kd_mode == "representation"
    if representation or model_args.init == "teacher":
        n_teacher = getattr(teacher_cfg, "num_hidden_layers", None)
        if not n_teacher:
            raise PretrainError(f"Teacher {model_args.teacher!r} does not say its num_hidden_layers.")
        plan.teacher_layers = teacher_layers(training_args, student_cfg.num_hidden_layers, n_teacher)
    if representation and training_args.w_attn > 0:
        plan.relation_heads, plan.relation_layer = relation_settings(training_args, student_cfg, teacher_cfg)
    if training_args.max_steps <= 0:
        raise PretrainError("max_steps must be > 0 (pretraining is budgeted in optimiser steps).")
    return plan


def prepare_output_dir(output: Output, training_args: DistillationArguments, resume: str | None) -> Path:
    """The folder to train into, created now: the output folder itself (a new or resumed run) or, replacing a run,
    its sibling being built (bortify.outputs), where the Trainer writes its checkpoints. Says when the run resumes."""
    out = output.work_dir()
    training_args.output_dir = str(out)
    if resume:
        logger.warning("Resuming the unfinished run in %s from %s.", out, resume)
        print(f"[bortify pretrain] resuming from {resume}", flush=True)
    return out


def build_models(student_cfg: BertConfig, plan: KDPlan, model_args: ModelArguments,
                 training_args: DistillationArguments) -> tuple[nn.Module, DistillationStudent, dict | None]:
    """(frozen teacher, the trained module: student + KD projections, slicing report or None), seeded."""
    set_seed(training_args.seed)
    teacher_cls = AutoModelForMaskedLM if plan.kind == "mlm" else AutoModel
    teacher = teacher_cls.from_pretrained(plan.teacher_path, use_safetensors=True).eval().requires_grad_(False)
    check_finite_weights(teacher, f"The teacher {model_args.teacher!r} ({plan.teacher_path})")
    student = BertForMaskedLM(student_cfg)  # N(0, initializer_range=0.02) as Bort
    init_report = None
    if model_args.init == "teacher":  # docs/methods/01-extraction.md §1: slicing, from the KD layer map's teacher layers
        init_report = init_from_teacher(student, teacher, layer_map=plan.teacher_layers, importance="magnitude")
    representation = plan.kd_mode == "representation"
    projections, hidden_layers = None, []
    if representation and training_args.w_hidden > 0:
        hidden_layers = list(range(student_cfg.num_hidden_layers))
        if student_cfg.hidden_size != plan.teacher_cfg.hidden_size:  # TinyBERT's learned W_h, one per layer pair
            projections = nn.ModuleList(nn.Linear(student_cfg.hidden_size, plan.teacher_cfg.hidden_size)
                                        for _ in hidden_layers)
    wrapper = DistillationStudent(student, projections, hidden_layers,
                                  relation=representation and training_args.w_attn > 0)
    return teacher, wrapper, init_report


def _block_loss_sums(outputs, labels: torch.Tensor) -> torch.Tensor:
    """Trainer's `preprocess_logits_for_metrics`: per block, (sum of masked-LM cross-entropies, masked tokens).
    `outputs` holds DistillationStudent's logits and labels at the masked positions, in row-major order."""
    logits, gold = outputs[0], outputs[1]
    per_token = masked_cross_entropy(logits, gold, reduction="none")
    rows = (labels != IGNORE_INDEX).nonzero()[:, 0]
    sums = torch.zeros(labels.shape[0], device=per_token.device).index_add_(0, rows, per_token)
    counts = torch.zeros_like(sums).index_add_(0, rows, torch.ones_like(per_token))
    return torch.stack([sums, counts], dim=1)


def _per_token_mean(prediction) -> dict[str, float]:
    """Trainer's `compute_metrics`: the mean over every masked token of the held-out set (not a mean of batch means)."""
    sums = prediction.predictions
    return {"mlm_loss": float(sums[:, 0].sum() / max(sums[:, 1].sum(), 1.0))}


def heldout_mlm_loss(student: BertForMaskedLM, blocks: datasets.Dataset, collator, batch_size: int = 16, *,
                     use_cpu: bool = False) -> float:
    """Mean masked-LM cross-entropy of `student` over every masked token of `blocks`, by `Trainer.evaluate`
    (pass the static-masking collator so that two calls score identical masks). The MLM head runs at masked
    positions only (DistillationStudent). In a distributed run every process must call it (it gathers)."""
    was_training = student.training
    with tempfile.TemporaryDirectory(prefix="bortify-heldout-") as tmp:
        args = TrainingArguments(output_dir=tmp, per_device_eval_batch_size=batch_size, report_to="none",
                                 disable_tqdm=True, remove_unused_columns=False, label_names=["labels"],
                                 dataloader_num_workers=0, use_cpu=use_cpu)
        trainer = Trainer(model=DistillationStudent(student), args=args, data_collator=collator, eval_dataset=blocks,
                          preprocess_logits_for_metrics=_block_loss_sums, compute_metrics=_per_token_mean)
        trainer.remove_callback(PrinterCallback)  # the caller reports the number
        metrics = trainer.evaluate()
    student.train(was_training)
    return metrics["eval_mlm_loss"]


def _pretrain(model_args: ModelArguments, data_args: DataArguments, training_args: DistillationArguments,
              overwrite: bool, output: Output) -> PretrainReport | None:
    out, final_dir = Path(training_args.output_dir), training_args.output_dir
    resume = _guard_output_dir(out, model_args, data_args, training_args, overwrite)
    student_cfg = load_student_config(model_args.student_config)  # cheap checks first: configs, tokenizer, corpus
    plan = plan_distillation(student_cfg, model_args, data_args, training_args, out)
    compat_plan = plan_compat(model_args.compatible_with, data_args.compat_eval_dataset)  # docs/methods/04-updates.md §4
    heldout_record: dict = {}  # the run's test texts dropped from the corpus (docs/methods/09-heldout.md §9)
    train_blocks, held_blocks = load_pretraining_data(
        data_args.corpus, plan.tokenizer, seq_len=data_args.seq_len, text_column=data_args.text_column,
        split=data_args.corpus_split, config=data_args.corpus_config, heldout_fraction=data_args.heldout_fraction,
        max_heldout_blocks=data_args.max_heldout_blocks, max_train_texts=data_args.max_train_texts,
        seed=training_args.seed, num_proc=data_args.preprocessing_num_workers,
        heldout=load_heldout(data_args.heldout), record=heldout_record)
    out = prepare_output_dir(output, training_args, resume)
    teacher, wrapper, init_report = build_models(student_cfg, plan, model_args, training_args)
    eval_collator = make_collator(plan.tokenizer, data_args.mlm_probability, "static", seed=training_args.seed)
    # Scored before training (a resumed run re-creates the same initial student from the seed first).
    loss_before = heldout_mlm_loss(wrapper.student, held_blocks, eval_collator, use_cpu=training_args.use_cpu)
    if training_args.process_index == 0:
        write_json_atomic(out / RUN_ARGS_NAME, {**run_args_record(model_args, data_args, training_args),
                                                "heldout_mlm_loss_before": loss_before})
    collator = make_collator(plan.tokenizer, data_args.mlm_probability, data_args.masking, seed=training_args.seed)
    compat = setup_compat(compat_plan, wrapper, collator, plan.tokenizer, teacher, plan.teacher_path, data_args,
                          training_args) if compat_plan else None
    trainer = DistillationTrainer(
        model=wrapper, args=training_args, train_dataset=train_blocks, processing_class=plan.tokenizer,
        data_collator=compat.collator if compat else collator,
        teacher=teacher, kd_mode=plan.kd_mode, teacher_layers=plan.teacher_layers,
        relation_heads=plan.relation_heads, relation_teacher_layer=plan.relation_layer,
        callbacks=[*([CompatResume(compat.collator)] if compat else []), FiniteGuard(
            f"pretraining (learning_rate {training_args.learning_rate!r}, warmup {training_args.warmup_steps!r}, "
            f"per-device batch {training_args.per_device_train_batch_size})", "lower --learning_rate",
            weights=training_args.world_size == 1)])  # sharded ranks hold parts of the weights: losses only
    resumed_at = checkpoint_step(resume) if resume else 0  # read now: save_total_limit may delete it while training
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    train_seconds = time.perf_counter() - start
    trainer.save_state()  # trainer_state.json: the log history
    _save_final(trainer, out)  # every rank takes part (FSDP / ZeRO-3 gather); rank 0 writes
    student = trainer.accelerator.unwrap_model(trainer.model).student
    loss_after = heldout_mlm_loss(student, held_blocks, eval_collator, use_cpu=training_args.use_cpu)
    if not trainer.is_world_process_zero():
        return None
    run = {"train_loss": result.training_loss, "train_seconds": train_seconds, "resume": resume,
           "resumed_at_step": resumed_at, "global_step": trainer.state.global_step, "loss_before": loss_before, "loss_after": loss_after,
           "train_blocks": len(train_blocks), "heldout_blocks": len(held_blocks),
           "parameters": sum(p.numel() for p in student.parameters()), "heldout": heldout_record or None}
    if compat:
        run["compatibility"] = finish_compat(compat, trainer.accelerator.unwrap_model(trainer.model), data_args,
                                             training_args)
    training_args.output_dir = final_dir  # the report names the output folder, not the one being built
    report = build_report(model_args, data_args, training_args, plan, init_report, run)
    write_report(out, report)  # written last: marks the run finished
    return report


def build_report(model_args: ModelArguments, data_args: DataArguments, training_args: DistillationArguments,
                 plan: KDPlan, init_report: dict | None, run: dict) -> PretrainReport:
    """The typed report of a finished run (`run`: what training measured)."""
    resume, seconds = run["resume"], run["train_seconds"]
    steps_run = run["global_step"] - run["resumed_at_step"]
    batch_size = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps \
        * training_args.world_size
    tokens = steps_run * batch_size * data_args.seq_len
    return PretrainReport.make({
        "teacher": model_args.teacher,
        "teacher_kind": plan.kind,
        "student_config": model_args.student_config,
        "corpus": data_args.corpus,
        "kd_mode": plan.kd_mode,
        "loss": _loss_report(training_args, plan),
        "init": model_args.init,
        "init_report": init_report,
        "max_steps": training_args.max_steps,
        "global_step": run["global_step"],
        "seq_len": data_args.seq_len,
        "batch_size": batch_size,
        "world_size": training_args.world_size,
        "learning_rate": training_args.learning_rate,
        "train_blocks": run["train_blocks"],
        "heldout_blocks": run["heldout_blocks"],
        "train_seconds": round(seconds, 2),
        "train_loss": run["train_loss"],
        "parameters": run["parameters"],
        "heldout_mlm_loss_before": run["loss_before"],
        "heldout_mlm_loss_after": run["loss_after"],
        "heldout_perplexity_after": math.exp(min(run["loss_after"], 50.0)),
        "tokens_per_second": round(tokens / seconds, 1) if seconds > 0 else None,
        "resumed_from": str(resume) if resume else None,
        "device": str(training_args.device),
        "compatibility": run.get("compatibility"),
        "heldout": run.get("heldout"),
    }, output_dir=str(training_args.output_dir))


def _loss_report(args: DistillationArguments, plan: KDPlan) -> dict:
    """The loss settings as the user gives them: layers 1-based (`--layer_map`, `--relation_teacher_layer`)."""
    if plan.kd_mode == "logit":
        return {"w_mlm": args.mlm_weight("logit"), "w_kd": args.w_kd, "temperature": args.temperature,
                "kd_reduction": args.kd_reduction, "positions": "masked only"}
    one_based = [j + 1 for j in plan.teacher_layers] if plan.teacher_layers is not None else None
    return {"w_mlm": args.mlm_weight("representation"), "w_hidden": args.w_hidden, "w_attn": args.w_attn,
            "layer_map": one_based, "relation_heads": plan.relation_heads,
            "relation_teacher_layer": plan.relation_layer + 1 if plan.relation_layer is not None else None,
            "positions": "mlm: masked; representation: all tokens"}


def _save_final(trainer: DistillationTrainer, out: Path) -> None:
    """Write the final checkpoint into a temporary folder, then move its files into `out` (atomic per file)."""
    tmp = out / ".final-checkpoint"
    if trainer.is_world_process_zero() and tmp.exists():
        shutil.rmtree(tmp)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(tmp))
    if trainer.is_world_process_zero():
        for item in sorted(tmp.iterdir()):
            if item.is_dir() and (out / item.name).is_dir():  # a sentence-transformers module folder of an old run
                shutil.rmtree(out / item.name)
            os.replace(item, out / item.name)
        shutil.rmtree(tmp, ignore_errors=True)
