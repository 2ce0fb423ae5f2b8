"""BCT's empirical compatibility test (Shen et al. 2020, §3.2; docs/methods/04-updates.md §4), as pure functions plus the
function that runs it on encoders.

The gallery (the index) is embedded by the OLD model; the queries by the NEW one. A new model is compatible with
the old one when new→old search works at least as well as old→old search — BCT's criterion
M(φ_new, φ_old) ≥ M(φ_old, φ_old) — where M is, here, kNN-classification accuracy (the majority label of a query's
k nearest gallery items, cosine similarity) and recall@k (some item among the k nearest shares the query's label).
new→new is the new model's own quality, the ceiling re-indexing would buy.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

Encoder = Callable[[Sequence[str]], torch.Tensor]  # texts -> (N, D) sentence embeddings


def _neighbours(query: torch.Tensor, gallery: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(similarities, indices) of each query's k nearest gallery items by cosine similarity, nearest first."""
    if query.dim() != 2 or gallery.dim() != 2:
        raise ValueError("query and gallery embeddings must be 2-D (N, D).")
    if query.shape[1] != gallery.shape[1]:
        raise ValueError(f"query width {query.shape[1]} and gallery width {gallery.shape[1]} differ: the two models' "
                         "embeddings cannot be compared (the new model needs a projection to the old width).")
    if not 1 <= k <= gallery.shape[0]:
        raise ValueError(f"k={k} must be between 1 and the gallery size {gallery.shape[0]}.")
    sims = F.normalize(query.float(), dim=-1) @ F.normalize(gallery.float(), dim=-1).T
    return sims.topk(k, dim=-1)


def knn_predict(query: torch.Tensor, gallery: torch.Tensor, gallery_labels: torch.Tensor, k: int) -> torch.Tensor:
    """Each query's label by majority vote of its k nearest gallery items (ties: the larger summed similarity,
    then the smaller label)."""
    sims, idx = _neighbours(query, gallery, k)
    labels = gallery_labels.long()[idx]  # (Q, k)
    n_classes = int(gallery_labels.max()) + 1
    votes = F.one_hot(labels, n_classes).sum(1).float()  # (Q, C)
    weight = torch.zeros_like(votes).scatter_add_(1, labels, sims.float())
    score = votes * (k + 1) + weight / (k + 1)  # votes first; summed similarity (< 1 per neighbour) breaks ties
    return score.argmax(-1)


def knn_accuracy(query: torch.Tensor, query_labels: torch.Tensor, gallery: torch.Tensor, gallery_labels: torch.Tensor,
                 k: int = 10) -> float:
    """Fraction of queries whose kNN-vote label (k nearest gallery items) is their own label."""
    pred = knn_predict(query, gallery, gallery_labels, k)
    return float((pred == query_labels.long()).float().mean())


def recall_at_k(query: torch.Tensor, query_labels: torch.Tensor, gallery: torch.Tensor, gallery_labels: torch.Tensor,
                k: int = 1) -> float:
    """Fraction of queries with at least one same-label item among their k nearest gallery items."""
    _, idx = _neighbours(query, gallery, k)
    hit = (gallery_labels.long()[idx] == query_labels.long()[:, None]).any(-1)
    return float(hit.float().mean())


