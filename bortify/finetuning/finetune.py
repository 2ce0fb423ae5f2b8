"""`finetune(...)`: the library function behind `bortify finetune` and the pipeline's fine-tuning stage.

Order of work (cheap checks first, the test split last):
  1. arguments (dataclass __post_init__), output directory (not an input, not finished), data (files, columns,
     labels, empty texts, one class, unknown dev/test labels), model (a BERT-shaped encoder), output writable;
  2. Agora / distill: the labeler (the fine-tuned teacher) is built/loaded and must pass its dev threshold;
  3. plain: every θ once, best on dev | agora: the loop (agora.py) over train and dev only | distill: the
     student learns the teacher's soft labels over train + unlabelled in-domain text (distill.py);
  4. only then the test split: the best model and every round's best model are scored on it;
  5. the checkpoint, report.json and rounds.png are written (report.json last: it marks a finished output).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import datasets
import torch
from tqdm.auto import tqdm

from bortify.finetuning.acceptance import class_ratio, mistake_rule, split_dev
from bortify.finetuning.agora import AgoraResult, RoundRecord, agora
from bortify.finetuning.arguments import (AgoraArguments, CompatibleArguments, CongruentArguments,
                                          FinetuneDataArguments, FinetuneGridArguments, FinetuneModelArguments)
from bortify.finetuning.congruent import OLD_IS_TEACHER
from bortify.finetuning.distill import TaskDistillArguments, distill
from bortify.finetuning.generators import GENERATORS, generate_rows
from bortify.finetuning.labelers import GeneratedRowLabeler, build_labeler
from bortify.finetuning.losses import one_hot
from bortify.finetuning.overlap import clean_task
from bortify.finetuning.overlap import finish as finish_overlap
from bortify.finetuning.overlap import majority_baseline
from bortify.finetuning.tasks import TaskData, dataset_display, load_task
from bortify.finetuning.trainer import (examples_seen, fit, load_classifier_with_note, predict, log_progress, score,
                                        theta_text, to_predictions, tokenize, tokenizer_for_saving)
from bortify.finetuning.trainer import fitted_max_length
from bortify.heldout import load_heldout
from bortify.hub.card.naming import dataset_hub_id
from bortify.reports import REPORT_FILE as REPORT
from bortify.reports import FinetuneReport, write_report
from bortify.outputs import SENTENCE_FILES, Output, claim
from bortify.utils import make_shareable, torch_threads
from bortify.utils import json_text

logger = logging.getLogger(__name__)


def _rows(ds: datasets.Dataset, task: TaskData) -> list[dict]:
    return [{**{c: r[c] for c in task.text_columns}, "label": r["label"]} for r in ds]


def _to_dataset(rows: list[dict], task: TaskData) -> datasets.Dataset:
    """Rows as a Dataset; when any row carries a `soft_label` (Agora with soft labels) every row gets one, gold
    rows their one-hot label (losses.py)."""
    label_type = datasets.Value("float32") if task.regression else datasets.ClassLabel(names=task.label_names)
    columns = {**{c: datasets.Value("string") for c in task.text_columns}, "label": label_type}
    if any("soft_label" in r for r in rows):
        columns["soft_label"] = datasets.Sequence(datasets.Value("float32"), length=task.num_labels)
        rows = [r if "soft_label" in r else {**r, "soft_label": one_hot(r["label"], task.num_labels)} for r in rows]
    return datasets.Dataset.from_list(rows, features=datasets.Features(columns))


def _key(task: TaskData):
    cols = task.text_columns
    return (lambda r: r[cols[0]]) if len(cols) == 1 else (lambda r: tuple(r[c] for c in cols))


def _generator(agora_args: AgoraArguments, model_args: FinetuneModelArguments, student, student_tok, labeler):
    """The chosen generator (generators.GENERATORS) over the chosen input-embedding table (with that model's
    tokenizer)."""
    which = agora_args.generator_embeddings
    if which == "labeler":
        model, tok = labeler.model, labeler.tokenizer
    elif which == "student":
        model, tok = student, student_tok
    else:
        from transformers import AutoModel, AutoTokenizer

        from bortify.resources import resolve_model
        from transformers.utils import logging as hf_logging

        path = resolve_model(which)
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # only the input embeddings are used: unused heads are expected
        try:
            model, tok = AutoModel.from_pretrained(path, use_safetensors=True), AutoTokenizer.from_pretrained(path)
        finally:
            hf_logging.set_verbosity(verbosity)
        from bortify.utils import check_finite_weights

        check_finite_weights(model, f"The generator's embedding model {which!r} ({path})")
    return GENERATORS[agora_args.generator](tok, model.get_input_embeddings().weight,
                                            rate=agora_args.substitution_rate, neighbours=agora_args.neighbours)


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


def example_text(task: TaskData, limit: int = 120):
    """One short text (a [text, text] pair for pair tasks) from the train split, for the card's usage example."""
    cols = task.text_columns
    sample = task.train.select(range(min(len(task.train), 200)))
    rows = [[r[c] for c in cols] for r in sample]
    short = next((r for r in rows if sum(len(t) for t in r) <= limit), None)
    chosen = [" ".join(t.split())[:200] for t in (short or min(rows, key=lambda r: sum(len(t) for t in r)))]
    return chosen[0] if len(cols) == 1 else chosen


