"""The Pareto benchmark on the kinds of task users bring: a many-class panel and a long-text panel
(benchmarks/panels.py builds both from Debian packages; no Hub), 3 seeds, bortify against its peers.

Per panel and seed (seeds redraw the labelled train and dev rows and the unlabelled pool; the test rows are the same
for every seed, see panels.py):
  peers (--peers_only)
    - finetuned:    all-MiniLM-L6-v2 fine-tuned on train, bortify's stock labeler recipe
                    (bortify.finetuning.labelers.build_labeler: [CLS] classifier, --ft_epochs 3, lr 1e-4, batch 16);
    - frozen_lr:    frozen all-MiniLM-L6-v2, mean-pooled + logistic regression, C on dev (pareto_peers.py);
    - model2vec_lr: model2vec static embeddings distilled from the same MiniLM (pca_dims 256) + logistic regression;
    - setfit:       SetFit (Tunstall et al. 2022, "Efficient Few-Shot Learning Without Prompts") on MiniLM, the
                    many-class panel only; contrastive pairs capped with --setfit_max_steps (batches of 16 pairs).
  bortify (--student_only)
    - `bortify finetune` in its default mode (task distillation) on the panel's CSVs (--train_file/--dev_file/
      --test_file) with the pool as --distill_unlabeled_file, --max_length 128, the demo's student
      (--student, default runs/demo/pretrain), --save_teacher. Reported: the teacher candidates' dev/test scores
      and the chosen one (report.json "teacher_selection", read defensively), the student's test accuracy, and the
      sentences/s of the student and of its teacher.
Speed: sentences/s over the panel's real test texts, text in -> label out, batch 32, 1 torch thread, median of 3
passes after 3 warm-up batches (pareto_peers.throughput); models of the first seed only, side by side per part.
Results: benchmarks/results/panels.json, written after every point (a re-run skips finished points; the two parts
can run as separate processes: the file is merged under a lock).

model2vec and setfit are not bortify dependencies: run the peers with a Python that has them, e.g. a venv that
sees .venv's packages (see BENCHMARKS.md, "The Pareto benchmark on more kinds of task"):

    python3 -m venv /tmp/peers-venv
    echo $PWD/.venv/lib/python3.11/site-packages > /tmp/peers-venv/lib/python3.11/site-packages/zz_bortify.pth
    .venv/bin/pip freeze | grep -v bortify > /tmp/c.txt && /tmp/peers-venv/bin/pip install -c /tmp/c.txt \\
        "model2vec[distill]" setfit
    OMP_NUM_THREADS=1 /tmp/peers-venv/bin/python benchmarks/bench_panels.py --peers_only --panels many-class
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_panels.py --student_only --student runs/demo/pretrain
    .venv/bin/python benchmarks/bench_panels.py --summarize
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TQDM_DISABLE", "1")

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # pareto_peers / panels, and bortify from a venv that only sees .venv

import numpy as np  # noqa: E402
import torch  # noqa: E402

import panels as panel_data  # noqa: E402
from common import TEACHER as MINILM  # noqa: E402  (the packaged all-MiniLM-L6-v2)
from common import distil_model2vec  # noqa: E402

RESULTS = HERE / "results" / "panels.json"
PEERS = ("frozen_lr", "model2vec_lr", "finetuned", "setfit")
SETFIT_PANELS = ("many-class",)
LABELS = {
    "finetuned": "all-MiniLM-L6-v2 fine-tuned (stock [CLS] classifier)",
    "frozen_lr": "frozen all-MiniLM-L6-v2 + logistic regression",
    "model2vec_lr": "model2vec (MiniLM, 256 d) + logistic regression",
    "setfit": "SetFit (all-MiniLM-L6-v2, capped pairs)",
    "teacher": "bortify's teacher (the chosen candidate)",
    "student": "bortify task-distilled student",
}


# --- results file: merged under a lock so the peer and bortify processes can both write -------------------------

@contextlib.contextmanager
def locked(path: Path):
    import fcntl

    import hashlib
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"bortify-bench-panels-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {"panels": {}, "units": {}, "runs": []}


def update(path: Path, fn) -> dict:
    """Read the results file, apply fn(results) in place, write it back atomically; all under the lock."""
    from bortify.utils import write_json_atomic

    with locked(path):
        results = load(path)
        fn(results)
        write_json_atomic(path, results)
    return results


def unit_key(panel: str, seed: int) -> str:
    return f"{panel}/seed{seed}"


def save_point(path: Path, panel: str, seed: int, part: str, name: str, point: dict, info: dict) -> None:
    def fn(results):
        results["panels"][panel] = {k: v for k, v in info.items() if k not in ("seed", "fingerprint", "rows",
                                                                              "train_rows_per_class")}
        unit = results["units"].setdefault(unit_key(panel, seed), {"panel": panel, "seed": seed})
        unit.update({"fingerprint": info["fingerprint"], "rows": info["rows"],
                     "train_rows_per_class": info["train_rows_per_class"]})
        unit.setdefault(part, {})[name] = point

    update(path, fn)


def finished(path: Path, panel: str, seed: int, part: str, name: str, fingerprint: str) -> dict | None:
    unit = load(path)["units"].get(unit_key(panel, seed), {})
    point = unit.get(part, {}).get(name)
    return point if point and unit.get("fingerprint") == fingerprint and "error" not in point else None


# --- data --------------------------------------------------------------------------------------------------------

def read_split(folder: Path, split: str) -> tuple[list[str], list[str]]:
    import csv

    with open(folder / f"{split}.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r.get("label") for r in rows]


def task_data(folder: Path):
    """bortify's TaskData of the panel's CSVs (as `bortify finetune --train_file ... --test_file ...` reads them)."""
    from bortify.finetuning.tasks import prepare_task

    return prepare_task(None, data_files={"train": str(folder / "train.csv"), "validation": str(folder / "dev.csv"),
                                          "test": str(folder / "test.csv")}, text_columns=["text"],
                        label_column="label")


# --- peers -------------------------------------------------------------------------------------------------------

_EMBEDDINGS: dict = {}  # (peer, text) -> vector: the test rows (and many train rows) recur across seeds


def cached(peer: str, fn, texts: list[str]) -> np.ndarray:
    """fn(texts) with every text embedded once per process (embeddings are deterministic; batches of 32)."""
    todo = list(dict.fromkeys(t for t in texts if (peer, t) not in _EMBEDDINGS))
    for i in range(0, len(todo), 32):
        for t, v in zip(todo[i:i + 32], fn(todo[i:i + 32])):
            _EMBEDDINGS[(peer, t)] = v
    return np.stack([_EMBEDDINGS[(peer, t)] for t in texts])


def run_peers(args, panel: str, seed: int, folder: Path, info: dict, work: Path, only=None) -> None:
    """Trains and scores the peers of one (panel, seed) (`only`: these of them); the first seed's models are kept
    for timing."""
    from bortify.resources import resolve_model
    from pareto_peers import fit_logistic, mean_pooled, static_embeddings

    unit = work / panel / f"seed{seed}"
    unit.mkdir(parents=True, exist_ok=True)
    fp = info["fingerprint"]
    names = [n for n in (only or args.peers) if n != "setfit" or panel in SETFIT_PANELS]
    texts = {s: read_split(folder, s)[0] for s in ("train", "dev", "test")}
    gold_names = {s: read_split(folder, s)[1] for s in ("train", "dev", "test")}
    classes = sorted(set(gold_names["train"]))
    gold = {s: np.asarray([classes.index(c) for c in gold_names[s]]) for s in gold_names}

    def done(name):
        return finished(args.out, panel, seed, "peers", name, fp) is not None

    def save(name, point):
        save_point(args.out, panel, seed, "peers", name, point, info)
        print(f"[{panel} seed {seed}] {name}: " + (f"test {point['test']:.3f} ({point['seconds']:.0f} s)"
                                                   if "test" in point else point.get("error", "")), flush=True)

    if "frozen_lr" in names and not done("frozen_lr"):
        from transformers import AutoModel, AutoTokenizer

        t0 = time.perf_counter()
        enc = AutoModel.from_pretrained(resolve_model(MINILM), use_safetensors=True).eval()
        tok = AutoTokenizer.from_pretrained(resolve_model(MINILM))
        x = {s: cached("frozen_lr", lambda b: mean_pooled(enc, tok, b, args.max_length), texts[s]) for s in texts}
        probe = fit_logistic(x["train"], gold["train"], x["dev"], gold["dev"])
        with open(unit / "frozen_lr.pkl", "wb") as f:  # our own file, read back by the timing phase only
            pickle.dump(probe.classifier, f)
        save("frozen_lr", {"test": float((probe.classifier.predict(x["test"]) == gold["test"]).mean()),
                           "dev": probe.dev_accuracy, "C": probe.C, "seconds": time.perf_counter() - t0,
                           "model": str(unit / "frozen_lr.pkl")})
    if "model2vec_lr" in names and not done("model2vec_lr"):
        try:
            from model2vec import StaticModel
        except ImportError as exc:
            save("model2vec_lr", {"error": f"model2vec not installed in this Python ({exc}); see --help"})
        else:
            t0 = time.perf_counter()
            m2v_dir, distil_s = distil_model2vec(work, MINILM)
            m2v = StaticModel.from_pretrained(m2v_dir, force_download=False)
            x = {s: cached("model2vec_lr", lambda b: static_embeddings(m2v, b, args.max_length), texts[s])
                 for s in texts}
            probe = fit_logistic(x["train"], gold["train"], x["dev"], gold["dev"])
            with open(unit / "model2vec_lr.pkl", "wb") as f:
                pickle.dump(probe.classifier, f)
            import model2vec

            save("model2vec_lr", {"test": float((probe.classifier.predict(x["test"]) == gold["test"]).mean()),
                                  "dev": probe.dev_accuracy, "C": probe.C, "seconds": time.perf_counter() - t0,
                                  "model2vec_distill_seconds": distil_s, "model2vec": m2v_dir,
                                  "model2vec_version": model2vec.__version__, "model": str(unit / "model2vec_lr.pkl")})
    if "finetuned" in names and not done("finetuned"):
        from bortify.finetuning.labelers import build_labeler

        t0 = time.perf_counter()
        task = task_data(folder)
        lab = build_labeler(task, labeler=None, teacher=MINILM, max_length=args.max_length, seed=seed,
                            epochs=args.ft_epochs, learning_rate=args.ft_learning_rate, batch_size=16,
                            min_dev_score=-1.0)  # a peer: scored whatever its dev accuracy
        point = {"test": lab.evaluate(task.test), "dev": lab.dev_score, "seconds": time.perf_counter() - t0,
                 "epochs": args.ft_epochs, "learning_rate": args.ft_learning_rate, "batch_size": 16}
        if seed == args.seeds[0]:
            lab.model.save_pretrained(unit / "finetuned")
            lab.tokenizer.save_pretrained(unit / "finetuned")
            point["model"] = str(unit / "finetuned")
        save("finetuned", point)
        del lab
    if "setfit" in names and not done("setfit"):
        save("setfit", train_setfit(args, seed, texts, gold, unit))


def train_setfit(args, seed: int, texts: dict, gold: dict, unit: Path) -> dict:
    """SetFit: contrastive fine-tuning of MiniLM on pairs of train rows (at most --setfit_max_steps batches of 16
    pairs, one epoch), then logistic regression on its embeddings (SetFit's default head)."""
    try:
        from datasets import Dataset
        from setfit import SetFitModel, Trainer, TrainingArguments
    except ImportError as exc:
        return {"error": f"setfit not installed in this Python ({exc}); see --help"}
    from bortify.resources import resolve_model

    t0 = time.perf_counter()
    try:
        model = SetFitModel.from_pretrained(resolve_model(MINILM))
        targs = TrainingArguments(batch_size=16, num_epochs=1, max_steps=args.setfit_max_steps,
                                  num_iterations=args.setfit_iterations, seed=seed, max_length=args.max_length,
                                  show_progress_bar=False, report_to="none", save_strategy="no",
                                  output_dir=str(unit / ".setfit-tmp"))
        trainer = Trainer(model=model, args=targs,
                          train_dataset=Dataset.from_dict({"text": texts["train"], "label": gold["train"].tolist()}))
        trainer.train()
        pred = lambda t: np.asarray(model.predict(list(t), batch_size=32, show_progress_bar=False))  # noqa: E731
        point = {"test": float((pred(texts["test"]) == gold["test"]).mean()),
                 "dev": float((pred(texts["dev"]) == gold["dev"]).mean()), "seconds": time.perf_counter() - t0,
                 "max_steps": args.setfit_max_steps, "num_iterations": args.setfit_iterations, "batch_size": 16,
                 "pairs_seen": 16 * args.setfit_max_steps}
        if seed == args.seeds[0]:
            model.save_pretrained(str(unit / "setfit"))
            point["model"] = str(unit / "setfit")
        shutil.rmtree(unit / ".setfit-tmp", ignore_errors=True)
        return point
    except Exception as exc:  # the benchmark records why it could not run, exactly
        import traceback

        return {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-2000:],
                "seconds": time.perf_counter() - t0}


