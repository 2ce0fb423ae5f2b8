"""The models bench_pareto.py puts side by side, as `predict(texts) -> class ids` functions, and how it times them.

Every peer is the whole text-to-label path (tokenisation included), so sentences/s compares what a user runs:
  - a fine-tuned classifier directory (the fine-tuned teacher, bortify's students): AutoModelForSequenceClassification;
  - frozen all-MiniLM-L6-v2 + logistic regression: mean-pooled, L2-normalised token states (what the packaged
    sentence-transformers model computes: its modules are Pooling(mean) + Normalize), done with transformers
    directly so no sentence-transformers dependency is needed;
  - model2vec (static embeddings distilled from the same MiniLM) + logistic regression.
Logistic regression: scikit-learn, C chosen on dev from a fixed grid, fitted on train only.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

LR_GRID = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
Predict = Callable[[Sequence[str]], np.ndarray]


# --- embeddings -------------------------------------------------------------------------------------------------

@torch.no_grad()
def mean_pooled(encoder, tokenizer, texts: Sequence[str], max_length: int, batch_size: int = 32) -> np.ndarray:
    """Sentence embeddings: the attention-masked mean of the last hidden states, L2-normalised (all-MiniLM-L6-v2's
    sentence-transformers recipe)."""
    encoder.eval()
    out = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt")
        hidden = encoder(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(out) if out else np.zeros((0, encoder.config.hidden_size), dtype=np.float32)


def static_embeddings(m2v, texts: Sequence[str], max_length: int) -> np.ndarray:
    """model2vec embeddings; no worker processes (one thread, like every other peer)."""
    return m2v.encode(list(texts), max_length=max_length, show_progress_bar=False, use_multiprocessing=False)


# --- logistic regression ----------------------------------------------------------------------------------------

@dataclass
class ProbeFit:
    classifier: object
    C: float
    dev_accuracy: float
    dev_by_C: dict = field(default_factory=dict)


def fit_logistic(x_train, y_train, x_dev, y_dev, grid=LR_GRID) -> ProbeFit:
    """Logistic regression on train for each C of the grid; the best dev accuracy wins (ties: the smaller C)."""
    from sklearn.linear_model import LogisticRegression

    best, by_c = None, {}
    for c in grid:
        clf = LogisticRegression(C=c, max_iter=5000).fit(x_train, y_train)
        acc = float((clf.predict(x_dev) == np.asarray(y_dev)).mean())
        by_c[str(c)] = acc
        if best is None or acc > best.dev_accuracy:
            best = ProbeFit(clf, c, acc)
    best.dev_by_C = by_c
    return best


# --- predictors -------------------------------------------------------------------------------------------------

def classifier_predictor(model_dir: str, max_length: int) -> tuple[Predict, int]:
    """(predict, parameters) of a fine-tuned sequence classifier directory (safetensors only)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(model_dir, use_safetensors=True,
                                                               trust_remote_code=False).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    @torch.no_grad()
    def predict(texts):
        enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        return model(**enc).logits.argmax(-1).numpy()

    return predict, sum(p.numel() for p in model.parameters())


def int8_predictor(int8_dir: str, max_length: int) -> tuple[Predict, int]:
    """(predict, parameters) of bench_pareto.int8_point's folder: model.int8.onnx on ONNX Runtime, 1 thread."""
    import onnx
    from transformers import AutoTokenizer

    from bortify.bench import onnxruntime_runner

    path = Path(int8_dir) / "model.int8.onnx"
    run = onnxruntime_runner(path, threads=1)
    tokenizer = AutoTokenizer.from_pretrained(int8_dir)

    def predict(texts):
        enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="np")
        return np.asarray(run({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})).argmax(-1)

    params = sum(int(np.prod(t.dims)) for t in onnx.load(str(path)).graph.initializer)
    return predict, params


def frozen_encoder_predictor(encoder_dir: str, classifier, max_length: int) -> tuple[Predict, int]:
    from transformers import AutoModel, AutoTokenizer

    encoder = AutoModel.from_pretrained(encoder_dir, use_safetensors=True, trust_remote_code=False).eval()
    tokenizer = AutoTokenizer.from_pretrained(encoder_dir)

    def predict(texts):
        return classifier.predict(mean_pooled(encoder, tokenizer, texts, max_length, batch_size=len(texts) or 1))

    params = sum(p.numel() for p in encoder.parameters()) + classifier.coef_.size + classifier.intercept_.size
    return predict, params


def static_predictor(m2v_dir: str, classifier, max_length: int) -> tuple[Predict, int]:
    from model2vec import StaticModel

    m2v = StaticModel.from_pretrained(m2v_dir, force_download=False)

    def predict(texts):
        return classifier.predict(static_embeddings(m2v, texts, max_length))

    params = int(np.asarray(m2v.embedding).size) + classifier.coef_.size + classifier.intercept_.size
    return predict, params


# --- throughput -------------------------------------------------------------------------------------------------

@dataclass
class Throughput:
    sentences_per_s: float  # median over the timed passes
    passes: list[float]  # sentences/s of each timed pass
    batch_size: int
    sentences: int
    predictions: list[int]  # of the last timed pass (an accuracy check against the unit's figure)


def throughput(predictors: dict[str, Predict], texts: Sequence[str], *, batch_size: int = 32, repeats: int = 3,
               warmup_batches: int = 3) -> dict[str, Throughput]:
    """Sentences/s of each predictor over the real test texts in batches of `batch_size` (order as given), after
    `warmup_batches` untimed batches; the median of `repeats` full passes. The passes are interleaved (pass r of
    every model, then pass r + 1), so a change in the machine's load hits every model alike."""
    texts = list(texts)
    batches = [texts[i:i + batch_size] for i in range(0, len(texts), batch_size)]
    for predict in predictors.values():
        for batch in batches[:warmup_batches]:
            predict(batch)
    rates: dict[str, list[float]] = {name: [] for name in predictors}
    preds: dict[str, list[int]] = {}
    for _ in range(repeats):
        for name, predict in predictors.items():
            out = []
            t0 = time.perf_counter()
            for batch in batches:
                out.extend(int(p) for p in predict(batch))
            rates[name].append(len(texts) / (time.perf_counter() - t0))
            preds[name] = out
    return {name: Throughput(statistics.median(r), [round(x, 1) for x in r], batch_size, len(texts), preds[name])
            for name, r in rates.items()}


def pareto_front(points: list[tuple[float, float]]) -> list[bool]:
    """For (speed, accuracy) points: True where no other point is at least as fast and as accurate and better in
    one of the two (the Pareto frontier of 'faster' and 'more accurate')."""
    flags = []
    for i, (s, a) in enumerate(points):
        dominated = any(s2 >= s and a2 >= a and (s2 > s or a2 > a) for j, (s2, a2) in enumerate(points) if j != i)
        flags.append(not dominated)
    return flags