def dev_parts(task: TaskData, model_args: FinetuneModelArguments, agora_args: AgoraArguments):
    """(selection indices, repair indices or None, note) of dev, as agora.py splits it (acceptance.split_dev)."""
    if model_args.mode == "agora" and agora_args.repair_fraction < 1:
        repair, select = split_dev(list(task.dev["label"]), agora_args.repair_fraction, model_args.seed)
        note = (f"dev = the selection part of dev ({len(select)} rows), which only chose θ and the best round; "
                f"dev_repair = the repair part ({len(repair)} rows), inflated: variants of its mistakes were "
                "trained on. Compare with round 1 (plain fine-tuning, scored on the same selection part), not with a "
                "plain run's score on all of dev.")
        return select, repair, note
    everything = list(range(len(task.dev)))
    if model_args.mode == "agora":
        return everything, None, ("dev = all of dev, which both chose θ/the best round and was repaired "
                                  "(repair_fraction 1, the paper): inflated, variants of its mistakes were trained on.")
    if model_args.mode == "distill":
        return everything, None, ("dev = all of dev; the teacher's threshold check read it, the student never "
                                  "trained on a dev text (task distillation).")
    return everything, None, "dev = all of dev, used only to choose θ (plain fine-tuning)."


def finetune(model_args: FinetuneModelArguments, data_args: FinetuneDataArguments,
             grid_args: FinetuneGridArguments, agora_args: AgoraArguments,
             distill_args: TaskDistillArguments | None = None,
             congruent_args: CongruentArguments | None = None,
             compat_args: CompatibleArguments | None = None) -> FinetuneReport:
    """Fine-tune (plain, Agora or task distillation) and write the checkpoint + report.json + rounds.png.
    Returns the report. `distill_args` (mode 'distill'; default: TaskDistillArguments()) sets the distillation;
    `congruent_args.old_model` trains with focal distillation against the replaced model (docs/methods/04-updates.md §4.3);
    `compat_args.compatible_with` with BCT's influence loss through its frozen head (docs/methods/04-updates.md §4.4).

    `torch_threads` applies for the call and is restored afterwards. The output folder is claimed first
    (bortify.outputs: never an input, never foreign files, locked; a replacement is built aside and swapped in)."""
    congruent_args, compat_args = congruent_args or CongruentArguments(), compat_args or CompatibleArguments()
    inputs = output_inputs(model_args, agora_args,
                           None if congruent_args.old_model == OLD_IS_TEACHER else congruent_args.old_model,
                           compat_args.compatible_with)
    with torch_threads(model_args.torch_threads), \
            claim("finetune", model_args.output_dir, overwrite=model_args.overwrite, inputs=inputs) as output:
        return _finetune(model_args, data_args, grid_args, agora_args, distill_args or TaskDistillArguments(),
                         congruent_args, compat_args, output)


