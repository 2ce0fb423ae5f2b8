"""Pretraining benchmark (docs/methods/02-pretraining.md §2), side by side in one run, on the packaged models and corpus:

1. step time of the KD trainer (DistillationTrainer.train, per step) against the same work done by hand —
   student MLM step (forward, backward, clip, AdamW) + teacher forward, timed separately — so the overhead
   the Trainer adds is visible (target < 10%); tokens per second of each; and a plain HF MLM step
   (BertForMaskedLM(labels=...), full-vocabulary logits at every position) for reference;
2. held-out MLM loss after the same step budget for random vs inherited (sliced-teacher) initialisation,
   for representation KD from all-MiniLM-L6-v2 and logit KD from splade-tiny, plus a linear probe of each
   student's mean-pooled features on Rotten Tomatoes sentiment (how good a start for fine-tuning it is).

    .venv/bin/python benchmarks/bench_pretraining.py            # writes benchmarks/results/pretraining.json

Timings on a shared 2-core CPU are noisy; each timing is the median over the measured steps.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import common  # first: the environment (benchmarks/common.py)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import (  # noqa: E402
    AutoModel,
    AutoModelForMaskedLM,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    TrainerCallback,
)

from bortify.pretraining.data import load_pretraining_data, make_collator  # noqa: E402
from bortify.pretraining.losses import IGNORE_INDEX, masked_cross_entropy  # noqa: E402
from bortify.pretraining.stage import run_stage  # noqa: E402
from bortify.pretraining.trainer import DistillationStudent, masked_teacher_logits  # noqa: E402
from bortify.resources import load_embedded_dataset, resolve_model  # noqa: E402
from bortify.utils import write_json_atomic  # noqa: E402

RESULTS = common.RESULTS / "pretraining.json"
MINILM, SPLADE = "embedded:all-MiniLM-L6-v2", "embedded:splade-tiny"


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times, self._t = [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self._t = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._t)


def _median_after_warmup(times, warmup):
    return statistics.median(times[warmup:] if len(times) > warmup else times)


def time_steps(student_dir, teacher, kd_mode, blocks, tokenizer, steps, warmup, batch, seq_len, lr=1e-4):
    """Per-step seconds: KD trainer vs by-hand student MLM step + teacher forward vs plain HF MLM step."""
    from bortify.pretraining.arguments import DistillationArguments
    from bortify.pretraining.trainer import DistillationTrainer
    from bortify.pretraining.losses import default_relation_heads
    from bortify.slicing import default_layer_map

    config = BertConfig.from_pretrained(student_dir)
    teacher_path = resolve_model(teacher)
    t_model = (AutoModelForMaskedLM if kd_mode == "logit" else AutoModel).from_pretrained(teacher_path).eval()
    collator = make_collator(tokenizer, masking="dynamic")
    n = steps + warmup
    data = blocks.select(range(n * batch))

    # (a) the KD trainer, timed per optimiser step by a callback
    torch.manual_seed(0)
    hidden_layers, projections, layers, heads = [], None, None, None
    if kd_mode == "representation":
        hidden_layers = list(range(config.num_hidden_layers))
        projections = torch.nn.ModuleList(torch.nn.Linear(config.hidden_size, t_model.config.hidden_size)
                                          for _ in hidden_layers)
        layers = default_layer_map(config.num_hidden_layers, t_model.config.num_hidden_layers)
        heads = default_relation_heads(config.hidden_size, t_model.config.hidden_size, 12)
    wrapper = DistillationStudent(BertForMaskedLM(config), projections, hidden_layers,
                                  relation=kd_mode == "representation")
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as tmp:
        args = DistillationArguments(output_dir=tmp, max_steps=n, per_device_train_batch_size=batch, use_cpu=True,
                                     save_strategy="no", logging_steps=10**6, disable_tqdm=True, learning_rate=lr)
        trainer = DistillationTrainer(model=wrapper, args=args, train_dataset=data, data_collator=collator,
                                      teacher=t_model, kd_mode=kd_mode, teacher_layers=layers, relation_heads=heads,
                                      relation_teacher_layer=t_model.config.num_hidden_layers - 1, callbacks=[timer])
        trainer.train()
    kd_step = _median_after_warmup(timer.times, warmup)

    # (b) the same work by hand: student MLM step (masked-only head, as the trainer's student) and teacher forward
    torch.manual_seed(0)
    student = DistillationStudent(BertForMaskedLM(config))
    optim = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.01)
    s_times, t_times, hf_times = [], [], []
    for i in range(n):
        t0 = time.perf_counter()
        b = collator([data[j] for j in range(i * batch, (i + 1) * batch)])
        out = student(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"])
        loss = masked_cross_entropy(out.logits, out.labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optim.step()
        optim.zero_grad()
        s_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with torch.no_grad():
            if kd_mode == "logit":
                masked_teacher_logits(t_model, b["input_ids"], b["attention_mask"], b["labels"] != IGNORE_INDEX)
            else:
                t_model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], output_hidden_states=True)
        t_times.append(time.perf_counter() - t0)
    # (c) the KD step by hand: the trainer's own compute_loss (same student, teacher and loss) in a plain loop,
    # so (a) / (c) is the cost of the Trainer's machinery alone and (c) - (b) the cost of the KD loss terms
    kd_hand_times = []
    torch.manual_seed(0)
    wrapper2 = DistillationStudent(BertForMaskedLM(config), copy.deepcopy(projections), hidden_layers,
                                   relation=kd_mode == "representation")
    optim = torch.optim.AdamW(wrapper2.parameters(), lr=lr, weight_decay=0.01)
    for i in range(n):
        t0 = time.perf_counter()
        b = collator([data[j] for j in range(i * batch, (i + 1) * batch)])
        trainer.compute_loss(wrapper2, b).backward()
        torch.nn.utils.clip_grad_norm_(wrapper2.parameters(), 1.0)
        optim.step()
        optim.zero_grad()
        kd_hand_times.append(time.perf_counter() - t0)
    # (d) a plain HF MLM step: full-vocabulary logits at every position
    hf = BertForMaskedLM(config)
    optim = torch.optim.AdamW(hf.parameters(), lr=lr)
    for i in range(n):
        t0 = time.perf_counter()
        b = collator([data[j] for j in range(i * batch, (i + 1) * batch)])
        hf(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).loss.backward()
        optim.step()
        optim.zero_grad()
        hf_times.append(time.perf_counter() - t0)
    s_step, t_fwd, hf_step, kd_hand = (_median_after_warmup(x, warmup)
                                       for x in (s_times, t_times, hf_times, kd_hand_times))
    tokens = batch * seq_len
    return {
        "kd_mode": kd_mode, "teacher": teacher, "steps_timed": steps, "batch": batch, "seq_len": seq_len,
        "kd_trainer_step_s": round(kd_step, 4), "student_mlm_step_s": round(s_step, 4),
        "teacher_forward_s": round(t_fwd, 4), "by_hand_total_s": round(s_step + t_fwd, 4),
        "trainer_overhead_pct": round(100 * (kd_step / (s_step + t_fwd) - 1), 1),
        "kd_by_hand_step_s": round(kd_hand, 4),
        "kd_loss_terms_pct": round(100 * (kd_hand / (s_step + t_fwd) - 1), 1),
        "trainer_machinery_pct": round(100 * (kd_step / kd_hand - 1), 1),
        "kd_trainer_tokens_per_s": round(tokens / kd_step, 1),
        "plain_hf_mlm_step_s": round(hf_step, 4),
    }


def probe_accuracy(model_dir, tokenizer, n_train=2000, n_test=1000, seed=0):
    """Logistic regression on mean-pooled features of the frozen student (Rotten Tomatoes fresh vs rotten)."""
    from sklearn.linear_model import LogisticRegression

    ds = load_embedded_dataset("embedded:rotten-tomatoes").shuffle(seed=seed).select(range(n_train + n_test))
    model = AutoModel.from_pretrained(model_dir).eval()
    feats = []
    with torch.no_grad():
        for i in range(0, len(ds), 64):
            enc = tokenizer(ds["text"][i:i + 64], padding=True, truncation=True, max_length=64, return_tensors="pt")
            h = model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).float()
            feats.append(((h * m).sum(1) / m.sum(1)).numpy())
    x, y = np.concatenate(feats), np.array(ds["label"])
    clf = LogisticRegression(max_iter=2000).fit(x[:n_train], y[:n_train])
    return round(float(clf.score(x[n_train:], y[n_train:])), 4)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", default=None, help="student config dir (default: L4 H256 A4 I1024, vocab 30522)")
    parser.add_argument("--time_steps", type=int, default=12, help="timed steps per measurement (after warm-up)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed first steps")
    parser.add_argument("--train_steps", type=int, default=150, help="step budget for the init comparison")
    parser.add_argument("--batch", type=int, default=16, help="blocks per step")
    parser.add_argument("--seq_len", type=int, default=128, help="block length")
    parser.add_argument("--learning_rate", type=float, default=5e-4, help="peak lr of the init comparison runs")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 is steadier when shared)")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: timing, init")
    parser.add_argument("--output", default=str(RESULTS), help="results JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    skip = set(filter(None, args.skip.split(",")))

    work = Path(tempfile.mkdtemp(prefix="bench-pretraining-"))
    student_dir = args.student
    if student_dir is None:
        student_dir = str(work / "student")
        BertConfig(vocab_size=30522, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                   intermediate_size=1024, max_position_embeddings=512).save_pretrained(student_dir)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(MINILM))
    results = {"machine": "2 CPU cores shared with other jobs (noisy)", "threads": args.threads,
               "student": BertConfig.from_pretrained(student_dir).to_diff_dict(), "timing": [], "init": []}

    if "timing" not in skip:
        blocks, _ = load_pretraining_data("embedded:corpus", tokenizer, seq_len=args.seq_len)
        for teacher, mode in ((MINILM, "representation"), (SPLADE, "logit")):
            row = time_steps(student_dir, teacher, mode, blocks, tokenizer, args.time_steps, args.warmup,
                             args.batch, args.seq_len)
            print(json.dumps(row), flush=True)
            results["timing"].append(row)

    if "init" not in skip:
        runs = [(MINILM, "random"), (MINILM, "teacher"), (SPLADE, "random")]
        for teacher, init in runs:
            out = work / f"{teacher.split(':')[-1]}-{init}"
            cfg = {"student_config": student_dir, "teacher": teacher, "init": init, "output_dir": str(out),
                   "max_steps": args.train_steps, "per_device_train_batch_size": args.batch, "seq_len": args.seq_len,
                   "learning_rate": args.learning_rate, "warmup_steps": 0.06, "logging_steps": 25,
                   "save_strategy": "no", "use_cpu": True, "disable_tqdm": True, "seed": 0}
            summary = run_stage(cfg)
            report = json.loads((out / "report.json").read_text())
            row = {"teacher": teacher, "kd_mode": report["kd_mode"], "init": init, "steps": report["global_step"],
                   "heldout_mlm_loss_before": round(report["heldout_mlm_loss_before"], 3),
                   "heldout_mlm_loss_after": round(report["heldout_mlm_loss_after"], 3),
                   "train_seconds": report["train_seconds"], "tokens_per_second": report["tokens_per_second"],
                   "probe_accuracy": probe_accuracy(out, tokenizer)}
            print(json.dumps(row), flush=True)
            results["init"].append(row)
            del summary
        results["init_budget"] = {"steps": args.train_steps, "batch": args.batch, "seq_len": args.seq_len,
                                  "learning_rate": args.learning_rate}

    if skip and Path(args.output).exists():  # keep the parts not re-run from the previous results
        previous = json.loads(Path(args.output).read_text())
        for part, key in (("timing", "timing"), ("init", "init"), ("init", "init_budget")):
            if part in skip and key in previous:
                results[key] = previous[key]
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.output, results)
    print(markdown(results))
    return 0


def markdown(results) -> str:
    lines = []
    if results["timing"]:
        lines += ["| KD mode (teacher) | KD trainer step | student MLM step + teacher fwd | overhead vs that | "
                  "KD step by hand (same loss) | of which KD loss terms | Trainer machinery | KD tokens/s | "
                  "plain HF MLM step (full logits) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in results["timing"]:
            lines.append(f"| {r['kd_mode']} ({r['teacher']}) | {r['kd_trainer_step_s']:.3f} s | "
                         f"{r['student_mlm_step_s']:.3f} + {r['teacher_forward_s']:.3f} = {r['by_hand_total_s']:.3f} s | "
                         f"{r['trainer_overhead_pct']:+.1f}% | {r.get('kd_by_hand_step_s', float('nan')):.3f} s | "
                         f"{r.get('kd_loss_terms_pct', float('nan')):+.1f}% | {r.get('trainer_machinery_pct', float('nan')):+.1f}% | "
                         f"{r['kd_trainer_tokens_per_s']:.0f} | {r['plain_hf_mlm_step_s']:.3f} s |")
    if results["init"]:
        lines += ["", "| teacher | KD mode | init | steps | held-out MLM loss before | after | train s | tokens/s | "
                  "sentiment probe acc. |", "|---|---|---|---|---|---|---|---|---|"]
        for r in results["init"]:
            lines.append(f"| {r['teacher']} | {r['kd_mode']} | {r['init']} | {r['steps']} | "
                         f"{r['heldout_mlm_loss_before']:.3f} | {r['heldout_mlm_loss_after']:.3f} | "
                         f"{r['train_seconds']:.0f} | {r['tokens_per_second']:.0f} | {r['probe_accuracy']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
