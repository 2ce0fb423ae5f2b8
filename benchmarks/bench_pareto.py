"""Accuracy vs speed: bortify's students against what users pick instead, side by side in one run.

For each task (embedded:rotten-tomatoes, binary; embedded:debates, 3-way) and train size (300, 1,000 rows), on ONE
split shared by every model (bortify's prepare_task, split_seed 42; dev of 300 rows (200 for the 1,055-statement
debates); test = all remaining rows up to 1,000):
  peers  - teacher:  all-MiniLM-L6-v2 fine-tuned on the train rows (bortify.finetuning.labelers.build_labeler);
         - frozen MiniLM + LR: mean-pooled sentence embeddings + logistic regression (C chosen on dev);
         - model2vec + LR: static embeddings distilled from the same MiniLM (pca_dims 256) + logistic regression;
         - SetFit: not run (contrastive fine-tuning of MiniLM is too slow for 2 shared CPU cores; not installed).
  bortify - plain: `finetune(mode="plain")` of the student (Θ grid once, best on dev);
         - Agora: `finetune(mode="agora")`, bortify's defaults, the teacher above as the labeler (docs/methods/03-agora.md §3);
         - task-distilled (--with_distill: `finetune(mode="distill")`, docs/methods/07-task-distillation.md §7);
         - int8 (--with_int8: the first seed's task-distilled student (else Agora's) through bortify's int8 CPU
           path, ONNX Runtime; timed with the others).
Seeds (default 1 2 3) vary the fine-tuning of the teacher and of the students; the logistic-regression peers are
deterministic given the split, so they run once. Speed: sentences/s over the real test texts, text in -> label out
(tokenisation included), batch 32, after 3 warm-up batches, median of 3 passes, measured after all training, one
model at a time, in one process with 1 torch thread (every process here uses 1 torch thread; nothing else is
changed or unset). Writes benchmarks/results/pareto.json + pareto.png and prints a Markdown table for BENCHMARKS.md.

    .venv/bin/python benchmarks/bench_pareto.py --jobs 2             # the full run (see BENCHMARKS.md for the time)
    .venv/bin/python benchmarks/bench_pareto.py --quick              # smoke run: tiny sizes, 1 seed (~5 min)
    .venv/bin/python benchmarks/bench_pareto.py --summarize benchmarks/results/pareto.json
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from common import RESULTS, TEACHER, distil_model2vec, mean_sd  # first: the environment (benchmarks/common.py)
os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bortify.utils import write_json_atomic  # noqa: E402



@dataclass(frozen=True)
class TaskPlan:
    """A benchmark task: where its data comes from and the fixed sizes of its dev/test splits."""

    key: str
    dataset: str
    dev_rows: int
    max_length: int  # tokens; rotten-tomatoes snippets: 99th percentile 55; debates: median 19, 90th pct 183


TASK_PLANS = {
    "rotten-tomatoes": TaskPlan("rotten-tomatoes", "embedded:rotten-tomatoes", dev_rows=300, max_length=64),
    "debates": TaskPlan("debates", "embedded:debates", dev_rows=200, max_length=128),
}


@dataclass(frozen=True)
class Settings:
    """Everything a unit of work needs (picklable for the worker processes)."""

    student: str
    student_name: str
    work: str
    model2vec_dir: str
    max_test_rows: int
    min_test_rows: int
    epochs: float
    learning_rates: tuple
    max_rounds: int
    k: int
    teacher_epochs: float
    teacher_learning_rate: float
    labeler_min_dev_score: float | None
    with_distill: bool
    with_int8: bool
    first_seed: int
    distill: tuple = ()  # TaskDistillArguments overrides of the task-distilled point, as (name, value) pairs
    first_seed_only: tuple = ()  # points trained at the first seed only (to fit a run in the time; see --help)


# --- splits -----------------------------------------------------------------------------------------------------

def unique_rows(dataset: str) -> int:
    """The rows prepare_task splits: distinct non-empty texts (it drops exact duplicates before carving splits)."""
    from bortify.resources import load_embedded_dataset

    return len({t for t in load_embedded_dataset(dataset)["text"] if t.strip()})


def split_plan(plan: TaskPlan, train_rows: int, n_unique: int, max_test: int, min_test: int) -> dict:
    """prepare_task arguments giving exactly `dev_rows` dev rows and all remaining rows up to `max_test` as test
    (fractions of the de-duplicated data, which prepare_task rounds back to these counts). When the data is too
    small, train is clipped so that at least `min_test` test rows remain (debates at 1,000)."""
    dev = plan.dev_rows
    train = min(train_rows, n_unique - dev - min_test)
    if train < 10:
        raise SystemExit(f"{plan.dataset}: {n_unique} distinct rows cannot hold {dev} dev + {min_test} test rows "
                         "and a training set; lower --min_test_rows or the dev size.")
    test = min(max_test, n_unique - dev - train)
    return dict(dataset=plan.dataset, dev_fraction=dev / n_unique, test_fraction=test / n_unique, split_seed=42,
                max_train_samples=train)


def panel_key(task: str, train_rows: int) -> str:
    return f"{task}-{train_rows}"


# --- hooks for the points being built elsewhere -----------------------------------------------------------------

def distill_available() -> str | None:
    """HOOK (task-distilled point): None when `finetune(mode="distill")` exists, else why not."""
    from bortify.finetuning.arguments import FinetuneModelArguments

    try:
        FinetuneModelArguments(model="x", output_dir="x", mode="distill")
    except ValueError as exc:
        return f"bortify's fine-tuning has no mode 'distill' yet ({exc})"
    return None


def distill_arguments(settings: Settings):
    """The TaskDistillArguments of the task-distilled point: bortify's defaults + the run's --distill overrides."""
    from bortify.finetuning.arguments import TaskDistillArguments

    return TaskDistillArguments(**dict(settings.distill))


def parse_overrides(pairs: list[str]) -> tuple:
    """--distill NAME=VALUE ... -> ((name, typed value), ...), checked against TaskDistillArguments before any work."""
    import dataclasses

    from bortify.finetuning.arguments import TaskDistillArguments

    fields = {f.name: f for f in dataclasses.fields(TaskDistillArguments)}
    out = []
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        name = name if name.startswith("distill_") else f"distill_{name}"
        if not sep or name not in fields:
            raise SystemExit(f"--distill {pair!r}: expected NAME=VALUE with NAME one of {sorted(fields)}.")
        value = None if raw.lower() in ("none", "") else json.loads(raw) if raw[:1].isdigit() or raw[:1] in "-." \
            else {"true": True, "false": False}.get(raw.lower(), raw)
        out.append((name, value))
    TaskDistillArguments(**dict(out))  # fails here, before any work, on a bad value
    return tuple(out)


def int8_available() -> str | None:
    """None when bortify's default int8 CPU path (bortify.bench.DEFAULT_INT8_PATH, ONNX Runtime) is installed."""
    from bortify.bench import DEFAULT_INT8_PATH, path_unavailable_reason

    why = path_unavailable_reason(DEFAULT_INT8_PATH)
    return f"int8 path {DEFAULT_INT8_PATH} is not available: {why}" if why else None