def peer_predictor(name: str, point: dict, max_length: int, work: Path):
    from bortify.resources import resolve_model
    from pareto_peers import classifier_predictor, frozen_encoder_predictor, static_predictor

    if name in ("frozen_lr", "model2vec_lr"):
        with open(point["model"], "rb") as f:
            clf = pickle.load(f)
        if name == "frozen_lr":
            return frozen_encoder_predictor(resolve_model(MINILM), clf, max_length)
        return static_predictor(point["model2vec"], clf, max_length)
    if name == "setfit":
        from setfit import SetFitModel

        model = SetFitModel.from_pretrained(point["model"])
        params = sum(p.numel() for p in model.model_body.parameters())
        return (lambda texts: np.asarray(model.predict(list(texts), batch_size=len(texts),  # noqa: E731
                                                       show_progress_bar=False)), params)
    return classifier_predictor(point["model"], max_length)


def time_models(args, panel: str, folder: Path, models: dict, part: str, info: dict) -> None:
    """Sentences/s of the first seed's models of one part (passes interleaved), saved beside their points."""
    from pareto_peers import throughput

    texts, _ = read_split(folder, "test")
    predictors, params = {}, {}
    for name, (point, maker) in models.items():
        try:
            predictors[name], params[name] = maker(point)
        except Exception as exc:
            print(f"[{panel}] cannot time {name}: {exc}", flush=True)
    load_before = os.getloadavg()[0]
    speeds = throughput(predictors, texts, batch_size=32, repeats=args.timing_repeats)
    load_after = os.getloadavg()[0]

    def fn(results):
        unit = results["units"][unit_key(panel, args.seeds[0])]
        for name, tp in speeds.items():
            unit.setdefault("timing", {})[name] = {
                "sentences_per_s": tp.sentences_per_s, "passes": tp.passes, "sentences": tp.sentences,
                "batch_size": tp.batch_size, "parameters": int(params[name]), "part": part,
                "load_average_1min": [load_before, load_after]}
    update(args.out, fn)
    for name, tp in speeds.items():
        print(f"[{panel}] {name}: {tp.sentences_per_s:.1f} sentences/s {tp.passes}", flush=True)


