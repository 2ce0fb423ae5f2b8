"""The fine-tuning modes as types: `Plain`, `Agora` and `Distill` (`--mode`, `MODES`).

finetune.py picks the mode once (`mode_of(model_args.mode, ...)`) and asks it; each mode owns
- its search over train and dev (plain: every θ once, docs/methods/03-agora.md §3's round 1; Agora: the loop of
  agora.py; distill: one task-distillation run of distill.py, docs/methods/07-task-distillation.md §7), recorded
  as rounds (agora.AgoraResult);
- whether it needs a second model and in which role (`role`: Agora's labeler, distillation's teacher), with the
  teacher candidates it compares on dev by default (teachers.py, docs/methods/07-task-distillation.md §7.2);
- whether it needs Agora's generator, how it used dev (`dev_parts`) and its report fields (theta / generator /
  agora / distill);
- where `--old_model`'s focal distillation goes (every run's loss, or inside distillation:
  docs/methods/04-updates.md §4.3).

A mode reads the model arguments only through `runs.RunSettings` (max_length, eval_batch_size, seed).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import ClassVar

from bortify.finetuning.acceptance import class_ratio, mistake_rule, split_dev
from bortify.finetuning.agora import AgoraResult, RoundRecord, agora
from bortify.finetuning.arguments import AgoraArguments, CongruentArguments, TaskDistillArguments
from bortify.finetuning.generators import GENERATORS, generate_rows
from bortify.finetuning.labelers import GeneratedRowLabeler, build_labeler
from bortify.finetuning.runs import DevParts, Runs, RunSettings, Scores, row_key, task_rows
from bortify.finetuning.tasks import TaskData
from bortify.finetuning.trainer import log_progress, theta_text


@dataclass(frozen=True)
class Mode:
    """What finetune.py asks of a mode. The base is plain fine-tuning's answers where a mode has nothing to add."""

    name: ClassVar[str]
    role: ClassVar[str | None] = None  # the second model's role (labelers.build_labeler), None: no second model
    agora: AgoraArguments = field(default_factory=AgoraArguments)  # also the labeler's / teacher's settings

    @classmethod
    def of(cls, agora_args: AgoraArguments, distill_args: TaskDistillArguments | None = None) -> "Mode":
        return cls(agora=agora_args)

    def default_candidates(self) -> list[str]:
        """The teacher candidates compared on dev without --teacher_candidates (teachers.py)."""
        return ["stock"]

    def thetas_note(self, thetas: list[dict]) -> str | None:
        """A warning about Θ for this mode, or None."""
        return None

    def run_total(self, thetas: list[dict]) -> int | None:
        """The number of fine-tuning runs the search makes, when known in advance (the progress bar's total)."""
        return None

    def needs_generator(self) -> bool:
        return False

    def dev_parts(self, task: TaskData, seed: int) -> DevParts:
        raise NotImplementedError

    def search(self, runs: Runs, thetas: list[dict], labeler, generator, focal=None) -> tuple[AgoraResult, dict | None]:
        """Fine-tuning on train, selection on dev (the test split is not touched): the result and the mode's
        record (distill: distill.py's info; None otherwise)."""
        raise NotImplementedError

    def report_fields(self, thetas: list[dict], task: TaskData, result: AgoraResult, scores: Scores,
                      info: dict | None) -> dict:
        """The report's mode-specific fields."""
        return {"generator": None, "agora": None, "distill": info, "theta": thetas}

    def old_model_losses(self, runs: Runs, congruent_args: CongruentArguments, settings: RunSettings):
        """--old_model: every run trains with focal distillation (docs/methods/04-updates.md §4.3): attached to `runs`.
        Returns the focal weights the search itself needs (None here)."""
        if congruent_args.old_model:
            from bortify.finetuning.congruent import CongruentRuns

            runs.congruent = CongruentRuns(congruent_args.old_model, runs.task, congruent_args.focal(),
                                           max_length=settings.max_length, batch_size=settings.eval_batch_size)
        return None

    def teacher_settings(self, settings: RunSettings):
        """The teacher candidates to build and compare on dev (teachers.TeacherSettings), or None for the stock
        labeler alone (Agora's default; also when an existing `labeler` is given)."""
        from bortify.finetuning.teachers import TeacherSettings

        args = self.agora
        candidates = args.teacher_candidates or self.default_candidates()
        if args.labeler or (list(candidates) == ["stock"] and args.teacher_ensemble == 1):
            return None
        return TeacherSettings(candidates=tuple(candidates), epochs=args.labeler_epochs,
                               learning_rate=args.labeler_learning_rate,
                               head_learning_rate=args.teacher_head_learning_rate,
                               batch_size=args.labeler_batch_size, ensemble=args.teacher_ensemble,
                               max_train_samples=args.labeler_max_train_samples,
                               max_length=settings.max_length, eval_batch_size=settings.eval_batch_size,
                               seed=settings.seed)

    def make_labeler(self, task: TaskData, settings: RunSettings):
        """Agora's labeler / distillation's teacher (labelers.build_labeler, which refuses one under its dev bar);
        None for a mode without a second model."""
        if self.role is None:
            return None
        args = self.agora
        labeler = build_labeler(
            task, labeler=args.labeler, teacher=args.teacher, max_length=settings.max_length,
            seed=settings.seed, epochs=args.labeler_epochs, learning_rate=args.labeler_learning_rate,
            batch_size=args.labeler_batch_size, max_train_samples=args.labeler_max_train_samples,
            min_dev_score=args.labeler_min_dev_score, eval_batch_size=settings.eval_batch_size,
            role=self.role, selection=self.teacher_settings(settings))
        log_progress(f"{self.role} ready: {labeler.source}, dev score {labeler.dev_score:.4f}")
        return labeler

    def inputs(self) -> dict[str, str | None]:
        """The local folders of the second model (outputs.refuse_inputs keeps the output clear of them)."""
        if self.role is None:
            return {}
        return {"labeler": self.agora.labeler, "teacher": None if self.agora.labeler else self.agora.teacher}


