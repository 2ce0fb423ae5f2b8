"""`finetune(...)`: the library function behind `bortify finetune` and the pipeline's fine-tuning stage.

Order of work (cheap checks first, the test split last):
  1. arguments (dataclass __post_init__), output directory (not an input, not finished), data (files, columns,
     labels, empty texts, one class, unknown dev/test labels), model (a BERT-shaped encoder), output writable;
  2. Agora / distill: the labeler (the fine-tuned teacher) is built/loaded and must pass its dev threshold;
  3. plain: every θ once, best on dev | agora: the loop (agora.py) over train and dev only | distill: the
     student learns the teacher's soft labels over train + unlabelled in-domain text (distill.py);
  4. only then the test split: the best model and every round's best model are scored on it;
  5. the checkpoint, report.json and rounds.png are written (report.json last: it marks a finished output).

The mode (`--mode`) is picked once as a type (modes.py: Plain, Agora, Distill) and asked for its labeler, search,
dev split and report fields; runs.py holds the student's runs and their scores (steps 3-4), output.py the files
(step 5). Helpers read the model arguments through `runs.RunSettings` (max_length, eval_batch_size, seed).
"""

from __future__ import annotations

import logging
import time

import torch

from bortify.finetuning.arguments import (AgoraArguments, CompatibleArguments, CongruentArguments,
                                          FinetuneDataArguments, FinetuneGridArguments, FinetuneModelArguments,
                                          TaskDistillArguments)
from bortify.finetuning.congruent import OLD_IS_TEACHER
from bortify.finetuning.modes import Mode, make_generator, mode_of
from bortify.finetuning.output import save_teacher, write_output
from bortify.finetuning.overlap import clean_task
from bortify.finetuning.overlap import finish as finish_overlap
from bortify.finetuning.overlap import majority_baseline
from bortify.finetuning.runs import Runs, RunSettings, Scores, score_result
from bortify.finetuning.tasks import TaskData, dataset_display, load_task
from bortify.finetuning.trainer import fitted_max_length, load_classifier_with_note, log_progress
from bortify.heldout import load_heldout
from bortify.hub.card.naming import dataset_hub_id
from bortify.outputs import Output, claim
from bortify.reports import FinetuneReport
from bortify.utils import torch_threads

logger = logging.getLogger(__name__)


def example_text(task: TaskData, limit: int = 120):
    """One short text (a [text, text] pair for pair tasks) from the train split, for the card's usage example."""
    cols = task.text_columns
    sample = task.train.select(range(min(len(task.train), 200)))
    rows = [[r[c] for c in cols] for r in sample]
    short = next((r for r in rows if sum(len(t) for t in r) <= limit), None)
    chosen = [" ".join(t.split())[:200] for t in (short or min(rows, key=lambda r: sum(len(t) for t in r)))]
    return chosen[0] if len(cols) == 1 else chosen


