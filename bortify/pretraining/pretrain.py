"""`pretrain(...)`: the library function behind `bortify pretrain` and the pipeline's pretrain stage.

Everything that can be wrong with the inputs (student config, teacher kind, vocabularies, corpus) is checked
before any weight is loaded for training; then the student is distilled through `DistillationTrainer` and
written as a standard BertForMaskedLM checkpoint with the teacher's tokenizer, the training log
(`trainer_state.json`) and `report.json` (the marker of a finished run; what the model card reads).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    set_seed,
)

from bortify.data import resolve_model
from bortify.pretraining.arguments import DataArguments, DistillationArguments, ModelArguments
from bortify.pretraining.data import load_pretraining_data, make_collator
from bortify.pretraining.losses import default_layer_map, default_relation_heads
from bortify.pretraining.rundir import (
    RUN_ARGS_NAME,
    RunDirError,
    changed_run_args,
    check_not_foreign,
    checkpoint_problem,
    find_resume_checkpoint,
    probe_writable,
    refuse_overlap,
    run_args_record,
)
from bortify.pretraining.trainer import DistillationStudent, DistillationTrainer
from bortify.reports import REPORT_FILE as REPORT_NAME
from bortify.reports import PretrainReport, write_report
from bortify.utils import check_output_dir, torch_threads, write_json_atomic

logger = logging.getLogger(__name__)


class PretrainError(ValueError):
    """Bad pretraining input, reported before training starts."""


def _check_local(spec: str, what: str) -> None:
    """A spec that looks like a local path must exist (otherwise the Hub client gives a confusing repo-id error)."""
    looks_local = str(spec).startswith((".", "/", "~")) or str(spec).count("/") > 1
    if looks_local and not os.path.exists(os.path.expanduser(str(spec))):
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
    if seq_len > student_cfg.max_position_embeddings:
        raise PretrainError(f"seq_len {seq_len} exceeds the student's max_position_embeddings "
                            f"{student_cfg.max_position_embeddings}; lower --seq_len.")
    t_max = getattr(teacher_cfg, "max_position_embeddings", None)
    if t_max is not None and seq_len > t_max - (2 if teacher_cfg.model_type in ("roberta", "xlm-roberta") else 0):
        raise PretrainError(f"seq_len {seq_len} exceeds what the teacher accepts ({t_max} positions); lower --seq_len.")


@torch.no_grad()
def heldout_mlm_loss(student: BertForMaskedLM, blocks, collator, batch_size: int = 16, device=None) -> float:
    """Mean masked-LM cross-entropy of `student` over `blocks` (pass a static-masking collator so that two
    calls score identical masks)."""
    was_training = student.training
    student.eval()
    device = device or next(student.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(blocks), batch_size):
        batch = collator([blocks[i] for i in range(start, min(start + batch_size, len(blocks)))])
        labels = batch["labels"].to(device)
        out = student.bert(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
        keep = labels != -100
        logits = student.cls(out.last_hidden_state[keep])
        total += float(nn.functional.cross_entropy(logits.float(), labels[keep], reduction="sum"))
        count += int(keep.sum())
    student.train(was_training)
    return total / max(count, 1)


def _teacher_layers(args: DistillationArguments, n_student: int, n_teacher: int) -> list[int]:
    layers = args.parsed_layer_map() or default_layer_map(n_student, n_teacher)
    if len(layers) != n_student or any(not 1 <= j <= n_teacher for j in layers):
        raise PretrainError(f"layer_map {layers} must give one teacher layer in 1..{n_teacher} for each of the "
                            f"student's {n_student} layers.")
    return layers


def pretrain(model_args: ModelArguments, data_args: DataArguments, training_args: DistillationArguments, *,
             overwrite: bool = False) -> PretrainReport | None:
    """Distil a pretrained masked-LM student; return its report (None on processes other than the main one of a
    distributed run). See the module docstring.

    `model_args.overwrite` (or the `overwrite` keyword, the same) replaces a finished run in the output directory
    and starts an unfinished one again instead of resuming it. `model_args.torch_threads` applies for the call."""
    overwrite = bool(overwrite or model_args.overwrite)
    with torch_threads(model_args.torch_threads):
        return _pretrain(model_args, data_args, training_args, overwrite)


def _guard_output_dir(out: Path, model_args: ModelArguments, data_args: DataArguments,
                      training_args: DistillationArguments, overwrite: bool) -> str | None:
    """Refuse, before any work, an output that would clobber an input, cannot be written, holds a finished or a
    foreign run, or holds an unfinished run started with other arguments. Returns the checkpoint to resume."""
    try:
        refuse_overlap(out, {"--teacher": model_args.teacher, "--student_config": model_args.student_config,
                             "--corpus": data_args.corpus})
        probe_writable(out)
        if not overwrite:
            if (out / REPORT_NAME).exists():
                check_output_dir(out, overwrite, resumable=True, marker=REPORT_NAME)  # raises OutputExistsError
            check_not_foreign(out, REPORT_NAME)
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


def _pretrain(model_args: ModelArguments, data_args: DataArguments, training_args: DistillationArguments,
              overwrite: bool) -> PretrainReport | None:
    out = Path(training_args.output_dir)
    resume = _guard_output_dir(out, model_args, data_args, training_args, overwrite)
    # --- cheap checks first: configs, tokenizer, corpus -------------------------------------------------
    student_cfg = load_student_config(model_args.student_config)
    _check_local(model_args.teacher, "teacher")
    teacher_path = resolve_model(model_args.teacher)
    try:
        refuse_overlap(out, {"--teacher": teacher_path})  # a Hub/embedded teacher's local copy
    except RunDirError as exc:
        raise PretrainError(str(exc)) from exc
    try:
        teacher_cfg = AutoConfig.from_pretrained(teacher_path)
        tokenizer = AutoTokenizer.from_pretrained(teacher_path)
    except (OSError, ValueError) as exc:
        raise PretrainError(f"Cannot load teacher {model_args.teacher!r}: {exc}") from exc
    kind = teacher_kind(teacher_cfg)
    kd_mode = resolve_kd_mode(model_args.kd_mode, kind)
    check_compatible(student_cfg, teacher_cfg, tokenizer, kd_mode, data_args.seq_len)
    n_teacher = getattr(teacher_cfg, "num_hidden_layers", None)
    teacher_layers = relation_heads = relation_layer = None
    if kd_mode == "representation" or model_args.init == "teacher":
        if not n_teacher:
            raise PretrainError(f"Teacher {model_args.teacher!r} does not say its num_hidden_layers.")
        teacher_layers = _teacher_layers(training_args, student_cfg.num_hidden_layers, n_teacher)
    if kd_mode == "representation":
        if training_args.w_attn > 0:
            relation_layer = n_teacher if training_args.relation_teacher_layer == -1 else training_args.relation_teacher_layer
            if not 1 <= relation_layer <= n_teacher:
                raise PretrainError(f"relation_teacher_layer {relation_layer} is outside 1..{n_teacher}.")
            relation_heads = training_args.relation_heads or default_relation_heads(
                student_cfg.hidden_size, teacher_cfg.hidden_size,
                max(student_cfg.num_attention_heads, teacher_cfg.num_attention_heads))
            for width, who in ((student_cfg.hidden_size, "student"), (teacher_cfg.hidden_size, "teacher")):
                if width % relation_heads:
                    raise PretrainError(f"relation_heads {relation_heads} does not divide the {who}'s width {width}.")
    if model_args.init == "teacher":
        try:
            from bortify.slicing import init_from_teacher
        except ImportError as exc:
            raise PretrainError("init 'teacher' needs bortify.slicing (not installed here); use init 'random'.") from exc
    if training_args.max_steps <= 0:
        raise PretrainError("max_steps must be > 0 (pretraining is budgeted in optimiser steps).")

    train_blocks, held_blocks = load_pretraining_data(
        data_args.corpus, tokenizer, seq_len=data_args.seq_len, text_column=data_args.text_column,
        split=data_args.corpus_split, config=data_args.corpus_config, heldout_fraction=data_args.heldout_fraction,
        max_heldout_blocks=data_args.max_heldout_blocks, max_train_texts=data_args.max_train_texts,
        seed=training_args.seed, num_proc=data_args.preprocessing_num_workers)

    # --- output directory: refuse a finished run, resume an unfinished one (checked above) ---------------
    check_output_dir(out, overwrite, resumable=True, marker=REPORT_NAME)
    if overwrite and training_args.process_index == 0:
        (out / REPORT_NAME).unlink(missing_ok=True)  # the old run no longer counts as finished
    if resume:
        logger.warning("Resuming the unfinished run in %s from %s.", out, resume)
        print(f"[bortify pretrain] resuming from {resume}", flush=True)

    # --- models ------------------------------------------------------------------------------------------
    set_seed(training_args.seed)
    teacher_cls = AutoModelForMaskedLM if kind == "mlm" else AutoModel
    teacher = teacher_cls.from_pretrained(teacher_path, use_safetensors=True).eval().requires_grad_(False)
    student = BertForMaskedLM(student_cfg)  # N(0, initializer_range=0.02) as Bort
    init_report = None
    if model_args.init == "teacher":
        init_report = init_from_teacher(student, teacher, layer_map=[j - 1 for j in teacher_layers],
                                        importance="magnitude")
    projections = None
    hidden_layers: list[int] = []
    if kd_mode == "representation" and training_args.w_hidden > 0:
        hidden_layers = list(range(student_cfg.num_hidden_layers))
        if student_cfg.hidden_size != teacher_cfg.hidden_size:  # TinyBERT's learned W_h, one per layer pair
            projections = nn.ModuleList(nn.Linear(student_cfg.hidden_size, teacher_cfg.hidden_size)
                                        for _ in hidden_layers)
    wrapper = DistillationStudent(student, projections, hidden_layers,
                                  relation=kd_mode == "representation" and training_args.w_attn > 0)
    parameters = sum(p.numel() for p in student.parameters())

    eval_collator = make_collator(tokenizer, data_args.mlm_probability, "static", seed=training_args.seed)
    is_main = training_args.process_index == 0
    # Scored before training (a resumed run re-creates the same initial student from the seed first).
    loss_before = heldout_mlm_loss(student, held_blocks, eval_collator) if is_main else None

    trainer = DistillationTrainer(
        model=wrapper, args=training_args, train_dataset=train_blocks, processing_class=tokenizer,
        data_collator=make_collator(tokenizer, data_args.mlm_probability, data_args.masking, seed=training_args.seed),
        teacher=teacher, kd_mode=kd_mode, teacher_layers=teacher_layers, relation_heads=relation_heads,
        relation_teacher_layer=relation_layer,
    )
    if is_main:
        write_json_atomic(out / RUN_ARGS_NAME, {**run_args_record(model_args, data_args, training_args),
                                                "heldout_mlm_loss_before": loss_before})
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    train_seconds = time.perf_counter() - start
    trainer.save_state()  # trainer_state.json: the log history

    _save_final(trainer, out)  # every rank takes part (FSDP / ZeRO-3 gather); rank 0 writes
    if not trainer.is_world_process_zero():
        return None
    student = trainer.accelerator.unwrap_model(trainer.model).student
    loss_after = heldout_mlm_loss(student, held_blocks, eval_collator)
    steps_run = trainer.state.global_step - (int(str(resume).rsplit("-", 1)[-1]) if resume else 0)
    tokens = steps_run * training_args.train_batch_size * training_args.gradient_accumulation_steps \
        * training_args.world_size * data_args.seq_len
    report = PretrainReport.make({
        "teacher": model_args.teacher,
        "teacher_kind": kind,
        "student_config": model_args.student_config,
        "corpus": data_args.corpus,
        "kd_mode": kd_mode,
        "loss": _loss_report(training_args, kd_mode, teacher_layers, relation_heads, relation_layer),
        "init": model_args.init,
        "init_report": init_report,
        "max_steps": training_args.max_steps,
        "global_step": trainer.state.global_step,
        "seq_len": data_args.seq_len,
        "batch_size": training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
        * training_args.world_size,
        "world_size": training_args.world_size,
        "learning_rate": training_args.learning_rate,
        "train_blocks": len(train_blocks),
        "heldout_blocks": len(held_blocks),
        "train_seconds": round(train_seconds, 2),
        "train_loss": result.training_loss,
        "parameters": parameters,
        "heldout_mlm_loss_before": loss_before,
        "heldout_mlm_loss_after": loss_after,
        "heldout_perplexity_after": math.exp(min(loss_after, 50.0)),
        "tokens_per_second": round(tokens / train_seconds, 1) if train_seconds > 0 else None,
        "resumed_from": str(resume) if resume else None,
        "device": str(training_args.device),
    }, output_dir=str(out))
    write_report(out, report)  # written last: marks the run finished
    return report


def _loss_report(args: DistillationArguments, kd_mode: str, teacher_layers, relation_heads, relation_layer) -> dict:
    if kd_mode == "logit":
        return {"w_mlm": args.mlm_weight("logit"), "w_kd": args.w_kd, "temperature": args.temperature,
                "kd_reduction": args.kd_reduction, "positions": "masked only"}
    return {"w_mlm": args.mlm_weight("representation"), "w_hidden": args.w_hidden, "w_attn": args.w_attn,
            "layer_map": teacher_layers, "relation_heads": relation_heads,
            "relation_teacher_layer": relation_layer, "positions": "mlm: masked; representation: all tokens"}


def _save_final(trainer: DistillationTrainer, out: Path) -> None:
    """Write the final checkpoint into a temporary folder, then move its files into `out` (atomic per file)."""
    tmp = out / ".final-checkpoint"
    if trainer.is_world_process_zero() and tmp.exists():
        shutil.rmtree(tmp)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(tmp))
    if trainer.is_world_process_zero():
        for item in sorted(tmp.iterdir()):
            os.replace(item, out / item.name)
        shutil.rmtree(tmp, ignore_errors=True)