def whole_dev(task: TaskData, note: str) -> DevParts:
    return DevParts(list(range(len(task.dev))), None, note)


@dataclass(frozen=True)
class Plain(Mode):
    """Plain fine-tuning: every θ once on train, the best on dev (the baseline)."""

    name: ClassVar[str] = "plain"

    def run_total(self, thetas: list[dict]) -> int | None:
        return len(thetas)

    def dev_parts(self, task: TaskData, seed: int) -> DevParts:
        return whole_dev(task, "dev = all of dev, used only to choose θ (plain fine-tuning).")

    def search(self, runs: Runs, thetas: list[dict], labeler, generator, focal=None) -> tuple[AgoraResult, None]:
        return plain_search(runs, thetas), None


@dataclass(frozen=True)
class Agora(Mode):
    """Agora (docs/methods/03-agora.md §3): rounds of fine-tuning, each adding labelled variants of dev's mistakes."""

    name: ClassVar[str] = "agora"
    role: ClassVar[str | None] = "labeler"

    def thetas_note(self, thetas: list[dict]) -> str | None:
        """The warning for an Agora run that cannot repair anything: with one θ, `--prune worst` (the paper's rule)
        empties Θ after round 1, so the loop stops there and the result is plain fine-tuning. None otherwise."""
        args = self.agora
        if len(thetas) != 1 or args.prune != "worst" or args.max_rounds <= 1:
            return None
        return ("--mode agora with a single θ and --prune worst stops after round 1 (pruning the worst θ empties "
                "Θ), so no repaired round runs and the result is plain fine-tuning. Give several θ (e.g. "
                "--learning_rates 1e-3 5e-4) or --prune none to run up to --max_rounds rounds.")

    def needs_generator(self) -> bool:
        return True

    def dev_parts(self, task: TaskData, seed: int) -> DevParts:
        """(selection indices, repair indices or None, note) of dev, as agora.py splits it (acceptance.split_dev)."""
        if self.agora.repair_fraction < 1:
            repair, select = split_dev(list(task.dev["label"]), self.agora.repair_fraction, seed)
            note = (f"dev = the selection part of dev ({len(select)} rows), which only chose θ and the best round; "
                    f"dev_repair = the repair part ({len(repair)} rows), inflated: variants of its mistakes were "
                    "trained on. Compare with round 1 (plain fine-tuning, scored on the same selection part), not with "
                    "a plain run's score on all of dev.")
            return DevParts(select, repair, note)
        return whole_dev(task, "dev = all of dev, which both chose θ/the best round and was repaired "
                               "(repair_fraction 1, the paper): inflated, variants of its mistakes were trained on.")

    def search(self, runs: Runs, thetas: list[dict], labeler, generator, focal=None) -> tuple[AgoraResult, None]:
        return agora_search(runs, thetas, self.agora, labeler, generator), None

    def report_fields(self, thetas: list[dict], task: TaskData, result: AgoraResult, scores: Scores,
                      info: dict | None) -> dict:
        return {"generator": generator_fields(self.agora, task),
                "agora": agora_fields(self.agora, task, result, scores), "distill": info, "theta": thetas}


