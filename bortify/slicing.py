"""Teacher slicing: initialise a small BERT from a big one by keeping its most important parts.

`init_from_teacher(student, teacher)` copies into `student` (BertModel / BertForMaskedLM /
BertForSequenceClassification, or any model whose base model has BERT's layout) the weights of `teacher`
(BertModel or BertForMaskedLM), cut down to the student's shape:

- depth: the student's layers come from chosen teacher layers (default: evenly spaced, the last one kept);
- hidden size: one set of residual-stream channels is kept everywhere (embeddings, every layer, every
  LayerNorm, pooler, MLM head);
- attention: whole heads are kept by importance; inside a kept head, query/key and value dims are ranked
  too when the student's head size is smaller;
- feed-forward: intermediate neurons kept by importance.

Importance follows Minitron (Muralidharan et al. 2024, "Compact Language Models via Pruning and Knowledge
Distillation"), which ranks channels, heads and neurons by mean activation magnitude on a small
calibration batch: `importance="activation"` with `calibration=` a tokenised batch. Without data,
`importance="magnitude"` (the default) ranks by weight L2 norms instead (our choice); "first" keeps the
first k (naive truncation, for ablations). Measured here on six MiniLM slices (correlation of the
student's sentence-similarity matrix with the teacher's over 64 Rotten Tomatoes snippets): activation
0.48-0.83, magnitude 0.43-0.77, first 0.40-0.74; activation was best on every slice.

Why it matters for bortify: a sliced student starts close to the teacher, so a few hundred steps of
fine-tuning or distillation separate candidate architectures (docs/methods/01-extraction.md §1 "Measured here": from-scratch
masked-LM runs do not on CPU). The pretraining stage uses it to initialise students as well.

A student with exactly the teacher's shape gets exactly the teacher's function (every index set is
the identity). When the student's head size differs from the teacher's, heads are merged (student head
wider) or split (more student heads than teacher heads); the query is rescaled by sqrt(d_student/d_teacher)
so each kept query·key term keeps the teacher's 1/sqrt(d_teacher) softmax scale.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import torch
from torch import nn

__all__ = ["SlicingError", "init_from_teacher", "default_layer_map"]

IMPORTANCE_KINDS = ("magnitude", "activation", "first")


class SlicingError(ValueError):
    """The student cannot be sliced out of the teacher (shape, vocabulary or layout mismatch)."""


# ----------------------------------------------------------------------------------------------- helpers
def _base(model: nn.Module) -> nn.Module:
    """The BertModel inside a task model (`.bert` / `.base_model`), or the model itself."""
    base = getattr(model, "base_model", model)
    if not (hasattr(base, "embeddings") and hasattr(base, "encoder")):
        raise SlicingError(
            f"{type(model).__name__} does not have a BERT layout (embeddings + encoder.layer[*]); "
            "init_from_teacher works on BertModel, BertForMaskedLM, BertForSequenceClassification and "
            "models built the same way."
        )
    layers = getattr(base.encoder, "layer", None)
    if layers is None or len(layers) == 0 or not hasattr(layers[0].attention, "self"):
        raise SlicingError(f"{type(model).__name__}: encoder has no BERT-style layers (encoder.layer[i].attention.self).")
    return base


def _mlm_head(model: nn.Module) -> nn.Module | None:
    cls = getattr(model, "cls", None)
    predictions = getattr(cls, "predictions", None) if cls is not None else None
    return predictions if predictions is not None and hasattr(predictions, "transform") else None


def default_layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """Teacher layer (0-based) for each student layer: evenly spaced, the last one always kept, TinyBERT's uniform
    g(m) = m·N/M (Jiao et al. 2020, §3.3; docs/methods/02-pretraining.md §2) counted from 0. 6 -> 2 gives [2, 5]; 24 -> 4 gives
    [5, 11, 17, 23]. bortify's one layer map: slicing initialises each student layer from this teacher layer and
    representation KD (pretraining) distils it from the same one. A student deeper than its teacher (KD only;
    slicing refuses it) repeats teacher layers."""
    if student_layers < 1 or teacher_layers < 1:
        raise SlicingError(f"student has {student_layers} layers, teacher {teacher_layers}: both need at least one.")
    return [max(0, round((m + 1) * teacher_layers / student_layers) - 1) for m in range(student_layers)]


def _sq(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Per-row (dim=1) or per-column (dim=0) sum of squares, normalised so each matrix weighs the same."""
    t = t.detach().float()
    s = (t * t).sum(dim=dim)
    total = s.sum()
    return s / total if total > 0 else s