def _finetune(model_args: FinetuneModelArguments, data_args: FinetuneDataArguments,
              grid_args: FinetuneGridArguments, agora_args: AgoraArguments,
              distill_args: TaskDistillArguments, congruent_args: CongruentArguments,
              compat_args: CompatibleArguments, output: Output) -> FinetuneReport:
    """The steps in the order of the module docstring: checks, labeler, selection on train/dev, test, output
    (written into `output.work_dir()`)."""
    import transformers

    t_start = time.perf_counter()
    thetas = grid_args.thetas()
    model_args.max_length = fitted_max_length(model_args)  # the default, shortened to a small model's positions
    task = load_task(data_args)
    # the run's test texts out of train, dev and the unlabelled pool, before any model sees them (docs/methods/09-heldout.md §9)
    overlap = clean_task(task, load_heldout(data_args.heldout), user_files=bool(task.splits.get("files"))
                         and task.splits.get("test_source") == "test")
    check_congruent(congruent_args, model_args, task, agora_args)
    check_compatible(compat_args, congruent_args, model_args, task)
    if (note := single_theta_agora_note(model_args.mode, thetas, agora_args)) is not None:
        logger.warning(note)
    # Seed before anything random is drawn: the classifier head (and pooler) are initialised at load time.
    transformers.set_seed(model_args.seed)
    student0, tokenizer, load_note = load_classifier_with_note(model_args.model, task.label_names, task.regression,
                                                               max_length=model_args.max_length)
    log_progress(f"student {model_args.model}: {load_note}")
    out = output.work_dir()  # the output folder, or (a replacement) its sibling being built
    if torch.cuda.is_available():
        student0 = student0.to("cuda")
    labeler = make_labeler(task, model_args, agora_args)
    generator = None
    if model_args.mode == "agora" or (model_args.mode == "distill" and distill_args.distill_augment_k > 0):
        generator = _generator(agora_args, model_args, student0, tokenizer, labeler)

    # --- fine-tuning on train, selection on dev (the test split is not touched here) ---------------------------
    runs = Runs(student0, tokenizer, task, model_args, grid_args)
    distill_focal = None
    if congruent_args.old_model and model_args.mode == "distill":  # focal weights inside distillation (§4.3)
        from bortify.finetuning.congruent import DistillFocal, is_teacher

        distill_focal = DistillFocal(congruent_args.old_model, task, congruent_args.focal(),
                                     teacher=is_teacher(congruent_args.old_model, agora_args.labeler),
                                     max_length=model_args.max_length, batch_size=model_args.eval_batch_size)
    elif congruent_args.old_model:  # --old_model: every run trains with focal distillation (docs/methods/04-updates.md §4.3)
        from bortify.finetuning.congruent import CongruentRuns

        runs.congruent = CongruentRuns(congruent_args.old_model, task, congruent_args.focal(),
                                       max_length=model_args.max_length, batch_size=model_args.eval_batch_size)
    if compat_args.compatible_with:  # BCT's influence loss through the old model's frozen head (docs/methods/04-updates.md §4.4)
        from bortify.compat.finetune import CompatFinetune

        log_progress(f"--compatible_with {compat_args.compatible_with}: embedding the train texts with the old model (once)")
        runs.compat = CompatFinetune(compat_args.settings(), task, student0, tokenizer,
                                     max_length=model_args.max_length, batch_size=model_args.eval_batch_size)
    distill_info = None
    if model_args.mode == "agora":
        result = agora_search(runs, thetas, agora_args, labeler, generator)
    elif model_args.mode == "distill":
        result, distill_info = _distill_result(task, student0, tokenizer, labeler, distill_args, model_args,
                                               generator, lambda m: runs.dev_main_score(runs.dev_predict(m)), runs.bar,
                                               focal=distill_focal, compat=runs.compat)
    else:
        result = plain_search(runs, thetas)
    runs.bar.close()
    train_seconds = time.perf_counter() - t_start

    # --- the end: now, and only now, the test split ----------------------------------------------------------
    scores = score_result(runs, result, model_args, agora_args)
    labeler_test = labeler.evaluate(task.test) if labeler is not None else None  # for the card and the benchmark
    if labeler is not None:  # every teacher candidate's test score beside its dev score (teachers.py)
        labeler.score_candidates(task.test)
    compatibility = (runs.compat.evaluate(result.best_model, tokenizer, task_fields(task, model_args, data_args)
                                          ["dataset"], model_args.seed) if runs.compat is not None else None)
    report = FinetuneReport.make({
        **task_fields(task, model_args, data_args),
        "mode": model_args.mode,
        "labeler": ({**labeler.describe(), ("test_pearsonr" if task.regression else "test_accuracy"): labeler_test}
                    if labeler else None),
        "generator": generator_fields(agora_args, task) if model_args.mode == "agora" else None,
        "agora": agora_fields(agora_args, task, result, scores) if model_args.mode == "agora" else None,
        # mode 'distill': transfer-set sizes by source, settings, seconds (distill.py)
        "distill": distill_info,
        "theta": thetas if model_args.mode != "distill" else None,
        "num_train_epochs": grid_args.num_train_epochs,
        "max_steps": grid_args.max_steps,
        "max_length": model_args.max_length,
        "seed": model_args.seed,
        "rounds": scores.rounds,
        "best_round": result.best_round,
        "best_theta": next(r["best_theta"] for r in scores.rounds if r["round"] == result.best_round),
        # rows added to the gold train rows, over all rounds (each round's examples_added: the rows it added;
        # Agora: generated, labelled rows; distill: the transfer set's unlabelled and generated rows; plain: 0)
        "examples_added": sum(r.examples_added or 0 for r in result.rounds),
        "examples_seen": result.examples_seen,
        "dev": scores.dev,
        "dev_repair": scores.dev_repair,
        "dev_note": scores.dev_note,
        "test": scores.test,
        "splits": task.splits,
        "example_text": example_text(task),
        "load_note": load_note,
        "train_seconds": round(train_seconds, 1),
        "labeler_seconds": round(labeler.seconds, 1) if labeler else 0.0,
        "num_parameters": sum(p.numel() for p in result.best_model.parameters()),
        "congruent": (runs.congruent.describe() if runs.congruent is not None
                      else distill_focal.describe() if distill_focal is not None else None),
        "compatibility": compatibility,  # --compatible_with: BCT settings and compatibility test (§4.4)
        "overlap": finish_overlap(overlap, task, model_args.model, distill_info),  # docs/methods/09-heldout.md §9
        "baseline": majority_baseline(task),  # the floor a classifier must beat: the train majority class
    }, output_dir=model_args.output_dir)
    if congruent_args.save_teacher and labeler is not None:  # beside the student, for `bortify compare`
        save_teacher(out, labeler, report)
    sentence = ((lambda folder: runs.compat.write_sentence_files(result.best_model, folder))
                if runs.compat is not None else None)
    _write_output(out, result.best_model, tokenizer, result.added_rows, scores.rounds, task.main_metric, report,
                  sentence)
    return report