@dataclass(frozen=True)
class Distill(Mode):
    """Task distillation (docs/methods/07-task-distillation.md §7): the student learns the fine-tuned teacher's
    soft labels."""

    name: ClassVar[str] = "distill"
    role: ClassVar[str | None] = "teacher"
    distill: TaskDistillArguments = field(default_factory=TaskDistillArguments)

    @classmethod
    def of(cls, agora_args: AgoraArguments, distill_args: TaskDistillArguments | None = None) -> "Mode":
        return cls(agora=agora_args, distill=distill_args or TaskDistillArguments())

    def default_candidates(self) -> list[str]:
        from bortify.finetuning.teachers import DISTILL_CANDIDATES

        return DISTILL_CANDIDATES

    def needs_generator(self) -> bool:
        return self.distill.distill_augment_k > 0

    def dev_parts(self, task: TaskData, seed: int) -> DevParts:
        return whole_dev(task, "dev = all of dev; the teacher's threshold check read it, the student never "
                               "trained on a dev text (task distillation).")

    def search(self, runs: Runs, thetas: list[dict], labeler, generator, focal=None) -> tuple[AgoraResult, dict]:
        return distill_result(runs, labeler, self.distill, generator, focal=focal)

    def report_fields(self, thetas: list[dict], task: TaskData, result: AgoraResult, scores: Scores,
                      info: dict | None) -> dict:
        return {"generator": None, "agora": None, "distill": info, "theta": None}

    def old_model_losses(self, runs: Runs, congruent_args: CongruentArguments, settings: RunSettings):
        """--old_model: focal weights inside distillation (docs/methods/04-updates.md §4.3), returned for the
        search."""
        if not congruent_args.old_model:
            return None
        from bortify.finetuning.congruent import DistillFocal, is_teacher

        return DistillFocal(congruent_args.old_model, runs.task, congruent_args.focal(),
                            teacher=is_teacher(congruent_args.old_model, self.agora.labeler),
                            max_length=settings.max_length, batch_size=settings.eval_batch_size)


MODES: dict[str, type[Mode]] = {m.name: m for m in (Plain, Agora, Distill)}


def mode_of(name: str, agora_args: AgoraArguments | None = None,
            distill_args: TaskDistillArguments | None = None) -> Mode:
    """The mode `--mode name` with its settings."""
    return MODES[name].of(agora_args or AgoraArguments(), distill_args)


def plain_search(runs: Runs, thetas: list[dict]) -> AgoraResult:
    """Plain fine-tuning: enumerate Θ once on the original train set, keep the best on dev (the baseline),
    recorded as round 1."""
    train_rows = task_rows(runs.task.train, runs.task)
    trials = []
    for theta in thetas:
        model = runs.fit(train_rows, theta)
        trials.append((theta, runs.dev_main_score(runs.dev_predict(model)), model))
        runs.bar.set_postfix_str(f"{theta_text(theta)} dev {trials[-1][1]:.3f}")
    theta_b, score_b, model_b = max(trials, key=lambda x: x[1])
    record = RoundRecord(round=1, thetas=[{"theta": t, "dev_score": s} for t, s, _ in trials], best_theta=theta_b,
                         dev_score=score_b, mistakes=None, examples_added=0, train_size=len(train_rows),
                         examples_seen=sum(runs.seen(len(train_rows), t) for t, *_ in trials))
    return AgoraResult(best_model=model_b, best_round=1, best_dev_score=score_b, rounds=[record],
                       round_models={1: model_b}, examples_seen=record.examples_seen)


def agora_labeler(task: TaskData, agora_args: AgoraArguments, labeler, train_rows: list[dict]):
    """Agora's `label`: the labeler's scores as they are for regression; for classification its class with the
    acceptance rules and soft labels (labelers.GeneratedRowLabeler)."""
    if task.regression:
        return labeler
    return GeneratedRowLabeler(labeler, class_ratio([r["label"] for r in train_rows], task.num_labels),
                               min_confidence=agora_args.min_labeler_confidence, balance=agora_args.balance_classes,
                               soft_labels=agora_args.soft_labels, temperature=agora_args.soft_label_temperature)


def agora_search(runs: Runs, thetas: list[dict], agora_args: AgoraArguments, labeler, generator) -> AgoraResult:
    """The Agora loop (agora.py, docs/methods/03-agora.md §3) over train and dev, wired to the student's runs, the
    labeler and the generator."""
    task = runs.task
    train_rows, dev_rows = task_rows(task.train, task), task_rows(task.dev, task)

    def generate(k):
        return lambda rows, banned, rng: generate_rows(rows, task.text_columns, generator, k, rng, banned)

    return agora(
        train=train_rows, dev=dev_rows, thetas=thetas, fit=runs.fit, dev_predict=runs.dev_predict,
        dev_score=runs.dev_main_score, mistakes=mistake_rule(task.regression), generate=generate(agora_args.k),
        label=agora_labeler(task, agora_args, labeler, train_rows), key=row_key(task), examples_seen=runs.seen,
        max_rounds=agora_args.max_rounds, repair_fraction=agora_args.repair_fraction,
        verify=labeler if agora_args.verify_mistakes and not task.regression else None,
        generate_train=generate(agora_args.train_k) if agora_args.train_k else None,
        prune=agora_args.prune, replay=agora_args.replay, seed=runs.seed,
        progress=runs.bar.set_postfix_str, theta_label=theta_text, log=log_progress)