def _top(scores: torch.Tensor, k: int, importance: str) -> torch.Tensor:
    """Indices of the k most important entries, in their original order (order matters for identity)."""
    if importance == "first":
        return torch.arange(k)
    return torch.sort(torch.topk(scores, k, sorted=False).indices).values


def _ranked(scores: torch.Tensor, importance: str) -> torch.Tensor:
    """All indices, most important first (importance='first' keeps the original order)."""
    if importance == "first":
        return torch.arange(scores.numel())
    return torch.argsort(scores, descending=True, stable=True)


def _weight_scores(t_base: nn.Module, layers: Sequence[int]) -> dict:
    """importance='magnitude': L2 mass of the weights (no data needed).

    Residual channels are ranked by the word-embedding column norm (measured here on MiniLM: sentence-
    similarity agreement of sliced students 0.43-0.67 vs 0.33-0.46 when every matrix touching the channel
    is summed — a few outlier channels own most weight mass but not most of the signal).
    """
    out = {"hidden": _sq(t_base.embeddings.word_embeddings.weight, 0), "layers": {}}
    for i in layers:
        layer = t_base.encoder.layer[i]
        att = layer.attention
        out["layers"][i] = {
            "qk": _sq(att.self.query.weight, 1) + _sq(att.self.key.weight, 1),
            "v": _sq(att.self.value.weight, 1) + _sq(att.output.dense.weight, 0),
            "ffn": _sq(layer.intermediate.dense.weight, 1) + _sq(layer.output.dense.weight, 0),
        }
    return out


@torch.no_grad()
def _activation_scores(teacher: nn.Module, t_base: nn.Module, layers: Sequence[int], calibration: dict) -> dict:
    """importance='activation' (Minitron §2: mean |activation| over a calibration batch).

    hidden channel = summed mean |LayerNorm output| (embeddings + every LayerNorm of the kept layers);
    query/key dim = mean|q|·mean|k|; value dim = mean |attention context|; FFN neuron = mean |GELU output|.
    """
    mask = calibration.get("attention_mask")
    stats: dict = {}
    hooks = []

    def mean_abs(x: torch.Tensor) -> torch.Tensor:
        x = x.detach().float().abs()
        if mask is not None and x.dim() == 3 and x.shape[:2] == mask.shape:
            m = mask.to(x.device, x.dtype).unsqueeze(-1)
            return (x * m).sum((0, 1)) / m.sum().clamp(min=1)
        return x.reshape(-1, x.shape[-1]).mean(0)

    def on_output(key):
        def hook(module, args, output):
            stats[key] = stats.get(key, 0) + mean_abs(output[0] if isinstance(output, tuple) else output)
        return hook

    def on_input(key):
        def hook(module, args):
            stats[key] = stats.get(key, 0) + mean_abs(args[0])
        return hook

    hooks.append(t_base.embeddings.LayerNorm.register_forward_hook(on_output("hidden")))
    for i in layers:
        layer = t_base.encoder.layer[i]
        hooks.append(layer.attention.output.LayerNorm.register_forward_hook(on_output("hidden")))
        hooks.append(layer.output.LayerNorm.register_forward_hook(on_output("hidden")))
        hooks.append(layer.attention.self.query.register_forward_hook(on_output(("q", i))))
        hooks.append(layer.attention.self.key.register_forward_hook(on_output(("k", i))))
        hooks.append(layer.attention.output.dense.register_forward_pre_hook(on_input(("v", i))))
        hooks.append(layer.output.dense.register_forward_pre_hook(on_input(("ffn", i))))
    was_training = teacher.training
    teacher.eval()
    try:
        device = next(teacher.parameters()).device
        t_base(**{k: v.to(device) for k, v in calibration.items() if k in ("input_ids", "attention_mask", "token_type_ids")})
    finally:
        for h in hooks:
            h.remove()
        teacher.train(was_training)
    out = {"hidden": stats["hidden"], "layers": {}}
    for i in layers:
        out["layers"][i] = {"qk": stats[("q", i)] * stats[("k", i)], "v": stats[("v", i)], "ffn": stats[("ffn", i)]}
    return out