def retrieval_scores(query, query_labels, gallery, gallery_labels, *, knn_k: int = 10,
                     recall_ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """kNN accuracy and recall@k of one (query model, gallery model) pair."""
    out = {"knn_accuracy": knn_accuracy(query, query_labels, gallery, gallery_labels, knn_k)}
    for k in recall_ks:
        out[f"recall@{k}"] = recall_at_k(query, query_labels, gallery, gallery_labels, k)
    return {k: round(v, 4) for k, v in out.items()}


def compatibility_table(new_query: torch.Tensor, old_query: torch.Tensor, query_labels: torch.Tensor,
                        old_gallery: torch.Tensor, new_gallery: torch.Tensor, gallery_labels: torch.Tensor, *,
                        knn_k: int = 10, recall_ks: Sequence[int] = (1, 5)) -> dict[str, dict[str, float]]:
    """BCT's table: new→old (queries by the new model against the old index), old→old and new→new."""
    kw = {"knn_k": knn_k, "recall_ks": recall_ks}
    return {
        "new_old": retrieval_scores(new_query, query_labels, old_gallery, gallery_labels, **kw),
        "old_old": retrieval_scores(old_query, query_labels, old_gallery, gallery_labels, **kw),
        "new_new": retrieval_scores(new_query, query_labels, new_gallery, gallery_labels, **kw),
    }


def criterion_met(table: dict[str, dict[str, float]], metric: str = "knn_accuracy") -> bool:
    """BCT's empirical compatibility criterion: M(new→old) ≥ M(old→old)."""
    return table["new_old"][metric] >= table["old_old"][metric]


@dataclass
class CompatSplit:
    """Disjoint gallery and query texts with integer labels."""

    gallery_texts: list[str]
    gallery_labels: torch.Tensor
    query_texts: list[str]
    query_labels: torch.Tensor


def split_gallery_queries(texts: Sequence[str], labels: Sequence[int], gallery_size: int, query_size: int,
                          seed: int = 0) -> CompatSplit:
    """A seeded, disjoint draw of gallery and query rows (fewer when the data is smaller; at least one of each)."""
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts for {len(labels)} labels.")
    if len(texts) < 2:
        raise ValueError("the compatibility test needs at least 2 labelled texts (a gallery and a query).")
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    n_query = max(1, min(query_size, len(texts) // 2))
    n_gallery = max(1, min(gallery_size, len(texts) - n_query))
    q, g = order[:n_query], order[n_query:n_query + n_gallery]
    return CompatSplit([texts[i] for i in g], torch.tensor([int(labels[i]) for i in g]),
                       [texts[i] for i in q], torch.tensor([int(labels[i]) for i in q]))


def run_compatibility_test(old: Encoder, new: Encoder, split: CompatSplit, *, knn_k: int = 10,
                           recall_ks: Sequence[int] = (1, 5), baseline: Encoder | None = None) -> dict:
    """Embed the gallery and queries with both encoders and return BCT's table, the criterion, and (given a
    `baseline` encoder: a new model trained without the compatibility option, projected the same way) the
    baseline's new→old and new→new rows."""
    knn_k = min(knn_k, len(split.gallery_texts))
    recall_ks = [k for k in recall_ks if k <= len(split.gallery_texts)]
    old_gallery, old_query = old(split.gallery_texts), old(split.query_texts)
    new_gallery, new_query = new(split.gallery_texts), new(split.query_texts)
    table = compatibility_table(new_query, old_query, split.query_labels, old_gallery, new_gallery,
                                split.gallery_labels, knn_k=knn_k, recall_ks=recall_ks)
    result = {"gallery": len(split.gallery_texts), "queries": len(split.query_texts), "knn_k": knn_k,
              "recall_ks": list(recall_ks), **table, "criterion_met": criterion_met(table),
              "mean_cosine_new_old": _mean_cosine(new_query, old_query)}
    if baseline is not None:
        b_gallery, b_query = baseline(split.gallery_texts), baseline(split.query_texts)
        kw = {"knn_k": knn_k, "recall_ks": recall_ks}
        result["baseline"] = {
            "new_old": _safe_scores(b_query, split.query_labels, old_gallery, split.gallery_labels, **kw),
            "new_new": retrieval_scores(b_query, split.query_labels, b_gallery, split.gallery_labels, **kw),
        }
    return result


def _mean_cosine(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Mean cosine between the two models' embeddings of the same texts (None when widths differ)."""
    if a.shape != b.shape:
        return None
    return round(float(F.cosine_similarity(a.float(), b.float(), dim=-1).mean()), 4)


def _safe_scores(query, query_labels, gallery, gallery_labels, **kw) -> dict[str, float | None]:
    """retrieval_scores, or None scores (null in report.json: not measurable) when the widths differ (a baseline with
    no projection cannot query the old index at all: that is the failure BCT's test shows)."""
    if query.shape[1] != gallery.shape[1]:
        return {"knn_accuracy": None, **{f"recall@{k}": None for k in kw.get("recall_ks", ())}}
    return retrieval_scores(query, query_labels, gallery, gallery_labels, **kw)