# --- bortify ----------------------------------------------------------------------------------------------------

def bortify_command(args, folder: Path, out_dir: Path, seed: int) -> list[str]:
    exe = shutil.which("bortify", path=str(Path(sys.executable).parent)) or "bortify"
    return [exe, "finetune", "--model", args.student, "--output_dir", str(out_dir), "--overwrite", "true",
            "--train_file", str(folder / "train.csv"), "--dev_file", str(folder / "dev.csv"),
            "--test_file", str(folder / "test.csv"), "--distill_unlabeled_file", str(folder / "pool.csv"),
            "--text_columns", "text", "--label_column", "label", "--max_length", str(args.max_length),
            "--seed", str(seed), "--torch_threads", "1", "--save_teacher", "true", *args.bortify_args]


def read_report(report: dict) -> dict:
    """What the benchmark keeps of a distill-mode report.json (every key read defensively: the teacher selection
    is new)."""
    metric = report.get("metric", "accuracy")
    score = lambda split: (report.get(split) or {}).get(metric)  # noqa: E731
    out = {"test": score("test"), "dev": score("dev"), "metric": metric,
           "num_parameters": report.get("num_parameters")}
    lab = report.get("labeler") if isinstance(report.get("labeler"), dict) else {}
    sel = (report.get("teacher_selection") or (report.get("distill") or {}).get("teacher_selection")
           or lab.get("selection"))  # the selection as report.json["labeler"]["selection"] records it
    if isinstance(sel, dict):
        cands = []
        for c in sel.get("candidates") or []:
            if isinstance(c, dict):
                cands.append({k: c.get(k) for k in ("name", "dev_score", "test_score", "seconds", "kind") if k in c}
                             | {k: v for k, v in c.items() if k.startswith(("dev", "test")) and k not in c})
        out["teacher_selection"] = {"chosen": sel.get("chosen"), "why": sel.get("why"), "candidates": cands}
    else:
        out["teacher_selection"] = None
    lab = lab or (report.get("distill") or {}).get("teacher") or {}
    if isinstance(lab, dict):
        out["teacher"] = {k: lab.get(k) for k in ("name", "dev_accuracy", "test_accuracy", "test", "saved_to")
                          if k in lab}
    dist = report.get("distill") or {}
    out["distill"] = {k: dist.get(k) for k in ("transfer_set", "teacher_agreement", "seconds", "examples_seen",
                                               "dev_by_epoch", "best_epoch") if k in dist}
    return out


