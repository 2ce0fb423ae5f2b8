"""The best teacher the labels allow: teacher candidates built on train, the best kept on dev (docs/methods/07-task-distillation.md §7.2).

Task distillation is only as good as its teacher, and the recipe that fine-tunes a teacher well depends on the task:
with ~20 labelled rows a class over 45 classes, three epochs of fine-tuning from a randomly initialised [CLS] pooler
reach half of what a logistic regression on the frozen encoder's features reaches. So bortify builds several
teachers from the same source encoder and keeps the one with the best dev score (the task's metric):

- ``probe``     a linear probe: logistic regression (ridge for regression) on the frozen encoder's sentence vectors,
                pooled the way the encoder was trained (`pooled.source_pooling`), C chosen on dev: one encoder pass.
- ``finetune``  full fine-tuning with the source's pooling (mean pooling for a sentence-transformers encoder, the
                stock [CLS] classifier otherwise), the fresh head at its own, higher learning rate; the epoch with
                the best dev score is kept (one run: a longer schedule only where dev says so).
- ``lp-ft``     LP-FT (Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features and Underperform
                Out-of-Distribution"): the head starts from the probe, then everything is fine-tuned at a smaller
                learning rate, which keeps the features that full fine-tuning from a random head distorts on small
                data; best epoch on dev.
- ``stock``     the previous recipe: `AutoModelForSequenceClassification` ([CLS] through the pooler), one learning
                rate, fixed epochs (Agora's labeler by default; kept for comparison).
- an ensemble   (`teacher_ensemble` k > 1): the average class distribution of the best k candidates
                (Lakshminarayanan et al. 2017; the positive-congruent training paper's reference for fewer flips,
                Yan et al. 2021), itself a candidate judged on dev.

Every candidate is a classifier (`pooled.PooledEncoderForSequenceClassification` or the stock one) wrapped as a
`labelers.Labeler`, so any of them labels the transfer set: the probe's soft labels are its predicted distribution.
"""

from __future__ import annotations

import copy
import logging
import tempfile
import time
from dataclasses import dataclass, field

import datasets
import numpy as np
import torch
from transformers import AutoTokenizer, DataCollatorWithPadding, Trainer

from bortify.finetuning.pooled import pooled_classifier, source_pooling
from bortify.finetuning.tasks import TaskData
from bortify.finetuning.trainer import (BestEpoch, StepBar, check_encoder, fit,  # noqa: F401 (BestEpoch re-exported)
                                        load_classifier_with_note, log_progress, predict, score, to_predictions,
                                        tokenize)
from bortify.trainer import run_arguments

logger = logging.getLogger(__name__)

CANDIDATES = ("probe", "finetune", "lp-ft", "stock")
DISTILL_CANDIDATES = ("probe", "finetune", "lp-ft")  # task distillation's default set
PROBE_C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)  # inverse regularisation strengths tried by the probe (on dev)
PROBE_RIDGE_GRID = (0.1, 1.0, 10.0, 100.0)


def check_candidates(candidates) -> None:
    """teacher_candidates must be a non-empty list of known names (TeacherSettings and AgoraArguments check here)."""
    unknown = [c for c in candidates if c not in CANDIDATES]
    if unknown or not candidates:
        raise ValueError(f"teacher_candidates: unknown {unknown or 'empty list'}; choose from {', '.join(CANDIDATES)}.")


@dataclass
class TeacherSettings:
    """How the candidates are trained (AgoraArguments' labeler_* / teacher_* fields)."""

    candidates: tuple[str, ...] = DISTILL_CANDIDATES
    epochs: float = 3.0
    learning_rate: float = 5e-5
    head_learning_rate: float = 1e-2
    lpft_learning_rate: float | None = None  # None = learning_rate / 2
    batch_size: int = 16
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    ensemble: int = 1
    max_train_samples: int | None = None
    max_length: int = 128
    eval_batch_size: int = 64
    seed: int = 42

    def __post_init__(self):
        check_candidates(self.candidates)
        if self.ensemble < 1:
            raise ValueError(f"teacher_ensemble must be >= 1, got {self.ensemble}.")


@dataclass
class Candidate:
    """One teacher built on train and scored on dev."""

    name: str
    model: object
    dev_score: float
    seconds: float
    details: dict = field(default_factory=dict)

    def record(self) -> dict:
        return {"name": self.name, "dev_score": round(float(self.dev_score), 4), "seconds": round(self.seconds, 1),
                **self.details}


def head_parameter_groups(model, learning_rate: float, head_learning_rate: float, weight_decay: float) -> list[dict]:
    """AdamW groups: the encoder (`model.base_model`) at `learning_rate`, everything else (the fresh head) at
    `head_learning_rate`. A head initialised at random on a small train set learns slowly at the encoder's rate."""
    body = {id(p) for p in model.base_model.parameters()}
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if id(p) in body], "lr": learning_rate, "weight_decay": weight_decay},
            {"params": [p for p in params if id(p) not in body], "lr": head_learning_rate,
             "weight_decay": weight_decay}]