def int8_point(model_dir: Path, out_dir: Path) -> Path:
    """The student at `model_dir` made int8 by bortify's CPU path (`bortify.bench.int8_cpu_model`: ONNX export,
    onnxruntime dynamic int8, docs/methods/05-compression.md §5) into `out_dir` (model.int8.onnx + the tokenizer); returns out_dir."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from bortify.bench import int8_cpu_model

    out_dir.mkdir(parents=True, exist_ok=True)
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), use_safetensors=True,
                                                               trust_remote_code=False).eval()
    int8_cpu_model(model, workdir=out_dir)
    AutoTokenizer.from_pretrained(str(model_dir)).save_pretrained(str(out_dir))
    return out_dir


# --- one unit of work: one task, one train size, one seed ------------------------------------------------------

def point_inputs(name: str, config: dict) -> dict:
    """What a point's result depends on (besides the unit's split and seed): a finished point of an earlier run is
    reused when these are equal, so a run that changes, e.g., only the distillation settings retrains only the
    task-distilled point (the teacher it needs is kept on disk)."""
    st = config["settings"]
    split = {"data": config["data"], "plan": config["plan"]}
    teacher = {**split, "teacher_epochs": st["teacher_epochs"], "teacher_learning_rate": st["teacher_learning_rate"]}
    student = {**split, "student": st["student"]}
    if name == "teacher":
        return teacher
    if name == "plain":
        return {**student, "epochs": st["epochs"], "learning_rates": st["learning_rates"]}
    if name == "agora":
        return {**teacher, **student, "epochs": st["epochs"], "learning_rates": st["learning_rates"],
                "max_rounds": st["max_rounds"], "k": st["k"], "labeler_min_dev_score": st["labeler_min_dev_score"]}
    if name == "distill":  # bortify's defaults as resolved by that run + its overrides
        return {**teacher, **student, "distill": with_new_defaults(config.get("distill_arguments")),
                "labeler_min_dev_score": st["labeler_min_dev_score"]}  # the teacher passes bortify's gate or not
    if name in ("frozen_lr", "model2vec_lr"):
        return {**split, "model2vec_dir": st["model2vec_dir"]}
    return {**split, "settings": st}  # int8 and anything new: the whole configuration


def with_new_defaults(recorded: dict | None) -> dict | None:
    """Task-distillation arguments as recorded by a run, plus every option added to TaskDistillArguments since,
    at its default: a new option's default keeps the old behaviour (e.g. distill_w_layers 0 = off), so a point
    trained before it existed is still reusable; a changed value of any option still retrains."""
    import dataclasses

    from bortify.finetuning.arguments import TaskDistillArguments

    if recorded is None:
        return None
    defaults = {f.name: f.default for f in dataclasses.fields(TaskDistillArguments)
                if f.default is not dataclasses.MISSING}
    return json.loads(json.dumps({**defaults, **recorded}))


def split_fingerprint(task) -> str:
    """A hash of the split's texts (train, dev, test): prepare_task's arguments alone do not pin the split (a code
    change to the splitting moves rows between train and test)."""
    import hashlib

    digest = hashlib.sha256()
    for split in (task.train, task.dev, task.test):
        digest.update("\x1e".join(sorted(" ".join(map(str, (r[c] for c in task.text_columns))) for r in split))
                      .encode("utf-8") + b"\x1d")
    return digest.hexdigest()[:16]


def reusable_points(unit: Path, config: dict, fingerprint: str | None = None) -> dict:
    """Finished points of an earlier run of this unit whose inputs equal this run's (and whose model, when the
    run keeps it, is still on disk). None when the earlier run's split texts differ (`fingerprint`)."""
    if not (unit / "unit.json").exists():
        return {}
    old = json.loads((unit / "unit.json").read_text())
    if old.get("config", {}).get("data") != config["data"]:
        raise SystemExit(f"{unit} holds another split than this run's; use a fresh --work_dir.")
    if fingerprint is not None and old.get("split_fingerprint") != fingerprint:
        print(f"[{unit.name}] the earlier run's split texts differ from this run's (prepare_task changed): "
              "retraining every point", flush=True)
        return {}
    return {name: point for name, point in old.get("points", {}).items()
            if point_inputs(name, old["config"]) == point_inputs(name, config)
            and ("model_dir" not in point or Path(point["model_dir"]).exists())}