def output_inputs(model_args: FinetuneModelArguments, agora_args: AgoraArguments, old_model: str | None = None,
                  compatible_with: str | None = None) -> dict[str, str | None]:
    """The local folders fine-tuning reads (model, labeler, teacher, old model), which its output must keep clear
    of (bortify.outputs.refuse_inputs)."""
    inputs = {"model": model_args.model, "old model": old_model, "old model (--compatible_with)": compatible_with}
    if model_args.mode in ("agora", "distill"):
        inputs.update(labeler=agora_args.labeler, teacher=None if agora_args.labeler else agora_args.teacher)
    return inputs


def check_congruent(args: CongruentArguments, model_args: FinetuneModelArguments, task: TaskData,
                    agora_args: AgoraArguments | None = None) -> None:
    """--old_model needs a classification task (before any model is loaded); 'teacher' is distill mode's own."""
    from bortify.finetuning.congruent import is_teacher

    if not args.old_model:
        return
    if args.old_model == OLD_IS_TEACHER and model_args.mode != "distill":
        raise ValueError(f"--old_model {OLD_IS_TEACHER} names the teacher of --mode distill; in {model_args.mode} "
                         "mode give the old classifier's directory.")
    if task.regression:
        raise ValueError("--old_model (focal distillation) needs a classification task: negative flips are defined "
                         "for classes. Drop --old_model for this regression task.")
    from bortify.finetuning.old_model import check_max_length, label_names, label_order

    if model_args.mode == "distill" and is_teacher(args.old_model, agora_args.labeler if agora_args else None):
        return  # the teacher is checked against the task by build_labeler
    label_order(label_names(args.old_model, "old model"), task.label_names, "old model")  # config only, by name
    check_max_length(args.old_model, "old model", model_args.max_length)