def train_by_dev(model0, tokenizer, train_tok: datasets.Dataset, dev_score_of, *, learning_rate: float,
                 head_learning_rate: float, settings: TeacherSettings, desc: str):
    """A copy of `model0` fine-tuned for `settings.epochs` with separate encoder / head learning rates; returns
    (model at its best dev epoch, {"dev_by_epoch": [...], "best_epoch": n})."""
    model = copy.deepcopy(model0)
    optimizer = torch.optim.AdamW(head_parameter_groups(model, learning_rate, head_learning_rate,
                                                        settings.weight_decay))
    best = BestEpoch(dev_score_of)
    with tempfile.TemporaryDirectory(prefix="bortify-teacher-") as tmp:
        args = run_arguments(tmp, batch_size=settings.batch_size, learning_rate=learning_rate,
                             weight_decay=settings.weight_decay, warmup=settings.warmup_ratio,
                             epochs=settings.epochs, seed=settings.seed)
        trainer = Trainer(model=model, args=args, train_dataset=train_tok, optimizers=(optimizer, None),
                          data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer,
                          callbacks=[StepBar(desc), best])
        trainer.train()
    best.restore(model).eval()
    return model, {"dev_by_epoch": best.scores, "best_epoch": best.best_epoch}


@torch.no_grad()
def sentence_vectors(model, tokenizer, ds: datasets.Dataset, text_columns: list[str], max_length: int,
                     batch_size: int = 64) -> np.ndarray:
    """The pooled sentence vectors of a PooledEncoderForSequenceClassification (its frozen encoder) for a split."""
    tok = tokenize(ds, tokenizer, text_columns, max_length).remove_columns(["labels"])
    collator = DataCollatorWithPadding(tokenizer)
    device = next(model.parameters()).device
    model.eval()
    out = []
    for start in range(0, len(tok), batch_size):
        batch = collator([tok[i] for i in range(start, min(start + batch_size, len(tok)))])
        pooled, _ = model.pooled(**{k: v.to(device) for k, v in batch.items()})
        out.append(pooled.float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.encoder["hidden_size"]), np.float32)


@dataclass
class Standardiser:
    """(x − μ) / σ per feature, in float64, with σ = 1 for a feature that does not vary: all-MiniLM-L6-v2 has a
    sentence-vector dimension that is constant in float32, where scikit-learn's StandardScaler divides by a σ of
    ~1e-33 and the folded head W/σ overflows to inf."""

    mean_: np.ndarray
    scale_: np.ndarray

    @classmethod
    def fit(cls, x) -> "Standardiser":
        x = np.asarray(x, dtype=np.float64)
        scale = x.std(0)
        return cls(x.mean(0), np.where(scale > 1e-6 * max(float(scale.max()), 1e-12), scale, 1.0))

    def transform(self, x) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64) - self.mean_) / self.scale_


def fit_probe(x_train, y_train, x_dev, y_dev, task: TaskData, seed: int):
    """Standardise the features, then logistic regression (ridge for regression) with the strength chosen on dev.
    Returns (weight (k, d), bias (k,), details) of the equivalent linear head on the RAW features: the scaler is
    folded in, W' = W/σ and b' = b − W'·μ, so the probe is a classifier like the others."""
    from sklearn.linear_model import LogisticRegression, Ridge

    scaler = Standardiser.fit(x_train)
    xt, xd = scaler.transform(x_train), scaler.transform(x_dev)
    best = None
    grid = PROBE_RIDGE_GRID if task.regression else PROBE_C_GRID
    for strength in grid:
        clf = (Ridge(alpha=strength) if task.regression else
               LogisticRegression(C=strength, max_iter=2000, random_state=seed))
        clf.fit(xt, y_train)
        dev = dev_metric(clf.predict(xd), y_dev, task)
        if best is None or dev > best[0]:
            best = (dev, strength, clf)
    dev, strength, clf = best
    coef = np.atleast_2d(np.asarray(clf.coef_, dtype=np.float64))
    bias = np.atleast_1d(np.asarray(clf.intercept_, dtype=np.float64))
    if not task.regression and task.num_labels == 2 and coef.shape[0] == 1:  # binary: logits [0, w·x + b]
        coef, bias = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], bias])
    if not task.regression:  # sklearn's class order is sorted(y): map onto the task's ids 0..k-1
        full_w, full_b = np.zeros((task.num_labels, coef.shape[1])), np.full(task.num_labels, -1e4)
        full_w[np.asarray(clf.classes_, int)] = coef
        full_b[np.asarray(clf.classes_, int)] = bias
        coef, bias = full_w, full_b
    weight = coef / scaler.scale_
    bias = bias - weight @ scaler.mean_
    if task.regression:
        return weight, bias, {"alpha": strength}
    temperature = calibration_temperature(np.asarray(x_dev) @ weight.T + bias, y_dev)
    return weight / temperature, bias / temperature, {"C": strength, "temperature": temperature}