def distill_result(runs: Runs, labeler, distill_args: TaskDistillArguments, generator,
                   focal=None) -> tuple[AgoraResult, dict]:
    """Mode 'distill' (docs/methods/07-task-distillation.md §7): one distillation run, recorded as round 1 so the
    report, the rounds plot and the card read it like the other modes."""
    from bortify.finetuning.distill import distill

    start, bar = time.perf_counter(), runs.bar
    model, info = distill(runs.task, runs.student0, runs.tokenizer, labeler, distill_args, generator=generator,
                          seed=runs.seed, max_length=runs.max_length,
                          progress=lambda msg: (bar.set_postfix_str(msg), log_progress(msg)), focal=focal,
                          compat=runs.compat, dev_score_of=lambda m: runs.dev_main_score(runs.dev_predict(m)))
    bar.update(1)
    dev = runs.dev_main_score(runs.dev_predict(model))
    settings = {k.removeprefix("distill_"): v for k, v in info["settings"].items()
                if k in ("distill_temperature", "distill_alpha", "distill_learning_rate", "distill_epochs",
                         "distill_batch_size")}
    counts = info["transfer_set"]
    record = RoundRecord(round=1, thetas=[{"theta": settings, "dev_score": dev}], best_theta=settings, dev_score=dev,
                         mistakes=None, examples_added=counts["total"] - counts["gold"], train_size=counts["total"],
                         examples_seen=info["examples_seen"], seconds=round(time.perf_counter() - start, 1))
    return AgoraResult(best_model=model, best_round=1, best_dev_score=dev, rounds=[record], round_models={1: model},
                       examples_seen=info["examples_seen"]), info


def make_generator(agora_args: AgoraArguments, student, student_tok, labeler):
    """The chosen generator (generators.GENERATORS) over the chosen input-embedding table (with that model's
    tokenizer): Agora's, and distillation's augmentation (--distill_augment_k)."""
    which = agora_args.generator_embeddings
    if which == "labeler":
        model, tok = labeler.model, labeler.tokenizer
    elif which == "student":
        model, tok = student, student_tok
    else:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        from bortify.resources import resolve_model
        from bortify.utils import check_finite_weights

        path = resolve_model(which)
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # only the input embeddings are used: unused heads are expected
        try:
            model, tok = AutoModel.from_pretrained(path, use_safetensors=True), AutoTokenizer.from_pretrained(path)
        finally:
            hf_logging.set_verbosity(verbosity)
        check_finite_weights(model, f"The generator's embedding model {which!r} ({path})")
    return GENERATORS[agora_args.generator](tok, model.get_input_embeddings().weight,
                                            rate=agora_args.substitution_rate, neighbours=agora_args.neighbours)


def generator_fields(agora_args: AgoraArguments, task: TaskData) -> dict:
    """The report's record of Agora's generator settings."""
    return {"name": agora_args.generator, "k": agora_args.k, "train_k": agora_args.train_k,
            "verify_mistakes": agora_args.verify_mistakes and not task.regression,
            "substitution_rate": agora_args.substitution_rate,
            "neighbours": agora_args.neighbours, "embeddings": agora_args.generator_embeddings}


def agora_fields(agora_args: AgoraArguments, task: TaskData, result: AgoraResult, scores: Scores) -> dict:
    """The report's record of Agora's settings and how the loop ended."""
    return {"repair_fraction": agora_args.repair_fraction, "balance_classes": agora_args.balance_classes,
            "min_labeler_confidence": agora_args.min_labeler_confidence,
            "soft_labels": agora_args.soft_labels and not task.regression,
            "soft_label_temperature": agora_args.soft_label_temperature,
            "max_rounds": agora_args.max_rounds, "prune": agora_args.prune, "replay": agora_args.replay,
            # dev rows whose mistakes are expanded / that select θ and the round (agora.py's split)
            "dev_repair_rows": len(scores.repair_idx) if scores.repair_idx is not None else len(task.dev),
            "dev_selection_rows": len(scores.select_idx),
            # why the loop ended; round 1 = plain fine-tuning scored on the same selection part: the
            # returned model is never below it (agora.py); compare with it, not with a plain run on all of dev
            "stop_reason": result.stop_reason, "round1_dev_score": result.baseline_dev_score}