def single_theta_agora_note(mode: str, thetas: list[dict], agora_args: AgoraArguments) -> str | None:
    """The warning for an Agora run that cannot repair anything: with one θ, `--prune worst` (the paper's rule)
    empties Θ after round 1, so the loop stops there and the result is plain fine-tuning. None otherwise."""
    if mode != "agora" or len(thetas) != 1 or agora_args.prune != "worst" or agora_args.max_rounds <= 1:
        return None
    return ("--mode agora with a single θ and --prune worst stops after round 1 (pruning the worst θ empties Θ), so "
            "no repaired round runs and the result is plain fine-tuning. Give several θ (e.g. --learning_rates 1e-3 "
            "5e-4) or --prune none to run up to --max_rounds rounds.")


def check_compatible(args: CompatibleArguments, congruent: CongruentArguments, model_args: FinetuneModelArguments,
                     task: TaskData) -> None:
    """--compatible_with needs a single-text classification task and an old sequence classifier with the task's
    label names (config only: before any model is loaded); any mode (plain, Agora, task distillation)."""
    if not args.compatible_with:
        return
    if congruent.old_model:
        raise ValueError("--compatible_with and --old_model cannot be combined yet (each trains with its own loss); "
                         "choose one.")
    if task.regression:
        raise ValueError("--compatible_with (BCT's influence loss) needs a classification task: the old model's "
                         "head must classify the new embedding. Drop --compatible_with for this regression task.")
    if len(task.text_columns) != 1:
        raise ValueError(f"--compatible_with needs a single-text task (an index holds single texts); this task has "
                         f"text columns {task.text_columns}. Drop --compatible_with.")
    from bortify.finetuning.old_model import check_max_length, label_names, label_order

    what = "old model (--compatible_with)"
    label_order(label_names(args.compatible_with, what), task.label_names, what)  # config only, by name
    check_max_length(args.compatible_with, what, model_args.max_length)


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