def rescore_candidates(args, panel: str, seed: int, folder: Path) -> None:
    """Re-build the teacher candidates `args.rescore_candidates` of a finished bortify point with the current code
    (as `bortify finetune` builds them: AgoraArguments' defaults, the run's seed and --max_length) and replace their
    dev/test scores in the point, marked "rescored". For a fix in one candidate after a run: the point's student
    stands if no rescored candidate beats the chosen teacher on dev (recorded as "chosen_stands")."""
    from bortify.finetuning.arguments import AgoraArguments, FinetuneModelArguments
    from bortify.finetuning.labelers import Labeler
    from bortify.finetuning.modes import mode_of
    from bortify.finetuning.runs import RunSettings
    from bortify.finetuning.teachers import TeacherSelection

    point = load(args.out)["units"].get(unit_key(panel, seed), {}).get("bortify", {}).get("student")
    sel = (point or {}).get("teacher_selection")
    if not sel:
        print(f"[{panel} seed {seed}] no finished bortify point to rescore", flush=True)
        return
    task = task_data(folder)
    run = RunSettings.of(FinetuneModelArguments(model=args.student, output_dir=str(folder), max_length=args.max_length,
                                                seed=seed))
    settings = mode_of("distill", AgoraArguments(teacher_candidates=list(args.rescore_candidates))).teacher_settings(run)
    chooser = TeacherSelection(task, MINILM, settings)
    _, record = chooser.select()
    new = {}
    for c in record["candidates"]:
        lab = Labeler(chooser.models[c["name"]], chooser.tokenizer, task, max_length=args.max_length)
        new[c["name"]] = {"name": c["name"], "dev_score": c["dev_score"], "test_score": round(lab.evaluate(task.test), 4),
                          "seconds": c["seconds"], "rescored": True}
    cands = [new.pop(c["name"], c) for c in sel["candidates"]] + list(new.values())
    chosen_dev = next((c["dev_score"] for c in sel["candidates"] if c["name"] == sel["chosen"]), None)

    def fn(results):
        st = results["units"][unit_key(panel, seed)]["bortify"]["student"]
        st["teacher_selection"] = {**sel, "candidates": cands, "chosen_stands": all(
            chosen_dev is not None and c["dev_score"] <= chosen_dev for c in cands if c.get("rescored"))}

    update(args.out, fn)
    print(f"[{panel} seed {seed}] rescored: " + ", ".join(f"{c['name']} {c['dev_score']:.4f} / {c['test_score']:.4f}"
                                                       for c in cands if c.get("rescored")), flush=True)