def unit_config(settings: Settings, plan: TaskPlan, data: dict) -> dict:
    """The inputs of a unit, as JSON: the split, the task plan, the run's settings and the task-distillation
    arguments in full (a change of bortify's defaults retrains the task-distilled point)."""
    config = {"data": data, "plan": asdict(plan), "settings": asdict(settings),
              "distill_arguments": asdict(distill_arguments(settings)) if settings.with_distill else None}
    return json.loads(json.dumps(config))


def run_unit(settings: Settings, plan: TaskPlan, data: dict, seed: int) -> dict:
    """Trains every model of one (task, size, seed) and scores it on test. Writes unit.json after every point; a
    re-run with the same --work_dir reuses every point whose inputs did not change (point_inputs). Student models
    are kept for the first seed only (they are timed later); teachers are kept (they label for Agora/distill)."""
    torch.set_num_threads(1)
    from bortify.finetuning.arguments import (AgoraArguments, FinetuneDataArguments, FinetuneGridArguments,
                                              FinetuneModelArguments)
    from bortify.finetuning.finetune import finetune
    from bortify.finetuning.labelers import LabelerError, build_labeler
    from bortify.finetuning.tasks import prepare_task

    unit = Path(settings.work) / f"{panel_key(plan.key, data['max_train_samples'])}-seed{seed}"
    config = unit_config(settings, plan, data)
    task = prepare_task(**data)
    fingerprint = split_fingerprint(task)
    reuse = reusable_points(unit, config, fingerprint)
    unit.mkdir(parents=True, exist_ok=True)
    max_len = plan.max_length
    record = {"task": plan.key, "train_rows": len(task.train), "seed": seed, "config": config, "splits": task.splits,
              "split_fingerprint": fingerprint, "label_names": task.label_names, "points": {}}
    points = record["points"]
    first = seed == settings.first_seed
    wanted = [n for n in ("teacher", "plain", "agora", "distill", "int8", "frozen_lr", "model2vec_lr")
              if (n != "distill" or settings.with_distill) and (n != "int8" or settings.with_int8)
              and (first or n not in settings.first_seed_only + ("frozen_lr", "model2vec_lr", "int8"))]
    print(f"[{unit.name}] train {len(task.train)} dev {len(task.dev)} test {len(task.test)}; "
          f"reused: {', '.join(n for n in wanted if n in reuse) or 'none'}", flush=True)

    def save() -> None:
        write_json_atomic(unit / "unit.json", record)

    def ready(name: str) -> bool:
        if name in reuse:
            points[name] = reuse[name]
            return True
        return name not in wanted

    # the fine-tuned teacher (also Agora's labeler and the distillation teacher, as in bench_agora.py)
    if not ready("teacher"):
        t0 = time.perf_counter()
        lab = build_labeler(task, labeler=None, teacher=TEACHER, max_length=max_len, seed=seed,
                            epochs=settings.teacher_epochs, learning_rate=settings.teacher_learning_rate,
                            batch_size=16, min_dev_score=-1.0)  # a benchmark peer: scored whatever its dev accuracy
        lab.model.save_pretrained(unit / "teacher")
        lab.tokenizer.save_pretrained(unit / "teacher")
        points["teacher"] = {"test": lab.evaluate(task.test), "dev": lab.dev_score,
                             "seconds": time.perf_counter() - t0, "model_dir": str(unit / "teacher")}
        del lab
        save()

    common = dict(max_length=max_len, seed=seed, overwrite=True)
    grid = FinetuneGridArguments(learning_rates=list(settings.learning_rates), weight_decays=[0.01],
                                 warmup_ratios=[0.1], batch_sizes=[16], num_train_epochs=settings.epochs)

    def bortify_point(name: str, mode: str, agora_args: AgoraArguments, **extra) -> None:
        if ready(name):
            return
        t0 = time.perf_counter()
        try:
            rep = finetune(FinetuneModelArguments(model=settings.student, output_dir=str(unit / name), mode=mode,
                                                  **common),
                           FinetuneDataArguments(**data), grid, agora_args, **extra)
        except LabelerError as exc:  # bortify refuses a labeler under its dev threshold: that is the result
            points[name] = {"refused": str(exc), "seconds": time.perf_counter() - t0}
            print(f"[{unit.name}] {name}: refused: {exc}", flush=True)
            save()
            return
        points[name] = {"test": rep["test"][rep["metric"]], "dev": rep["dev"][rep["metric"]],
                        "seconds": time.perf_counter() - t0, "model_dir": str(unit / name),
                        "best_round": rep["best_round"], "examples_added": rep["examples_added"],
                        "num_parameters": rep["num_parameters"]}
        if rep.get("distill"):
            points[name]["distill"] = {k: rep["distill"].get(k) for k in ("transfer_set", "teacher_agreement",
                                                                            "seconds", "examples_seen")}
        save()

    bortify_point("plain", "plain", AgoraArguments())
    agora_args = dict(max_rounds=settings.max_rounds, k=settings.k, labeler=str(unit / "teacher"),
                      labeler_min_dev_score=settings.labeler_min_dev_score)
    bortify_point("agora", "agora", AgoraArguments(**agora_args))
    # the task-distilled point (docs/methods/07-task-distillation.md §7): the fine-tuned teacher comes in as Agora's labeler does
    bortify_point("distill", "distill", AgoraArguments(**agora_args), **distill_kwargs(settings))
    of = next((n for n in ("distill", "agora") if "model_dir" in points.get(n, {})), None)
    if settings.with_int8 and not ready("int8") and of is not None:
        from pareto_peers import int8_predictor

        t0 = time.perf_counter()
        int8_dir = int8_point(Path(points[of]["model_dir"]), unit / "int8")
        predict, n_params = int8_predictor(str(int8_dir), max_len)
        preds = [int(p) for i in range(0, len(task.test), 32) for p in predict(task.test["text"][i:i + 32])]
        points["int8"] = {"test": float(np.mean(np.asarray(preds) == np.asarray(task.test["label"]))),
                          "model_dir": str(int8_dir), "of": of, "seconds": time.perf_counter() - t0,
                          "num_parameters": n_params}
        save()

    if first:  # deterministic given the split: once per panel
        if not (ready("frozen_lr") and ready("model2vec_lr")):
            points.update(logistic_peers(settings, task, max_len, unit))
    else:  # only the first seed's students are timed
        for name in ("plain", "agora", "distill", "int8"):
            shutil.rmtree(unit / name, ignore_errors=True)
            points.get(name, {}).pop("model_dir", None)
    save()
    print(f"[{unit.name}] " + ", ".join(f"{k} {v['test']:.3f}" for k, v in points.items() if "test" in v),
          flush=True)
    return record