def _attention_index(qk_dim: torch.Tensor, v_dim: torch.Tensor, a_t: int, a_s: int, d_s: int, importance: str):
    """Teacher inner dims feeding each student head: (qk_index, v_index, teacher heads used), each a_s*d_s long.

    Clean case (d_s <= d_t and a_s <= a_t): keep whole heads (Minitron), the top d_s dims inside each.
    Otherwise (wider student heads, or more heads than the teacher has): concatenate teacher heads in
    importance order and cut consecutive groups of d_s dims, so a student head merges or splits heads.
    """
    d_t = qk_dim.numel() // a_t
    head_score = (qk_dim / qk_dim.sum().clamp(min=1e-12) + v_dim / v_dim.sum().clamp(min=1e-12)).view(a_t, d_t).sum(1)
    if d_s <= d_t and a_s <= a_t:
        heads = _top(head_score, a_s, importance)
        qk, vv = [], []
        for h in heads.tolist():
            sl = slice(h * d_t, (h + 1) * d_t)
            qk.append(h * d_t + _top(qk_dim[sl], d_s, importance))
            vv.append(h * d_t + _top(v_dim[sl], d_s, importance))
        return torch.cat(qk), torch.cat(vv), heads.tolist()
    order = _ranked(head_score, importance)
    qk, vv = [], []
    for h in order.tolist():
        sl = slice(h * d_t, (h + 1) * d_t)
        qk.append(h * d_t + _ranked(qk_dim[sl], importance))
        vv.append(h * d_t + _ranked(v_dim[sl], importance))
    n = a_s * d_s
    return torch.cat(qk)[:n], torch.cat(vv)[:n], order[: math.ceil(n / d_t)].tolist()


@torch.no_grad()
def _copy(dst: torch.Tensor, src: torch.Tensor, name: str) -> None:
    if dst.shape != src.shape:  # a bug in the index maths, never a user error
        raise RuntimeError(f"slicing {name}: shape {tuple(src.shape)} != student {tuple(dst.shape)}")
    dst.copy_(src.to(dtype=dst.dtype, device=dst.device))


def _copy_linear(dst: nn.Linear, src: nn.Linear, rows, cols, name: str, scale: float = 1.0) -> None:
    w = src.weight
    if rows is not None:
        w = w.index_select(0, rows)
    if cols is not None:
        w = w.index_select(1, cols)
    _copy(dst.weight, w * scale, name + ".weight")
    if dst.bias is not None and src.bias is not None:
        b = src.bias if rows is None else src.bias.index_select(0, rows)
        _copy(dst.bias, b * scale, name + ".bias")


def _copy_layernorm(dst: nn.LayerNorm, src: nn.LayerNorm, idx, name: str) -> None:
    _copy(dst.weight, src.weight.index_select(0, idx), name + ".weight")
    _copy(dst.bias, src.bias.index_select(0, idx), name + ".bias")


def _slice_embeddings(se: nn.Module, te: nn.Module, hid: torch.Tensor) -> None:
    """Embeddings: keep channels `hid`; positions / token types truncated to the student's table sizes."""
    _copy(se.word_embeddings.weight, te.word_embeddings.weight.index_select(1, hid), "embeddings.word_embeddings")
    n_pos, n_type = se.position_embeddings.weight.shape[0], se.token_type_embeddings.weight.shape[0]
    _copy(se.position_embeddings.weight, te.position_embeddings.weight[:n_pos].index_select(1, hid), "embeddings.position")
    _copy(se.token_type_embeddings.weight, te.token_type_embeddings.weight[:n_type].index_select(1, hid), "embeddings.token_type")
    _copy_layernorm(se.LayerNorm, te.LayerNorm, hid, "embeddings.LayerNorm")