def calibration_temperature(logits: np.ndarray, labels, grid=np.geomspace(0.25, 64, 49)) -> float:
    """Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks"): the T that minimises the
    dev negative log-likelihood of softmax(z / T). A probe that fits its train rows almost perfectly is
    over-confident: its soft labels are near one-hot (little for a student to learn beyond the class), and LP-FT
    started from it gets almost no gradient (its train loss is ~0), so it would stay the probe. T leaves every
    argmax, hence the dev score, unchanged."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=int)
    best_t, best_nll = 1.0, np.inf
    for t in grid:
        zt = z / t
        zt = zt - zt.max(1, keepdims=True)
        nll = float(np.mean(np.log(np.exp(zt).sum(1)) - zt[np.arange(len(y)), y]))
        if nll < best_nll:
            best_t, best_nll = float(t), nll
    return round(best_t, 4)


def dev_metric(preds, golds, task: TaskData) -> float:
    return score(list(np.asarray(preds).tolist()), list(golds), [task.main_metric], task.num_labels)[task.main_metric]


class EnsembleModel(torch.nn.Module):
    """The average class distribution of several classifiers, as log-probabilities (softmax of the output = the
    average; Lakshminarayanan et al. 2017). Exposes the first member's input embeddings and config."""

    def __init__(self, members):
        super().__init__()
        self.members = torch.nn.ModuleList(members)
        self.config = members[0].config

    def get_input_embeddings(self):
        return self.members[0].get_input_embeddings()

    def forward(self, **inputs):
        from transformers.modeling_outputs import SequenceClassifierOutput

        inputs.pop("labels", None)
        outputs = [m(**inputs) for m in self.members]
        probs = torch.stack([torch.softmax(o.logits.float(), -1) for o in outputs]).mean(0)
        # hidden states (the intermediate-layer term, docs/methods/07-task-distillation.md §7.1): the best member's
        return SequenceClassifierOutput(logits=torch.log(probs.clamp(min=1e-12)),
                                        hidden_states=getattr(outputs[0], "hidden_states", None))