def distill_kwargs(settings: Settings) -> dict:
    """The extra finetune() argument of mode 'distill', found by name in finetune's signature."""
    import inspect

    from bortify.finetuning.finetune import finetune

    name = next((n for n in inspect.signature(finetune).parameters if "distill" in n), None)
    return {name: distill_arguments(settings)} if name else {}


def logistic_peers(settings: Settings, task, max_len: int, unit: Path) -> dict:
    """Frozen MiniLM + LR and model2vec + LR: embeddings of train/dev/test, C on dev, scored on test."""
    from model2vec import StaticModel
    from transformers import AutoModel, AutoTokenizer

    from bortify.resources import resolve_model
    from pareto_peers import fit_logistic, mean_pooled, static_embeddings

    minilm = resolve_model(TEACHER)
    encoder = AutoModel.from_pretrained(minilm, use_safetensors=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(minilm)
    m2v = StaticModel.from_pretrained(settings.model2vec_dir, force_download=False)
    embed = {"frozen_lr": lambda texts: mean_pooled(encoder, tokenizer, texts, max_len),
             "model2vec_lr": lambda texts: static_embeddings(m2v, texts, max_len)}
    out = {}
    for name, fn in embed.items():
        t0 = time.perf_counter()
        x = {split: fn(getattr(task, split)["text"]) for split in ("train", "dev", "test")}
        probe = fit_logistic(x["train"], task.train["label"], x["dev"], task.dev["label"])
        test = float((probe.classifier.predict(x["test"]) == np.asarray(task.test["label"])).mean())
        with open(unit / f"{name}.pkl", "wb") as f:  # our own file, read back by this run's timing phase only
            pickle.dump(probe.classifier, f)
        out[name] = {"test": test, "dev": probe.dev_accuracy, "C": probe.C, "dev_by_C": probe.dev_by_C,
                     "seconds": time.perf_counter() - t0, "model_dir": str(unit / f"{name}.pkl"),
                     "deterministic": True}
    return out


# --- timing phase -----------------------------------------------------------------------------------------------

def predictor_for(name: str, point: dict, settings: Settings, max_len: int):
    from bortify.resources import resolve_model
    from pareto_peers import classifier_predictor, frozen_encoder_predictor, static_predictor

    if name in ("frozen_lr", "model2vec_lr"):
        with open(point["model_dir"], "rb") as f:
            clf = pickle.load(f)
        if name == "frozen_lr":
            return frozen_encoder_predictor(resolve_model(TEACHER), clf, max_len)
        return static_predictor(settings.model2vec_dir, clf, max_len)
    if name == "int8":
        from pareto_peers import int8_predictor

        return int8_predictor(point["model_dir"], max_len)
    return classifier_predictor(point["model_dir"], max_len)


def time_panel(settings: Settings, plan: TaskPlan, data: dict, unit: dict, repeats: int) -> dict:
    """Sentences/s of every timed model of one panel (the first seed's), passes interleaved across the models."""
    from bortify.finetuning.tasks import prepare_task
    from pareto_peers import throughput

    task = prepare_task(**data)
    texts, gold = task.test["text"], task.test["label"]
    predictors, params = {}, {}
    for name, point in unit["points"].items():
        if "model_dir" in point:
            predictors[name], params[name] = predictor_for(name, point, settings, plan.max_length)
    load_before = os.getloadavg()[0]
    speeds = throughput(predictors, texts, batch_size=32, repeats=repeats)
    load_after = os.getloadavg()[0]
    out = {}
    for name, tp in speeds.items():
        acc = sum(int(p == g) for p, g in zip(tp.predictions, gold)) / len(gold)
        out[name] = {"sentences_per_s": tp.sentences_per_s, "passes": tp.passes, "sentences": tp.sentences,
                     "batch_size": tp.batch_size, "parameters": params[name], "accuracy_of_timed_pass": acc,
                     "load_average_1min": [load_before, load_after]}
        print(f"[time {panel_key(plan.key, unit['train_rows'])}] {name}: {tp.sentences_per_s:.1f} sentences/s "
              f"{tp.passes} (accuracy {acc:.3f}; load {load_before:.1f} -> {load_after:.1f})", flush=True)
    return out


# --- the run ----------------------------------------------------------------------------------------------------

POINT_LABELS = {
    "teacher": "teacher: all-MiniLM-L6-v2 fine-tuned",
    "frozen_lr": "frozen all-MiniLM-L6-v2 + logistic regression",
    "model2vec_lr": "model2vec (MiniLM, 256 d) + logistic regression",
    "plain": "bortify plain fine-tuning (student)",
    "agora": "bortify Agora (student)",
    "distill": "bortify task-distilled (student)",
    "int8": "bortify int8 (student, ONNX Runtime)",
}


def build_student(args, work: Path) -> tuple[str, str]:
    if args.student:
        return args.student, args.student
    from bench_agora import sliced_student

    out = work / "student"
    if not (out / "config.json").exists():
        sliced_student(out, 2, 768)
    return str(out), "all-MiniLM-L6-v2 sliced to L2 H384 A12 I768 (bortify.slicing)"


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=list(TASK_PLANS), choices=list(TASK_PLANS))
    p.add_argument("--sizes", type=int, nargs="+", default=[300, 1000], help="train rows per panel")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--student", default=None,
                   help="student checkpoint dir, e.g. runs/demo/pretrain (default: MiniLM sliced to L2 H384 I768)")
    p.add_argument("--dev_rows", type=int, default=None,
                   help="dev rows of every task (default: 300 for rotten-tomatoes, 200 for debates)")
    p.add_argument("--max_test_rows", type=int, default=1000)
    p.add_argument("--min_test_rows", type=int, default=250,
                   help="train is clipped to keep this many test rows on small data (debates at 1,000)")
    p.add_argument("--epochs", type=float, default=3.0, help="student fine-tuning epochs (plain, every Agora round)")
    p.add_argument("--learning_rates", type=float, nargs="+", default=[1e-3, 5e-4, 2e-4], help="student Θ")
    p.add_argument("--max_rounds", type=int, default=3)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--teacher_epochs", type=float, default=6.0)
    p.add_argument("--teacher_learning_rate", type=float, default=1e-4)
    p.add_argument("--labeler_min_dev_score", type=float, default=None,
                   help="Agora's labeler threshold (default bortify's: chance + (1 - chance)/3)")
    p.add_argument("--with_distill", action="store_true", help="add the task-distilled point (mode 'distill')")
    p.add_argument("--distill", nargs="+", default=[], metavar="NAME=VALUE",
                   help="TaskDistillArguments overrides of the task-distilled point, e.g. augment_k=8 (default: "
                        "bortify's defaults)")
    p.add_argument("--first_seed_only", nargs="+", default=[], choices=["plain", "agora", "distill", "teacher"],
                   help="points trained at the first seed only (when 3 seeds of everything do not fit the time)")
    p.add_argument("--with_int8", action="store_true", help="add the int8 point: the first seed's task-distilled (else Agora) student through "
                        "bortify's int8 CPU path (ONNX Runtime)")
    p.add_argument("--timing_repeats", type=int, default=3)
    p.add_argument("--timings_from", default=None,
                   help="take sentences/s from this earlier results JSON (same models' architectures) instead of "
                        "timing again, e.g. when the machine is not quiet")
    p.add_argument("--assemble_only", action="store_true",
                   help="train nothing: assemble the results from the units --work_dir holds so far")
    p.add_argument("--jobs", type=int, default=2, help="units (task, size, seed) trained in this many processes")
    p.add_argument("--work_dir", default=None, help="keep models and finished units here; a re-run resumes")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 1 seed, 80 train / 40 dev / <=100 test rows, 1 epoch, 2 rounds, k 2")
    p.add_argument("--out", default=None, help="results JSON (default benchmarks/results/pareto[_quick].json)")
    p.add_argument("--plot", default=None, help="plot (default: the --out path with .png)")
    p.add_argument("--summarize", default=None, help="only print the table of an existing results JSON")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.seeds, args.max_test_rows, args.min_test_rows = [80], args.seeds[:1], 100, 50
        args.dev_rows = args.dev_rows or 40
        args.epochs, args.teacher_epochs, args.max_rounds, args.k = 1.0, 2.0, 2, 2
        args.learning_rates = args.learning_rates[:2]
        if args.labeler_min_dev_score is None:
            args.labeler_min_dev_score = -1.0  # a 2-epoch, 80-row labeler: exercise the loop whatever its score
    name = "pareto_quick" if args.quick else "pareto"
    args.out = args.out or str(RESULTS / f"{name}.json")
    args.plot = args.plot or str(Path(args.out).with_suffix(".png"))
    return args