def reused_teacher(args, panel: str, seed: int, work: Path, fp: str) -> tuple[dict | None, list[str]]:
    """--reuse_teacher: (the finished point whose saved teacher teaches again, the extra `bortify finetune` options).
    The teacher is copied out of the point's run folder first (--overwrite replaces that folder). (None, []) when
    the option is off or the point was already re-run."""
    prev = finished(args.out, panel, seed, "bortify", "student", fp) if args.reuse_teacher else None
    if prev is None or prev.get("teacher_reused"):
        return None, []
    saved = Path(prev.get("teacher_model") or "")
    if not (saved / "config.json").exists():
        raise SystemExit(f"[{panel} seed {seed}] --reuse_teacher: the point's teacher {str(saved)!r} is gone; run "
                         "the unit in full (without --reuse_teacher).")
    kept = work / panel / f"seed{seed}" / "teacher"
    if saved.resolve() != kept.resolve():
        shutil.rmtree(kept, ignore_errors=True)
        shutil.copytree(saved, kept)
    return prev, ["--labeler", str(kept)]


def point_to_keep(point: dict, prev: dict | None) -> dict:
    """A re-run that failed or was killed does not replace the finished point it re-ran: that point stays, with the
    failure under `failed_rerun` (the error point is kept only when there was nothing to keep)."""
    if "error" not in point or prev is None:
        return point
    return {**prev, "failed_rerun": {k: point.get(k) for k in ("command", "seconds", "error", "log")}}


def run_bortify(args, panel: str, seed: int, folder: Path, info: dict, work: Path) -> None:
    fp = info["fingerprint"]
    prev, reuse = reused_teacher(args, panel, seed, work, fp)
    if prev is None and finished(args.out, panel, seed, "bortify", "student", fp):
        return
    out_dir = work / panel / f"seed{seed}" / "bortify"
    cmd = bortify_command(args, folder, out_dir, seed) + reuse
    print(f"[{panel} seed {seed}] {shlex.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    log = out_dir.parent / "bortify.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}).returncode
    point = {"command": shlex.join(cmd), "seconds": time.perf_counter() - t0, "log": str(log)}
    if rc != 0 or not (out_dir / "report.json").exists():
        point["error"] = f"bortify finetune exited {rc}: " + log.read_text()[-1500:]
    else:
        point.update(read_report(json.loads((out_dir / "report.json").read_text())))
        point["model"] = str(out_dir)
        teacher_dir = out_dir / "teacher"
        if (teacher_dir / "config.json").exists():
            point["teacher_model"] = str(teacher_dir)
            point["teacher_test"] = (point.get("teacher") or {}).get("test_accuracy")
            if point["teacher_test"] is None:
                point["teacher_test"] = teacher_test(teacher_dir, folder, args.max_length)
        if prev is not None:  # the same teacher, chosen by the earlier run: its selection record stands
            point.update({k: prev[k] for k in ("teacher_selection", "teacher") if k in prev}, teacher_reused=True,
                         teacher_test=prev.get("teacher_test", point.get("teacher_test")),
                         previous_student={k: prev.get(k) for k in ("command", "test", "dev", "distill", "seconds")})
    point = point_to_keep(point, prev)
    save_point(args.out, panel, seed, "bortify", "student", point, info)
    print(f"[{panel} seed {seed}] bortify: " + (point.get("error", "")[:300] or
                                                 f"student test {point['test']}, teacher {point.get('teacher')}"),
          flush=True)