class TeacherSelection:
    """Builds the candidates of `settings` from `source` on `task`'s train split and scores each on dev.

    `select()` returns (the chosen candidate, the record for report.json: every candidate's dev score, the source's
    pooling and which one teaches)."""

    def __init__(self, task: TaskData, source: str, settings: TeacherSettings):
        from bortify.resources import resolve_model

        self.task, self.source, self.settings = task, source, settings
        self.path = resolve_model(source)
        self.pooling, self.normalize, self.pooling_note = source_pooling(self.path)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        train = task.train
        if settings.max_train_samples and settings.max_train_samples < len(train):
            train = train.shuffle(seed=settings.seed).select(range(settings.max_train_samples))
        self.train = train
        cols, n = task.text_columns, settings.max_length
        self.train_tok = tokenize(train, self.tokenizer, cols, n)
        self.dev_tok = tokenize(task.dev, self.tokenizer, cols, n)
        self.dev_gold = list(task.dev["label"])
        self._probe = None  # (model, details): LP-FT starts from it

    def dev_score(self, model) -> float:
        logits = predict(model, self.tokenizer, self.dev_tok, self.settings.eval_batch_size)
        return dev_metric(to_predictions(logits, self.task.regression), self.dev_gold, self.task)

    def _pooled(self, normalize: bool):
        import transformers

        transformers.set_seed(self.settings.seed)
        return pooled_classifier(self.path, self.task.label_names, self.task.regression, pooling=self.pooling,
                                 normalize=normalize)

    def probe(self):
        if self._probe is None:
            model = self._pooled(self.normalize)
            check_encoder(model.config, self.tokenizer, self.source)
            cols, n, bs = self.task.text_columns, self.settings.max_length, self.settings.eval_batch_size
            x_train = sentence_vectors(model, self.tokenizer, self.train, cols, n, bs)
            x_dev = sentence_vectors(model, self.tokenizer, self.task.dev, cols, n, bs)
            weight, bias, details = fit_probe(x_train, list(self.train["label"]), x_dev, self.dev_gold, self.task,
                                              self.settings.seed)
            with torch.no_grad():
                model.classifier.weight.copy_(torch.as_tensor(weight, dtype=model.classifier.weight.dtype))
                model.classifier.bias.copy_(torch.as_tensor(bias, dtype=model.classifier.bias.dtype))
            model.eval()
            self._probe = (model, {**details, "pooling": model.config.pooling, "normalize": model.config.normalize})
        return self._probe

    def finetune(self):
        s = self.settings
        if self.pooling == "mean":
            model0 = self._pooled(normalize=False)
            details = {"pooling": "mean"}
        else:
            model0, _, note = load_classifier_with_note(self.source, self.task.label_names, self.task.regression)
            details = {"pooling": "cls (the stock classifier)", "load_note": note}
        model, trace = train_by_dev(model0, self.tokenizer, self.train_tok, self.dev_score,
                                    learning_rate=s.learning_rate, head_learning_rate=s.head_learning_rate,
                                    settings=s, desc="teacher: finetune")
        return model, {**details, "learning_rate": s.learning_rate, "head_learning_rate": s.head_learning_rate,
                       "epochs": s.epochs, **trace}

    def lp_ft(self):
        s = self.settings
        probe, probe_details = self.probe()
        lr = s.lpft_learning_rate or s.learning_rate / 2
        model, trace = train_by_dev(probe, self.tokenizer, self.train_tok, self.dev_score, learning_rate=lr,
                                    head_learning_rate=lr, settings=s, desc="teacher: lp-ft")
        return model, {"pooling": probe_details["pooling"], "learning_rate": lr, "epochs": s.epochs, **trace}

    def stock(self):
        import transformers

        s = self.settings
        transformers.set_seed(s.seed)
        model0, _, note = load_classifier_with_note(self.source, self.task.label_names, self.task.regression)
        theta = {"learning_rate": s.learning_rate, "weight_decay": s.weight_decay, "warmup_ratio": s.warmup_ratio,
                 "batch_size": s.batch_size}
        model = fit(model0, self.tokenizer, self.train_tok, theta, epochs=s.epochs, seed=s.seed, desc="teacher: stock")
        return model, {"pooling": "cls (the stock classifier)", "learning_rate": s.learning_rate, "epochs": s.epochs,
                       "load_note": note}

    def build(self, name: str) -> Candidate:
        start = time.perf_counter()
        model, details = {"probe": self.probe, "finetune": self.finetune, "lp-ft": self.lp_ft,
                          "stock": self.stock}[name]()
        cand = Candidate(name, model, self.dev_score(model), time.perf_counter() - start, details)
        log_progress(f"teacher candidate {name}: dev {self.task.main_metric} {cand.dev_score:.4f} ({cand.seconds:.0f} s)")
        return cand

    def select(self) -> tuple[Candidate, dict]:
        s = self.settings
        log_progress(f"teacher selection on dev: {', '.join(s.candidates)} from {self.source} ({len(self.train)} train rows; "
            f"the source pools by {self.pooling}: {self.pooling_note})")
        candidates = [self.build(name) for name in s.candidates]
        ranked = sorted(candidates, key=lambda c: -c.dev_score)
        if s.ensemble > 1 and len(ranked) > 1:
            members = ranked[:s.ensemble]
            start = time.perf_counter()
            model = EnsembleModel([m.model for m in members]).eval()
            ens = Candidate(f"ensemble({'+'.join(m.name for m in members)})", model, self.dev_score(model),
                            time.perf_counter() - start, {"members": [m.name for m in members]})
            log_progress(f"teacher candidate {ens.name}: dev {self.task.main_metric} {ens.dev_score:.4f}")
            candidates.append(ens)
            ranked = sorted(candidates, key=lambda c: -c.dev_score)
        self.models = {c.name: c.model for c in candidates}
        chosen = ranked[0]  # ties: the earlier (cheaper) candidate, as sorted() is stable
        record = {"source": self.source, "source_pooling": self.pooling, "pooling_note": self.pooling_note,
                  "metric": self.task.main_metric, "train_rows": len(self.train),
                  "candidates": [c.record() for c in candidates], "chosen": chosen.name,
                  "why": f"best dev {self.task.main_metric} ({chosen.dev_score:.4f}) of {len(candidates)} candidates"}
        return chosen, record


def candidate_text(candidate: Candidate, train_rows: int) -> str:
    """The chosen teacher in words, for the report, the summary and the card."""
    d = candidate.details
    epochs = (f", best dev epoch {d['best_epoch']} of {d['epochs']:g}" if d.get("best_epoch") else
              f", {d['epochs']:g} epochs" if "epochs" in d else "")
    what = {
        "probe": f"linear probe (logistic regression, C {d.get('C', d.get('alpha'))}) on frozen {d.get('pooling')}-pooled "
                 "features",
        "finetune": f"fine-tuned with {d.get('pooling')} pooling, head lr {d.get('head_learning_rate', 0):g}",
        "lp-ft": "LP-FT (head from the linear probe, then fine-tuned)",
        "stock": "fine-tuned as a stock [CLS] classifier",
    }.get(candidate.name, candidate.name)
    return f"{what} on {train_rows} train rows{epochs}; chosen on dev from the teacher candidates"