def _slice_layer(sl: nn.Module, tl: nn.Module, layer_scores: dict, hid: torch.Tensor, heads: tuple[int, int, int],
                 importance: str, name: str) -> tuple[list[int], int]:
    """One transformer layer: attention heads / dims and FFN neurons by importance, channels `hid` everywhere.
    `heads` = (teacher heads, student heads, student head size). Returns (teacher heads used, FFN neurons kept)."""
    a_t, a_s, d_s = heads
    d_t = tl.attention.self.query.weight.shape[0] // a_t
    qk_idx, v_idx, used = _attention_index(layer_scores["qk"], layer_scores["v"], a_t, a_s, d_s, importance)
    scale = math.sqrt(d_s / d_t)  # keep each q·k term at the teacher's 1/sqrt(d_t) (module docstring)
    _copy_linear(sl.attention.self.query, tl.attention.self.query, qk_idx, hid, name + ".query", scale)
    _copy_linear(sl.attention.self.key, tl.attention.self.key, qk_idx, hid, name + ".key")
    _copy_linear(sl.attention.self.value, tl.attention.self.value, v_idx, hid, name + ".value")
    _copy_linear(sl.attention.output.dense, tl.attention.output.dense, hid, v_idx, name + ".attention.output")
    _copy_layernorm(sl.attention.output.LayerNorm, tl.attention.output.LayerNorm, hid, name + ".attention.LayerNorm")
    ffn = _top(layer_scores["ffn"], sl.intermediate.dense.weight.shape[0], importance)
    _copy_linear(sl.intermediate.dense, tl.intermediate.dense, ffn, hid, name + ".intermediate")
    _copy_linear(sl.output.dense, tl.output.dense, hid, ffn, name + ".output")
    _copy_layernorm(sl.output.LayerNorm, tl.output.LayerNorm, hid, name + ".output.LayerNorm")
    return used, int(ffn.numel())


def _slice_heads(student: nn.Module, teacher: nn.Module, s_base: nn.Module, t_base: nn.Module,
                 hid: torch.Tensor) -> tuple[bool, bool]:
    """The pooler and the MLM head where both models have them; returns (pooler copied, MLM head copied)."""
    pooler = getattr(s_base, "pooler", None) is not None and getattr(t_base, "pooler", None) is not None
    if pooler:
        _copy_linear(s_base.pooler.dense, t_base.pooler.dense, hid, hid, "pooler")
    s_head, t_head = _mlm_head(student), _mlm_head(teacher)
    mlm = s_head is not None and t_head is not None
    if mlm:
        _copy_linear(s_head.transform.dense, t_head.transform.dense, hid, hid, "cls.transform")
        _copy_layernorm(s_head.transform.LayerNorm, t_head.transform.LayerNorm, hid, "cls.transform.LayerNorm")
        s_dec, t_dec = s_head.decoder, t_head.decoder
        if s_dec.weight.data_ptr() != s_base.embeddings.word_embeddings.weight.data_ptr():  # untied: slice it too
            _copy(s_dec.weight, t_dec.weight.index_select(1, hid), "cls.decoder")
        bias = getattr(t_head, "bias", None)
        if bias is None:
            bias = t_dec.bias
        _copy(s_head.bias if getattr(s_head, "bias", None) is not None else s_dec.bias, bias, "cls.bias")
    return pooler, mlm


def _check_shapes(s_cfg, t_cfg) -> None:
    if s_cfg.vocab_size != t_cfg.vocab_size:
        raise SlicingError(
            f"vocabulary mismatch: student vocab_size={s_cfg.vocab_size}, teacher {t_cfg.vocab_size}. "
            "The student must use the teacher's tokenizer; set vocab_size from the teacher's config."
        )
    checks = [
        ("hidden_size", s_cfg.hidden_size, t_cfg.hidden_size),
        ("intermediate_size", s_cfg.intermediate_size, t_cfg.intermediate_size),
        ("num_hidden_layers", s_cfg.num_hidden_layers, t_cfg.num_hidden_layers),
        ("max_position_embeddings", s_cfg.max_position_embeddings, t_cfg.max_position_embeddings),
        ("type_vocab_size", s_cfg.type_vocab_size, t_cfg.type_vocab_size),
    ]
    too_big = [f"{n}={s} > teacher {t}" for n, s, t in checks if s > t]
    if too_big:
        raise SlicingError(
            "student is bigger than the teacher in " + ", ".join(too_big)
            + ". Slicing only shrinks: pick a student no larger than the teacher (or initialise it randomly)."
        )
    defaults = {"position_embedding_type": "absolute"}  # transformers 5 leaves it unset on a fresh BertConfig
    for name in ("hidden_act", "position_embedding_type"):
        s_val = getattr(s_cfg, name, None) or defaults.get(name)
        t_val = getattr(t_cfg, name, None) or defaults.get(name)
        if s_val != t_val:
            warnings.warn(f"student {name}={s_val!r} differs from teacher {t_val!r}: sliced weights will fit less well.")