def check_hooks(args) -> None:
    """Fail before any work when a requested point cannot be made."""
    for flag, why in (("--with_distill", args.with_distill and distill_available()),
                      ("--with_int8", args.with_int8 and int8_available())):
        if why:
            raise SystemExit(f"{flag}: not available: {why}. Run without {flag}.")


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.summarize:
        results = json.loads(Path(args.summarize).read_text())
        print(markdown(results))
        return 0
    check_hooks(args)
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="bench-pareto-"))
    work.mkdir(parents=True, exist_ok=True)
    student, student_name = build_student(args, work)
    m2v_dir, m2v_seconds = distil_model2vec(work)
    settings = Settings(student=student, student_name=student_name, work=str(work), model2vec_dir=m2v_dir,
                        max_test_rows=args.max_test_rows, min_test_rows=args.min_test_rows, epochs=args.epochs,
                        learning_rates=tuple(args.learning_rates), max_rounds=args.max_rounds, k=args.k,
                        teacher_epochs=args.teacher_epochs, teacher_learning_rate=args.teacher_learning_rate,
                        labeler_min_dev_score=args.labeler_min_dev_score, with_distill=args.with_distill,
                        with_int8=args.with_int8, first_seed=args.seeds[0], distill=parse_overrides(args.distill),
                        first_seed_only=tuple(args.first_seed_only))
    panels = []  # (plan, requested size, prepare_task arguments)
    for size in args.sizes:  # the smallest train size of every task first (an interrupted run shows those)
        for key in args.tasks:
            plan = TASK_PLANS[key] if args.dev_rows is None else replace(TASK_PLANS[key], dev_rows=args.dev_rows)
            panels.append((plan, size, split_plan(plan, size, unique_rows(plan.dataset), args.max_test_rows,
                                                  args.min_test_rows)))
    # seed-major: every panel's first seed first, so an interrupted run still has whole panels to show
    jobs = [(settings, plan, data, seed) for seed in args.seeds for plan, _, data in panels]
    t_train = time.perf_counter()
    units = finished_units(jobs) if args.assemble_only else run_units(jobs, args.jobs)
    train_seconds = time.perf_counter() - t_train

    t_time = time.perf_counter()
    timings = {}
    earlier = earlier_timings(args.timings_from) if args.timings_from else {}
    panels = [(plan, size, data) for plan, size, data in panels  # --assemble_only: panels with a first-seed unit
              if any(u["task"] == plan.key and u["seed"] == settings.first_seed
                     and u["splits"]["max_samples"]["train"] == data["max_train_samples"] for u in units)]
    for plan, _, data in panels:
        first = next(u for u in units if u["task"] == plan.key and u["seed"] == settings.first_seed
                     and u["splits"]["max_samples"]["train"] == data["max_train_samples"])
        key = panel_key(plan.key, first["train_rows"])
        timings[key] = earlier[key] if args.timings_from else time_panel(settings, plan, data, first,
                                                                         args.timing_repeats)
    timing_seconds = time.perf_counter() - t_time

    results = {
        "command": "python benchmarks/bench_pareto.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        "settings": {k: v for k, v in vars(args).items() if k != "summarize"},
        "student": student_name,
        "environment": environment(),
        "seconds": {"total": time.perf_counter() - t_start, "training_units": train_seconds,
                    "timing": timing_seconds, "model2vec_distill": m2v_seconds},
        "not_run": {"setfit": "SetFit (contrastive fine-tuning of MiniLM) is too slow for 2 shared CPU cores; "
                              "not installed",
                    **({} if args.with_distill else {"distill": "not requested: --with_distill"}),
                    **({} if args.with_int8 else {"int8": "not requested: --with_int8"})},
        "panels": [assemble_panel(plan, size, data, units, timings) for plan, size, data in panels],
        "units": units,
    }
    write_json_atomic(args.out, results)
    plot(results, Path(args.plot))
    print(markdown(results))
    print(f"\nwrote {args.out} and {args.plot}; {results['seconds']['total']:.0f} s in all "
          f"({train_seconds:.0f} s training with {args.jobs} job(s), {timing_seconds:.0f} s timing)")
    return 0