def teacher_predictor(model_dir: str, max_length: int):
    """(predict, parameters) of a saved teacher: a stock sequence classifier, or bortify's pooled one (importing
    bortify.finetuning.pooled registers PooledEncoderForSequenceClassification with the Auto classes)."""
    with contextlib.suppress(ImportError):
        import bortify.finetuning.pooled  # noqa: F401
    from pareto_peers import classifier_predictor

    return classifier_predictor(model_dir, max_length)


def teacher_test(teacher_dir: Path, folder: Path, max_length: int) -> float | None:
    """Test accuracy of the saved teacher, when it loads as a sequence classifier whose labels name the classes."""
    try:
        from transformers import AutoConfig

        id2label = AutoConfig.from_pretrained(str(teacher_dir)).id2label
        predict, _ = teacher_predictor(str(teacher_dir), max_length)
        texts, gold = read_split(folder, "test")
        pred = [id2label[int(p)] for i in range(0, len(texts), 32) for p in predict(texts[i:i + 32])]
        return float(np.mean([p == g for p, g in zip(pred, gold)]))
    except Exception as exc:  # a teacher that is not a stock classifier (e.g. pooled): its report's score stands
        print(f"teacher test not measured here: {exc}", flush=True)
        return None


# --- summary ----------------------------------------------------------------------------------------------------

def mean_sd(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None, 0
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0), len(xs)


def summarize(results: dict) -> str:
    lines = []
    for panel, info in results["panels"].items():
        units = [u for u in results["units"].values() if u["panel"] == panel]
        units.sort(key=lambda u: u["seed"])
        tok = info.get("tokens", {})
        rows = units[0]["rows"] if units else {}
        lines += [f"### {panel}: {info['n_classes']} classes, train / dev / test / pool = {rows.get('train')} / "
                  f"{rows.get('dev')} / {rows.get('test')} / {rows.get('pool')}, median {tok.get('median')} "
                  f"MiniLM tokens, test majority rate {info.get('test_majority_rate', 0):.3f}", "",
                  f"Source: {info['source']}; licence: {info['licence']}; label: {info['label']}.", "",
                  "| model | test accuracy, mean ± sd | seeds | sentences/s (1 thread) |", "|---|---|---:|---:|"]
        timing = next((u.get("timing", {}) for u in units if u.get("timing")), {})
        acc = {}
        for name in ("frozen_lr", "model2vec_lr", "finetuned", "setfit"):
            m, sd, n = mean_sd([u.get("peers", {}).get(name, {}).get("test") for u in units])
            errors = [u.get("peers", {}).get(name, {}).get("error") for u in units]
            if n:
                acc[name] = m
                speed = timing.get(name, {}).get("sentences_per_s")
                lines.append(f"| {LABELS[name]} | {m:.3f} ± {sd:.3f} | {n} | {f'{speed:,.0f}' if speed else '—'} |")
            elif any(errors):
                lines.append(f"| {LABELS[name]} | not run: {next(e for e in errors if e)[:120]} | 0 | — |")
        students = [u.get("bortify", {}).get("student", {}) for u in units]
        for key, label in (("teacher", "teacher"), ("test", "student")):
            if key == "teacher":
                vals = [s.get("teacher_test") or best_candidate_test(s) for s in students]
            else:
                vals = [s.get("test") for s in students]
            m, sd, n = mean_sd(vals)
            if n:
                acc[label] = m
                speed = timing.get(label, {}).get("sentences_per_s")
                lines.append(f"| {LABELS[label]} | {m:.3f} ± {sd:.3f} | {n} | {f'{speed:,.0f}' if speed else '—'} |")
        # every teacher candidate's test score (mean over seeds): the probe is frozen MiniLM + LR with bortify's
        # pooling and dev-chosen C; `finetune` is fine-tuned MiniLM (mean pooling, best dev epoch)
        names = [c.get("name") for s in students for c in ((s or {}).get("teacher_selection") or {}).get(
            "candidates", [])]
        for name in dict.fromkeys(names):
            vals = [next((c.get("test_score") for c in ((s or {}).get("teacher_selection") or {}).get("candidates", [])
                          if c.get("name") == name), None) for s in students]
            m, sd, n = mean_sd(vals)
            if n:
                lines.append(f"| teacher candidate `{name}` | {m:.3f} ± {sd:.3f} | {n} | — |")
                if name == "finetune" and "finetuned" not in acc:  # the fine-tuned peer, when it was not run apart
                    acc["finetuned"] = m
        chosen = [s.get("teacher_selection", {}) or {} for s in students if s]
        if any(chosen):
            lines += ["", "Teacher candidates (dev / test) per seed:"]
            for u, s in zip(units, students):
                sel = (s or {}).get("teacher_selection") or {}
                cands = ", ".join(f"{c.get('name')} {fmt(c.get('dev_score'))} / {fmt(c.get('test_score'))}"
                                  + ("†" if c.get("rescored") else "") for c in sel.get("candidates", []))
                agree = ((s or {}).get("distill") or {}).get("teacher_agreement") or {}
                lines.append(f"- seed {u['seed']}: chosen **{sel.get('chosen')}**; {cands}; student {fmt(s.get('test'))}"
                             f", agreeing with its teacher on {fmt(agree.get('agreement'))} of its training rows"
                             + student_history(s or {}))
            if any(c.get("rescored") for s in chosen for c in s.get("candidates", [])):
                lines.append("- † re-measured after a fix in that candidate (--rescore_candidates); no such candidate "
                             "beat the chosen one on dev" if all(s.get("chosen_stands", True) for s in chosen) else
                             "- † re-measured after a fix (--rescore_candidates): one now beats the chosen teacher on "
                             "dev, so that seed's student must be re-run")
        lines += ["", *goal_lines(acc, timing), ""]
    return "\n".join(lines)