def teacher_settings(agora_args: AgoraArguments, model_args: FinetuneModelArguments):
    """The teacher candidates to build and compare on dev (teachers.TeacherSettings), or None for the stock labeler
    alone (Agora's default; also when an existing `labeler` is given)."""
    from bortify.finetuning.teachers import DISTILL_CANDIDATES, TeacherSettings

    candidates = agora_args.teacher_candidates or (DISTILL_CANDIDATES if model_args.mode == "distill" else ["stock"])
    if agora_args.labeler or (list(candidates) == ["stock"] and agora_args.teacher_ensemble == 1):
        return None
    return TeacherSettings(candidates=tuple(candidates), epochs=agora_args.labeler_epochs,
                           learning_rate=agora_args.labeler_learning_rate,
                           head_learning_rate=agora_args.teacher_head_learning_rate,
                           batch_size=agora_args.labeler_batch_size, ensemble=agora_args.teacher_ensemble,
                           max_train_samples=agora_args.labeler_max_train_samples,
                           max_length=model_args.max_length, eval_batch_size=model_args.eval_batch_size,
                           seed=model_args.seed)


def make_labeler(task: TaskData, model_args: FinetuneModelArguments, agora_args: AgoraArguments):
    """Agora's labeler / distillation's teacher (labelers.build_labeler, which refuses one under its dev bar);
    None in plain mode."""
    if model_args.mode not in ("agora", "distill"):
        return None
    labeler = build_labeler(
        task, labeler=agora_args.labeler, teacher=agora_args.teacher, max_length=model_args.max_length,
        seed=model_args.seed, epochs=agora_args.labeler_epochs, learning_rate=agora_args.labeler_learning_rate,
        batch_size=agora_args.labeler_batch_size, max_train_samples=agora_args.labeler_max_train_samples,
        min_dev_score=agora_args.labeler_min_dev_score, eval_batch_size=model_args.eval_batch_size,
        role="teacher" if model_args.mode == "distill" else "labeler",
        selection=teacher_settings(agora_args, model_args))
    log_progress(f"{'teacher' if model_args.mode == 'distill' else 'labeler'} ready: {labeler.source}, "
        f"dev score {labeler.dev_score:.4f}")
    return labeler


class Runs:
    """The student's fine-tuning runs on train and its predictions on dev: what plain search and Agora call.

    One bar counts fine-tuning runs (Agora's total depends on pruning and replays, so it is open-ended); each run
    shows its own bar over optimiser steps (trainer.StepBar). The tokenised train set is cached by size (train
    only grows)."""

    def __init__(self, student0, tokenizer, task: TaskData, model_args: FinetuneModelArguments,
                 grid_args: FinetuneGridArguments):
        self.student0, self.tokenizer, self.task, self.grid = student0, tokenizer, task, grid_args
        self.max_length, self.eval_batch_size, self.seed = (model_args.max_length, model_args.eval_batch_size,
                                                            model_args.seed)
        self.training = grid_args.training_arguments()
        self.dev_tok = tokenize(task.dev, tokenizer, task.text_columns, self.max_length)
        self.bar = tqdm(total=len(grid_args.thetas()) if model_args.mode == "plain" else None,
                        desc=f"finetune ({model_args.mode})", unit="run", dynamic_ncols=True)
        self._train_tok: dict[int, datasets.Dataset] = {}
        self.congruent = None  # congruent.CongruentRuns with --old_model
        self.compat = None  # bortify.compat.finetune.CompatFinetune with --compatible_with

    def fit(self, rows: list[dict], theta: dict):
        """A fresh copy of the student fine-tuned on `rows` with θ (trainer.fit)."""
        if len(rows) not in self._train_tok:  # train only grows, so its size identifies it
            self._train_tok.clear()
            self._train_tok[len(rows)] = tokenize(_to_dataset(rows, self.task), self.tokenizer,
                                                  self.task.text_columns, self.max_length)
        if self.congruent is not None:  # focal distillation against the old model (docs/methods/04-updates.md §4.3)
            from bortify.finetuning.congruent import fit_congruent

            model = fit_congruent(self.student0, self.tokenizer,
                                  self.congruent.train_set(rows, self._train_tok[len(rows)]), theta,
                                  self.congruent.focal, epochs=self.grid.num_train_epochs, max_steps=self.grid.max_steps,
                                  seed=self.seed, training=self.training)
        elif self.compat is not None:  # BCT's influence loss (docs/methods/04-updates.md §4.4)
            model = self.compat.fit(self.student0, self.tokenizer, self._train_tok[len(rows)], theta,
                                    epochs=self.grid.num_train_epochs, max_steps=self.grid.max_steps, seed=self.seed,
                                    training=self.training)
        else:
            model = fit(self.student0, self.tokenizer, self._train_tok[len(rows)], theta,
                        epochs=self.grid.num_train_epochs, max_steps=self.grid.max_steps, seed=self.seed,
                        training=self.training, eval_tok=self.dev_tok)
        self.bar.update(1)
        return model

    def predictions(self, model, ds_tok: datasets.Dataset):
        """Class ids (scores for regression) of `model` on a tokenised split."""
        return to_predictions(predict(model, self.tokenizer, ds_tok, self.eval_batch_size), self.task.regression)

    def dev_predict(self, model) -> list:
        return self.predictions(model, self.dev_tok).tolist()

    def dev_main_score(self, preds, golds=None) -> float:
        golds = self.task.dev["label"] if golds is None else golds
        return score(preds, golds, [self.task.main_metric], self.task.num_labels)[self.task.main_metric]

    def seen(self, n: int, theta: dict) -> int:
        """Training examples one run over `n` rows processes (an optimiser step takes batch × accumulation rows)."""
        batch = int(theta["batch_size"]) * self.grid.gradient_accumulation_steps
        return examples_seen(n, batch, self.grid.num_train_epochs, self.grid.max_steps)