def finished_units(jobs: list) -> list[dict]:
    """--assemble_only: the unit.json files this run's jobs have written so far (points finished so far), with
    the points the configuration no longer asks for left out; nothing is trained."""
    units = []
    for settings, plan, data, seed in jobs:
        path = Path(settings.work) / f"{panel_key(plan.key, data['max_train_samples'])}-seed{seed}" / "unit.json"
        if path.exists():
            from bortify.finetuning.tasks import prepare_task

            unit = json.loads(path.read_text())
            if unit.get("split_fingerprint") != split_fingerprint(prepare_task(**data)):
                continue  # an earlier run's unit on another split, not retrained yet
            config = unit_config(settings, plan, data)
            unit["points"] = {n: p for n, p in unit["points"].items()
                              if point_inputs(n, unit["config"]) == point_inputs(n, config)}
            units.append(unit)
    return units


def earlier_timings(path: str) -> dict:
    """--timings_from: sentences/s per panel and point from an earlier results JSON. Valid when the models have the
    same architectures (speed does not depend on the weights): the same student, teacher and peers."""
    earlier = json.loads(Path(path).read_text())
    out = {}
    for panel in earlier["panels"]:
        out[panel_key(panel["task"], panel["train_rows"])] = {
            p["name"]: {**p["timing"], "from": path} for p in panel["points"] if "timing" in p}
    return out