def student_history(student: dict) -> str:
    """'; best dev epoch 6 of 8; before (same teacher, --reuse_teacher): 0.506' for a re-run student, else ''."""
    dist, prev = student.get("distill") or {}, student.get("previous_student")
    out = f"; best dev epoch {dist['best_epoch']} of {len(dist['dev_by_epoch'])}" if dist.get("dev_by_epoch") else ""
    if prev:
        agree = ((prev.get("distill") or {}).get("teacher_agreement") or {}).get("agreement")
        out += f"; before (same teacher, --reuse_teacher): {fmt(prev.get('test'))}, agreement {fmt(agree)}"
    if student.get("failed_rerun"):
        out += "; its re-run failed and this point stands (see failed_rerun in panels.json)"
    return out


def fmt(x):
    return f"{x:.3f}" if isinstance(x, (int, float)) else "—"


def best_candidate_test(student: dict):
    sel = student.get("teacher_selection") or {}
    for c in sel.get("candidates", []):
        if c.get("name") == sel.get("chosen"):
            return c.get("test_score")
    return None


def goal_lines(acc: dict, timing: dict) -> list[str]:
    """The goals of the teacher-selection work, per panel on means over seeds (None: not measured yet)."""
    def verdict(ok):
        return "—" if ok is None else "**met**" if ok else "missed"

    out = ["| goal | value | verdict |", "|---|---|---|"]
    t, s = acc.get("teacher"), acc.get("student")
    peers_best = max([acc[k] for k in ("finetuned", "frozen_lr") if k in acc], default=None)
    g1 = None if t is None or peers_best is None else t >= peers_best - 0.005
    out.append(f"| teacher ≥ best of (fine-tuned, frozen + LR) − 0.5 pt | "
               f"{fmt(t)} vs {fmt(peers_best)} | {verdict(g1)} |")
    s_speed, t_speed = (timing.get(k, {}).get("sentences_per_s") for k in ("student", "teacher"))
    if t_speed is None:  # every teacher candidate runs the same MiniLM encoder at the same max_length
        t_speed = (timing.get("finetuned_beside_student") or timing.get("finetuned") or {}).get("sentences_per_s")
    ratio = s_speed / t_speed if s_speed and t_speed else None
    g2 = None if t is None or s is None or ratio is None else (s >= t - 0.02 and ratio >= 4)
    out.append(f"| student within 2 pt of the teacher at ≥ 4× its sentences/s | "
               f"{fmt(s)} vs {fmt(t)}, {f'{ratio:.1f}×' if ratio else '—'} | {verdict(g2)} |")
    f, m = acc.get("frozen_lr"), acc.get("model2vec_lr")
    g3 = None if s is None or f is None or m is None else (s > f and s >= m + 0.05)
    out.append(f"| student > frozen + LR and ≥ model2vec + LR + 5 pt | {fmt(s)} vs {fmt(f)} / {fmt(m)} | "
               f"{verdict(g3)} |")
    ft = acc.get("finetuned")
    g4 = None if s is None or ft is None else s > ft
    out.append(f"| stretch: student > plain fine-tuned MiniLM | {fmt(s)} vs {fmt(ft)} | {verdict(g4)} |")
    return out


# --- main -------------------------------------------------------------------------------------------------------