# (restored: the fine-tuning refactor's commit calls it but had dropped it)
def _distill_result(task: TaskData, student0, tokenizer, labeler, distill_args: TaskDistillArguments,
                    model_args: FinetuneModelArguments, generator, dev_score_of, bar,
                    focal=None, compat=None) -> tuple[AgoraResult, dict]:
    """Mode 'distill' (docs/methods/07-task-distillation.md §7): one distillation run, recorded as round 1 so the report, the rounds
    plot and the card read it like the other modes."""
    start = time.perf_counter()
    model, info = distill(task, student0, tokenizer, labeler, distill_args, generator=generator, seed=model_args.seed,
                          max_length=model_args.max_length, progress=lambda msg: (bar.set_postfix_str(msg), log_progress(msg)),
                          focal=focal, compat=compat)
    bar.update(1)
    dev = dev_score_of(model)
    settings = {k.removeprefix("distill_"): v for k, v in info["settings"].items()
                if k in ("distill_temperature", "distill_alpha", "distill_learning_rate", "distill_epochs",
                         "distill_batch_size")}
    counts = info["transfer_set"]
    record = RoundRecord(round=1, thetas=[{"theta": settings, "dev_score": dev}], best_theta=settings, dev_score=dev,
                         mistakes=None, examples_added=counts["total"] - counts["gold"], train_size=counts["total"],
                         examples_seen=info["examples_seen"], seconds=round(time.perf_counter() - start, 1))
    return AgoraResult(best_model=model, best_round=1, best_dev_score=dev, rounds=[record], round_models={1: model},
                       examples_seen=info["examples_seen"]), info