def run_units(jobs: list, n_jobs: int) -> list[dict]:
    if n_jobs <= 1:
        return [run_unit(*job) for job in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=n_jobs, mp_context=multiprocessing.get_context("spawn")) as ex:
        return list(ex.map(run_unit, *zip(*jobs)))


def environment() -> dict:
    import model2vec
    import sklearn
    import transformers

    return {"torch_threads_per_process": 1, "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "model2vec": model2vec.__version__, "scikit-learn": sklearn.__version__,
            "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM")}


def assemble_panel(plan: TaskPlan, size: int, data: dict, units: list[dict], timings: dict) -> dict:
    mine = [u for u in units if u["task"] == plan.key and u["splits"]["max_samples"]["train"] == data["max_train_samples"]]
    first = mine[0]
    timing = timings[panel_key(plan.key, first["train_rows"])]
    names = [n for n in POINT_LABELS if any(n in u["points"] for u in mine)]
    points = []
    for name in names:
        per_seed = [(u["seed"], u["points"][name]) for u in mine if name in u["points"]]
        scored = [(s, p["test"]) for s, p in per_seed if "test" in p]
        point = {"name": name, "label": POINT_LABELS[name], "seeds": [s for s, _ in scored],
                 "accuracy_per_seed": [a for _, a in scored],
                 "refused": [{"seed": s, "why": p["refused"]} for s, p in per_seed if "refused" in p],
                 "train_seconds_per_seed": [round(p["seconds"], 1) for _, p in per_seed],
                 "deterministic": any(p.get("deterministic") for _, p in per_seed)}
        if scored:
            accs = point["accuracy_per_seed"]
            point["accuracy_mean"], point["accuracy_sd"] = mean_sd(accs)
        if name in timing:
            point.update({"sentences_per_s": timing[name]["sentences_per_s"], "parameters": timing[name]["parameters"],
                          "timing": timing[name]})
        points.append(point)
    ranked = [p for p in points if "accuracy_mean" in p and "sentences_per_s" in p]
    from pareto_peers import pareto_front

    for p, on in zip(ranked, pareto_front([(p["sentences_per_s"], p["accuracy_mean"]) for p in ranked])):
        p["pareto"] = on
    splits = first["splits"]
    return {"task": plan.key, "dataset": plan.dataset, "labels": first["label_names"], "train_rows": splits["train"],
            "train_rows_requested": size, "dev_rows": splits["dev"], "test_rows": splits["test"],
            "max_length": plan.max_length, "split_seed": splits["seed"], "points": points}