def environment() -> dict:
    import sklearn
    import transformers

    env = {"torch_threads": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
           "cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
           "torch": torch.__version__, "transformers": transformers.__version__, "scikit-learn": sklearn.__version__}
    for mod in ("model2vec", "setfit", "sentence_transformers"):
        with contextlib.suppress(ImportError):
            env[mod] = __import__(mod).__version__
    return env


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--panels", nargs="+", default=list(panel_data.PANELS), choices=list(panel_data.PANELS))
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    part = p.add_mutually_exclusive_group()
    part.add_argument("--peers_only", action="store_true")
    part.add_argument("--student_only", action="store_true")
    p.add_argument("--peers", nargs="+", default=list(PEERS), choices=list(PEERS))
    p.add_argument("--student", "--model", dest="student", default="runs/demo/pretrain",
                   help="bortify's student checkpoint (default: the demo's, runs/demo/pretrain after `make demo`)")
    p.add_argument("--max_length", type=int, default=128)
    p.add_argument("--ft_epochs", type=float, default=3.0, help="the fine-tuned MiniLM peer's epochs")
    p.add_argument("--ft_learning_rate", type=float, default=1e-4)
    p.add_argument("--setfit_max_steps", type=int, default=400, help="SetFit: batches of 16 contrastive pairs")
    p.add_argument("--setfit_iterations", type=int, default=20, help="SetFit num_iterations (pairs per row)")
    p.add_argument("--rescore_candidates", nargs="+", default=None, choices=["probe", "finetune", "lp-ft", "stock"],
                   help="re-build these teacher candidates of the finished bortify points (--panels, --seeds) with "
                        "the current code and replace their scores (after a fix in one candidate); nothing else runs")
    p.add_argument("--reuse_teacher", action="store_true",
                   help="re-run the student of finished bortify points (--student_only) with the teacher each one "
                        "chose and saved (--labeler), keeping its selection record and the old student's scores "
                        "under previous_student: for a change on the student's side only; each point re-runs once")
    p.add_argument("--timing_repeats", type=int, default=3)
    p.add_argument("--no_timing", action="store_true", help="skip the sentences/s measurement")
    p.add_argument("--bortify_args", default="",
                   help="extra `bortify finetune` options, one string (e.g. smoke caps: '--max_train_samples 60')")
    p.add_argument("--work_dir", default="runs/panels-work")
    p.add_argument("--cache", default=str(panel_data.CACHE), help="where panels.py caches sources and CSVs")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--summarize", action="store_true", help="print the Markdown table and goal checks of --out")
    args = p.parse_args(argv)
    args.out = Path(args.out)
    args.bortify_args = shlex.split(args.bortify_args)
    return args


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.summarize:
        print(summarize(load(args.out)))
        return 0
    torch.set_num_threads(1)
    if args.rescore_candidates:
        for panel in args.panels:
            for seed in args.seeds:
                rescore_candidates(args, panel, seed, panel_data.build_panel(panel, seed, cache=Path(args.cache)))
        return 0
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    part = "peers" if args.peers_only else "bortify" if args.student_only else "both"
    if part != "peers" and not (Path(args.student).exists() or args.student.startswith("embedded:")):
        raise SystemExit(f"--student {args.student}: not found (run `make demo` for runs/demo/pretrain).")
    t_start = time.perf_counter()
    update(args.out, lambda r: r["runs"].append({
        "command": "python benchmarks/bench_panels.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        "part": part, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "environment": environment()}))
    for panel in args.panels:
        folders = {seed: panel_data.build_panel(panel, seed, cache=Path(args.cache)) for seed in args.seeds}
        if part in ("peers", "both"):  # peer-major: the cheap peers of every seed first
            for name in args.peers:
                for seed in args.seeds:
                    run_peers(args, panel, seed, folders[seed], panel_data.panel_info(folders[seed]), work, [name])
        for seed in args.seeds:
            info = panel_data.panel_info(folders[seed])
            if part in ("bortify", "both"):
                run_bortify(args, panel, seed, folders[seed], info, work)
        if args.no_timing:
            continue
        first = load(args.out)["units"].get(unit_key(panel, args.seeds[0]), {})
        folder, models = folders[args.seeds[0]], {}
        if part in ("peers", "both"):
            for name, point in first.get("peers", {}).items():
                if "model" in point:
                    models[name] = (point, lambda pt, n=name: peer_predictor(n, pt, args.max_length, work))
        if part in ("bortify", "both"):
            from pareto_peers import classifier_predictor

            st = first.get("bortify", {}).get("student", {})
            if "model" in st:
                models["student"] = (st, lambda pt: classifier_predictor(pt["model"], args.max_length))
            if "teacher_model" in st:
                models["teacher"] = (st, lambda pt: teacher_predictor(pt["teacher_model"], args.max_length))
            ft = first.get("peers", {}).get("finetuned", {})
            if "model" in ft and Path(ft["model"]).exists():  # the reference beside the student, same process
                models["finetuned_beside_student"] = (ft, lambda pt: classifier_predictor(pt["model"],
                                                                                          args.max_length))
        if models:
            time_models(args, panel, folder, models, part, info)
    update(args.out, lambda r: r["runs"][-1].update({"seconds": round(time.perf_counter() - t_start, 1)}))
    print(summarize(load(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