def plain_search(runs: Runs, thetas: list[dict]) -> AgoraResult:
    """Plain fine-tuning: enumerate Θ once on the original train set, keep the best on dev (the baseline),
    recorded as round 1."""
    train_rows = _rows(runs.task.train, runs.task)
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
    """The Agora loop (agora.py, docs/methods/03-agora.md §3) over train and dev, wired to the student's runs, the labeler
    and the generator."""
    task = runs.task
    train_rows, dev_rows = _rows(task.train, task), _rows(task.dev, task)

    def generate(k):
        return lambda rows, banned, rng: generate_rows(rows, task.text_columns, generator, k, rng, banned)

    return agora(
        train=train_rows, dev=dev_rows, thetas=thetas, fit=runs.fit, dev_predict=runs.dev_predict,
        dev_score=runs.dev_main_score, mistakes=mistake_rule(task.regression), generate=generate(agora_args.k),
        label=agora_labeler(task, agora_args, labeler, train_rows), key=_key(task), examples_seen=runs.seen,
        max_rounds=agora_args.max_rounds, repair_fraction=agora_args.repair_fraction,
        verify=labeler if agora_args.verify_mistakes and not task.regression else None,
        generate_train=generate(agora_args.train_k) if agora_args.train_k else None,
        prune=agora_args.prune, replay=agora_args.replay, seed=runs.seed,
        progress=runs.bar.set_postfix_str, theta_label=theta_text, log=log_progress)


@dataclass
class Scores:
    """What the report says about the returned model (and every round's best) on dev and, at the end, test."""

    dev: dict
    dev_repair: dict | None
    dev_note: str
    test: dict
    rounds: list[dict]  # RoundRecord dicts + each round's test score
    select_idx: list[int]
    repair_idx: list[int] | None


def score_result(runs: Runs, result: AgoraResult, model_args: FinetuneModelArguments,
                 agora_args: AgoraArguments) -> Scores:
    """Step 4: the best model on dev (its selection / repair parts, as agora.py split them) and on test, and every
    round's best model on test; the round models are released afterwards."""
    task = runs.task
    log_progress(f"predicting on test ({len(task.test)} rows)")
    test_tok = tokenize(task.test, runs.tokenizer, task.text_columns, runs.max_length)

    def metrics_of(preds, gold, idx=None):
        if idx is not None:
            preds, gold = [preds[i] for i in idx], [gold[i] for i in idx]
        return score(preds, gold, task.metrics, task.num_labels)

    best = result.best_model
    select_idx, repair_idx, dev_note = dev_parts(task, model_args, agora_args)
    dev_gold = list(task.dev["label"])
    dev_preds = runs.predictions(best, runs.dev_tok)
    test_metrics = metrics_of(runs.predictions(best, test_tok), task.test["label"])
    rounds = [r.to_dict() for r in result.rounds]
    for rec in rounds:
        model = result.round_models.get(rec["round"])
        if model is not None:
            rec["test_score"] = (test_metrics[task.main_metric] if model is best else
                                 metrics_of(runs.predictions(model, test_tok), task.test["label"])[task.main_metric])
    result.round_models.clear()
    return Scores(dev=metrics_of(dev_preds, dev_gold, select_idx),
                  dev_repair=metrics_of(dev_preds, dev_gold, repair_idx) if repair_idx is not None else None,
                  dev_note=dev_note, test=test_metrics, rounds=rounds, select_idx=select_idx, repair_idx=repair_idx)


def task_fields(task: TaskData, model_args: FinetuneModelArguments, data_args: FinetuneDataArguments) -> dict:
    """The report's description of the model and the data."""
    dataset, data_files = data_args.resolved_dataset(), data_args.data_files()
    binary = not task.regression and task.num_labels == 2
    return {
        "base_model": model_args.model,
        # as given, but local files by their names only (no absolute paths in a report or a card)
        "dataset": dataset_display(dataset, data_files) + (f"/{data_args.dataset_config}"
                                                           if data_args.dataset_config else ""),
        "dataset_hub_id": dataset_hub_id(dataset, data_files),
        "task": task.name,
        "text_columns": task.text_columns,
        "labels": task.label_names,
        # binary F1 scores class 1 (trainer.score): its name
        "positive_label": task.label_names[1] if binary else None,
        "regression": task.regression,
        "metric": task.main_metric,
        "metrics": task.metrics,
    }


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


def _write_output(out: Path, model, tokenizer, added_rows: list[dict], rounds: list[dict], metric: str,
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
        if sentence is not None:  # --compatible_with: the sentence-transformers files (bortify.compat.finetune)
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