# ------------------------------------------------------------------------------------------- public API
@torch.no_grad()
def init_from_teacher(
    student: nn.Module,
    teacher: nn.Module,
    layer_map: Sequence[int] | None = None,
    importance: str = "magnitude",
    calibration: dict[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Copy a sliced `teacher` into `student` in place; return what was kept.

    Args:
        student: BertModel / BertForMaskedLM / BertForSequenceClassification (task heads other than the MLM
            head stay as initialised).
        teacher: BertModel or BertForMaskedLM with the same vocabulary and sizes >= the student's.
        layer_map: teacher layer index for each student layer (default `default_layer_map`).
        importance: "magnitude" (rank channels/heads/neurons by weight L2 norm; no data needed),
            "activation" (Minitron: mean |activation| of the teacher on `calibration`; the better choice when
            a batch of real text is at hand) or "first" (keep the first k of each: naive truncation, an
            ablation).
        calibration: tokenizer output (input_ids, attention_mask[, token_type_ids]) for importance="activation".

    Returns:
        {"layers", "hidden_size", "heads" (teacher heads used per student layer), "intermediate_size",
         "pooler", "mlm_head", "importance", "identity"}.
    """
    if importance not in IMPORTANCE_KINDS:
        raise SlicingError(f"importance={importance!r}; choose one of {IMPORTANCE_KINDS}.")
    if importance == "activation" and (not calibration or "input_ids" not in calibration):
        raise SlicingError("importance='activation' needs calibration={'input_ids': ..., 'attention_mask': ...} "
                           "(a tokenised batch of real text); or use importance='magnitude'.")
    s_base, t_base = _base(student), _base(teacher)
    s_cfg, t_cfg = student.config, teacher.config
    _check_shapes(s_cfg, t_cfg)
    d_layers, t_layers = len(s_base.encoder.layer), len(t_base.encoder.layer)
    if layer_map is None:
        layer_map = default_layer_map(d_layers, t_layers)
    layer_map = [int(i) for i in layer_map]
    if len(layer_map) != d_layers or any(not 0 <= i < t_layers for i in layer_map):
        raise SlicingError(
            f"layer_map={layer_map} must give one teacher layer in [0, {t_layers - 1}] for each of the "
            f"student's {d_layers} layers."
        )

    h_s, a_s, a_t = s_cfg.hidden_size, s_cfg.num_attention_heads, t_cfg.num_attention_heads
    d_s = h_s // a_s
    kept_layers = sorted(set(layer_map))
    if importance == "activation":
        scores = _activation_scores(teacher, t_base, kept_layers, calibration)
    else:
        scores = _weight_scores(t_base, kept_layers)
    hid = _top(scores["hidden"], h_s, importance)

    _slice_embeddings(s_base.embeddings, t_base.embeddings, hid)
    heads_used, ffn_kept = [], []
    for s_i, t_i in enumerate(layer_map):
        heads, ffn = _slice_layer(s_base.encoder.layer[s_i], t_base.encoder.layer[t_i], scores["layers"][t_i], hid,
                                  (a_t, a_s, d_s), importance, f"encoder.layer.{s_i}<-{t_i}")
        heads_used.append(heads)
        ffn_kept.append(ffn)
    pooler, mlm = _slice_heads(student, teacher, s_base, t_base, hid)

    identity = (
        layer_map == list(range(t_layers)) and h_s == t_cfg.hidden_size and a_s == a_t
        and s_cfg.intermediate_size == t_cfg.intermediate_size
    )
    return {
        "layers": layer_map,
        "hidden_size": h_s,
        "teacher_hidden_size": t_cfg.hidden_size,
        "heads": heads_used,
        "head_size": d_s,
        "teacher_head_size": t_cfg.hidden_size // a_t,
        "intermediate_size": ffn_kept[0] if ffn_kept else 0,
        "pooler": pooler,
        "mlm_head": mlm,
        "importance": importance,
        "identity": identity,
    }