def finetune(model_args: FinetuneModelArguments, data_args: FinetuneDataArguments,
             grid_args: FinetuneGridArguments, agora_args: AgoraArguments,
             distill_args: TaskDistillArguments | None = None,
             congruent_args: CongruentArguments | None = None,
             compat_args: CompatibleArguments | None = None) -> FinetuneReport:
    """Fine-tune (plain, Agora or task distillation) and write the checkpoint + report.json + rounds.png.
    Returns the report. `distill_args` (mode 'distill'; default: TaskDistillArguments()) sets the distillation;
    `congruent_args.old_model` trains with focal distillation against the replaced model
    (docs/methods/04-updates.md §4.3);
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
    mode = mode_of(model_args.mode, agora_args, distill_args)
    thetas = grid_args.thetas()
    model_args.max_length = fitted_max_length(model_args)  # the default, shortened to a small model's positions
    settings = RunSettings.of(model_args)
    task = load_task(data_args)
    # the run's test texts out of train, dev and the unlabelled pool, before any model sees them
    # (docs/methods/09-heldout.md §9)
    overlap = clean_task(task, load_heldout(data_args.heldout), user_files=bool(task.splits.get("files"))
                         and task.splits.get("test_source") == "test")
    check_congruent(congruent_args, mode, task, settings.max_length)
    check_compatible(compat_args, congruent_args, task, settings.max_length)
    if (note := mode.thetas_note(thetas)) is not None:
        logger.warning(note)
    # Seed before anything random is drawn: the classifier head (and pooler) are initialised at load time.
    transformers.set_seed(settings.seed)
    student0, tokenizer, load_note = load_classifier_with_note(model_args.model, task.label_names, task.regression,
                                                               max_length=settings.max_length)
    log_progress(f"student {model_args.model}: {load_note}")
    out = output.work_dir()  # the output folder, or (a replacement) its sibling being built
    if torch.cuda.is_available():
        student0 = student0.to("cuda")
    labeler = mode.make_labeler(task, settings)
    generator = make_generator(agora_args, student0, tokenizer, labeler) if mode.needs_generator() else None

    # --- fine-tuning on train, selection on dev (the test split is not touched here) ---------------------------
    runs = Runs(student0, tokenizer, task, settings, grid_args, name=mode.name, total=mode.run_total(thetas))
    focal = mode.old_model_losses(runs, congruent_args, settings)  # --old_model (docs/methods/04-updates.md §4.3)
    attach_compatible(runs, compat_args, settings)  # --compatible_with (docs/methods/04-updates.md §4.4)
    result, info = mode.search(runs, thetas, labeler, generator, focal)
    runs.bar.close()
    train_seconds = time.perf_counter() - t_start

    # --- the end: now, and only now, the test split ----------------------------------------------------------
    scores = score_result(runs, result, mode.dev_parts(task, settings.seed))
    report = make_report(model_args, data_args, grid_args, mode, thetas, runs, result, scores, info=info,
                         labeler=labeler, focal=focal, load_note=load_note, overlap=overlap,
                         train_seconds=train_seconds)
    if congruent_args.save_teacher and labeler is not None:  # beside the student, for `bortify compare`
        save_teacher(out, labeler, report)
    sentence = ((lambda folder: runs.compat.write_sentence_files(result.best_model, folder))
                if runs.compat is not None else None)
    write_output(out, result.best_model, tokenizer, result.added_rows, scores.rounds, task.main_metric, report,
                 sentence)
    return report


def make_report(model_args: FinetuneModelArguments, data_args: FinetuneDataArguments,
                grid_args: FinetuneGridArguments, mode: Mode, thetas: list[dict], runs: Runs, result, scores: Scores,
                *, info, labeler, focal, load_note: str, overlap, train_seconds: float) -> FinetuneReport:
    """Step 4's report (written last by output.write_output): the task, the mode's fields, the scores."""
    task = runs.task
    labeler_test = labeler.evaluate(task.test) if labeler is not None else None  # for the card and the benchmark
    if labeler is not None:  # every teacher candidate's test score beside its dev score (teachers.py)
        labeler.score_candidates(task.test, {("pearsonr" if task.regression else "accuracy"): labeler_test})
    fields = task_fields(task, model_args.model, data_args)
    compatibility = (runs.compat.evaluate(result.best_model, runs.tokenizer, fields["dataset"], model_args.seed)
                     if runs.compat is not None else None)
    return FinetuneReport.make({
        **fields,
        "mode": mode.name,
        "labeler": ({**labeler.describe(), ("test_pearsonr" if task.regression else "test_accuracy"): labeler_test}
                    if labeler else None),
        # generator / agora (Agora's settings), distill (transfer-set sizes by source, settings, seconds:
        # distill.py), theta (Θ; None for distillation)
        **mode.report_fields(thetas, task, result, scores, info),
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
                      else focal.describe() if focal is not None else None),
        "compatibility": compatibility,  # --compatible_with: BCT settings and compatibility test (§4.4)
        "overlap": finish_overlap(overlap, task, model_args.model, info),  # docs/methods/09-heldout.md §9
        "baseline": majority_baseline(task),  # the floor a classifier must beat: the train majority class
    }, output_dir=model_args.output_dir)


def attach_compatible(runs: Runs, compat_args: CompatibleArguments, settings: RunSettings) -> None:
    """--compatible_with: every run (and distillation) trains with BCT's influence loss through the old model's
    frozen head (docs/methods/04-updates.md §4.4); the old model embeds the train texts once, here."""
    if not compat_args.compatible_with:
        return
    from bortify.finetuning.compatible import CompatFinetune

    log_progress(f"--compatible_with {compat_args.compatible_with}: embedding the train texts with the old model "
                 "(once)")
    runs.compat = CompatFinetune(compat_args.settings(), runs.task, runs.student0, runs.tokenizer,
                                 max_length=settings.max_length, batch_size=settings.eval_batch_size)


def output_inputs(model_args: FinetuneModelArguments, agora_args: AgoraArguments, old_model: str | None = None,
                  compatible_with: str | None = None) -> dict[str, str | None]:
    """The local folders fine-tuning reads (model, labeler, teacher, old model), which its output must keep clear
    of (bortify.outputs.refuse_inputs)."""
    inputs = {"model": model_args.model, "old model": old_model, "old model (--compatible_with)": compatible_with}
    inputs.update(mode_of(model_args.mode, agora_args).inputs())
    return inputs


def check_congruent(args: CongruentArguments, mode: Mode, task: TaskData, max_length: int) -> None:
    """--old_model needs a classification task (before any model is loaded); 'teacher' names the run's own teacher
    (a mode whose second model is a teacher: distill)."""
    from bortify.finetuning.congruent import is_teacher

    if not args.old_model:
        return
    if args.old_model == OLD_IS_TEACHER and mode.role != "teacher":
        raise ValueError(f"--old_model {OLD_IS_TEACHER} names the teacher of --mode distill; in {mode.name} "
                         "mode give the old classifier's directory.")
    if task.regression:
        raise ValueError("--old_model (focal distillation) needs a classification task: negative flips are defined "
                         "for classes. Drop --old_model for this regression task.")
    from bortify.finetuning.old_model import check_max_length, label_names, label_order

    if mode.role == "teacher" and is_teacher(args.old_model, mode.agora.labeler):
        return  # the teacher is checked against the task by build_labeler
    label_order(label_names(args.old_model, "old model"), task.label_names, "old model")  # config only, by name
    check_max_length(args.old_model, "old model", max_length)


def check_compatible(args: CompatibleArguments, congruent: CongruentArguments, task: TaskData,
                     max_length: int) -> None:
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
    check_max_length(args.compatible_with, what, max_length)


def task_fields(task: TaskData, base_model: str, data_args: FinetuneDataArguments) -> dict:
    """The report's description of the model and the data."""
    dataset, data_files = data_args.resolved_dataset(), data_args.data_files()
    binary = not task.regression and task.num_labels == 2
    return {
        "base_model": base_model,
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