# --- report -----------------------------------------------------------------------------------------------------

def markdown(results: dict) -> str:
    seeds = results["settings"]["seeds"]
    lines = [f"Command: `{results['command']}`", "",
             f"Student: {results['student']}. Test accuracy: mean ± sd over seeds {', '.join(map(str, seeds))} "
             "(logistic-regression peers are deterministic: one run). Speed: test texts in, labels out, batch 32, "
             "1 torch thread, median of 3 passes after warm-up. ★ = on the Pareto frontier of its panel.", "",
             "| task | train / dev / test rows | model | parameters | test accuracy | sentences/s | frontier |",
             "|---|---|---|---:|---|---:|:-:|"]
    for panel in results["panels"]:
        rows = f"{panel['train_rows']} / {panel['dev_rows']} / {panel['test_rows']}"
        if panel["train_rows"] != panel["train_rows_requested"]:
            rows += f" ({panel['train_rows_requested']} asked)"
        for p in panel["points"]:
            if "accuracy_mean" in p:
                acc = f"{p['accuracy_mean']:.3f}" + ("" if p["deterministic"] else " (1 seed)" if len(p["seeds"]) == 1
                                                      else f" ± {p['accuracy_sd']:.3f} (n={len(p['seeds'])})")
            else:
                acc = "refused: " + p["refused"][0]["why"].split(":")[0] if p["refused"] else "—"
            speed = f"{p['sentences_per_s']:,.0f}" if "sentences_per_s" in p else "—"
            params = f"{p['parameters'] / 1e6:.1f}M" if "parameters" in p else "—"
            lines.append(f"| {panel['task']} | {rows} | {p['label']} | {params} | {acc} | {speed} | "
                         f"{'★' if p.get('pareto') else ''} |")
    lines.append("")
    lines.append("Not run: " + "; ".join(f"{k}: {v}" for k, v in results["not_run"].items()) + ".")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    """Accuracy vs sentences/s (log x), one panel per task × train size, the Pareto frontier as a step line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = results["panels"]
    tasks = list(dict.fromkeys(p["task"] for p in panels))
    sizes = list(dict.fromkeys(p["train_rows_requested"] for p in panels))
    fig, axes = plt.subplots(len(tasks), len(sizes), figsize=(5.2 * len(sizes), 4.0 * len(tasks)), dpi=120,
                             squeeze=False)
    markers = dict(zip(POINT_LABELS, "osD^vPX"))
    for panel in panels:
        ax = axes[tasks.index(panel["task"])][sizes.index(panel["train_rows_requested"])]
        pts = [p for p in panel["points"] if "accuracy_mean" in p and "sentences_per_s" in p]
        for p in pts:
            ax.errorbar(p["sentences_per_s"], p["accuracy_mean"], yerr=p["accuracy_sd"] or None,
                        fmt=markers.get(p["name"], "o"), ms=8, capsize=3, label=p["label"],
                        mfc="none" if not p.get("pareto") else None)
        front = sorted((p["sentences_per_s"], p["accuracy_mean"]) for p in pts if p.get("pareto"))
        if front:
            ax.step([s for s, _ in front], [a for _, a in front], where="post", color="gray", ls="--", lw=1,
                    label="Pareto frontier")
        ax.set_xscale("log")
        ax.set_xlabel("sentences/s (batch 32, 1 CPU thread)")
        ax.set_ylabel("test accuracy")
        ax.set_title(f"{panel['task']}: {panel['train_rows']} train, {panel['test_rows']} test rows", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = {}, []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.suptitle("Accuracy vs CPU throughput (filled marker = on the Pareto frontier)", fontsize=11)
    fig.tight_layout()
    fig.legend(list(handles.values()), list(handles), loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2,
               fontsize=8, frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".pareto-", suffix=".png", delete=False) as f:
        tmp = f.name
    fig.savefig(tmp, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
