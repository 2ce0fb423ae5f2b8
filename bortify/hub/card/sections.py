"""The card's sections: the pre-formatted strings each part of the template shows (usage, architecture,
extraction, pretraining, compatibility, fine-tuning, evaluation, compression, CPU latency, accuracy vs speed).

Each `_<section>_values` builder reads the typed CardEvidence (bortify.hub.card.evidence) and returns the
template's values for that section; a figure no report provides says "not measured" (bortify.formatting).
"""

from __future__ import annotations

import re
from typing import Any

from bortify.formatting import NOT_APPLICABLE, NOT_MEASURED, fmt, fmt_params, ratio
from bortify.hub.card.data_notes import baseline_line, evaluation_notes, example_literal, overlap_lines, split_labels
from bortify.hub.card.evidence import CardEvidence, CardOptions
from bortify.hub.card.naming import (REPO_PLACEHOLDER, base_model_text, corpus_text, dataset_text, finetune_dataset_id,
                                     model_name, public_code, public_name, task_name, task_text)
from bortify.reports import ExtractReport, FinetuneReport, PretrainReport, Round, Winner

def shape_text(value: Any, missing: str = NOT_APPLICABLE) -> str:
    """A ⟨D, A, H, I⟩ entry: the number, or n/a for a config that does not have it (non-BERT models)."""
    return missing if value is None else fmt(value)


def speed_text(speedup: float) -> str:
    """'5.2× faster' / '1.3× slower' (a speed-up below 1 is a slow-down, said plainly)."""
    return f"{speedup:.1f}× faster" if speedup >= 1 else f"{1 / speedup:.1f}× slower"


def splits_text(splits: Any) -> str:
    """'train 200, dev 100, test 100' from a report's splits (sizes only; other details stay in the report)."""
    if not isinstance(splits, dict):
        return fmt(splits)
    sizes = [f"{k} {v:,}" for k, v in splits.items() if k in ("train", "dev", "test", "validation") and isinstance(v, int)]
    return ", ".join(sizes) or fmt(splits)


def template_values(evidence: CardEvidence, options: CardOptions, *, load_from: str,
                    images: dict[str, str]) -> dict:
    """Pre-formatted strings for the Jinja template (templates stay free of logic), one card section at a time."""
    return {**_usage_values(evidence, options, load_from), **_architecture_values(evidence),
            **_extract_values(evidence.extract, evidence, images), **_pretrain_values(evidence.pretrain, evidence),
            **_finetune_values(evidence.finetune, evidence, images), **_evaluation_values(evidence),
            **_latency_values(evidence), **_accuracy_speed_values(evidence, images),
            **_compat_values(evidence.pretrain, evidence.finetune),
            "compression": compress_lines(evidence.compress), "not_measured": NOT_MEASURED}


def _usage_values(evidence: CardEvidence, options: CardOptions, load_from: str) -> dict:
    ft = evidence.finetune
    return {
        "model_name": model_name(evidence.kind, options),
        "load_from": load_from,
        "load_is_placeholder": load_from == REPO_PLACEHOLDER,
        "example": example_literal(ft, evidence.kind),
        "max_length_note": (f"It was fine-tuned on inputs truncated to {ft.max_length} tokens, and its tokenizer's "
                            f"`model_max_length` is {ft.max_length}: with `truncation=True` a text of any length is "
                            f"cut there (without it, a text over {ft.max_length} tokens is an error)."
                            if ft.max_length is not None else
                            "`truncation=True` cuts a long text at the tokenizer's `model_max_length`."),
        "architecture": evidence.architecture,
        "labels": ", ".join(map(str, evidence.labels or [])) or NOT_MEASURED,
    }


def _architecture_values(evidence: CardEvidence) -> dict:
    src, params = evidence.source, evidence.parameters or {}
    shape, src_shape = evidence.shape, src.get("shape") or {}
    return {
        "arch_rows": [(key, shape_text(shape.get(key)), shape_text(src_shape.get(key), missing=NOT_MEASURED))
                      for key in ("D", "A", "H", "I")],
        "params_total": fmt_params(params.get("total")),
        "params_effective": fmt_params(params.get("effective")),
        "source_params_total": fmt_params(src.get("parameters")),
        "source_params_effective": fmt_params(src.get("effective_parameters")),
        "ratio_total": ratio(params.get("total"), src.get("parameters")),
        "ratio_effective": ratio(params.get("effective"), src.get("effective_parameters")),
        "size_mb": f"{params['bytes'] / 2**20:.1f} MiB" if params.get("bytes") else NOT_MEASURED,
        "source": public_code(src.get("name"), "model"),
    }


def _extract_values(ex: ExtractReport, evidence: CardEvidence, images: dict[str, str]) -> dict:
    w = ex.winner or Winner()
    return {
        "has_extract": bool(ex) or "extract" in evidence.stages,
        "ex_space": fmt(ex.space),
        "ex_epsilon": fmt(ex.epsilon),
        "ex_error_estimator": fmt(ex.error_estimator),
        "ex_winner": ", ".join(f"{k}={v}" for k, v in w.shape().items()) or NOT_MEASURED,
        "ex_w": fmt(w.W),
        "ex_candidates": (f"{ex.num_candidates:,} candidates: {ex.num_trained} trained for ê, {ex.num_cached} from "
                          f"cache, {ex.num_skipped} skipped by the ε-buckets"
                          if ex.num_candidates is not None else NOT_MEASURED),
        "ex_ops_ratio": (f"{w.ops_ratio:.1%} of the source's multiply-adds per token"
                         + (f" at L={ex.seq_len}" if ex.seq_len else "") if w.ops_ratio is not None else NOT_MEASURED),
        "ex_error": fmt(w.error),
        "pareto_png": images.get("pareto"),
    }


def _pretrain_values(pt: PretrainReport, evidence: CardEvidence) -> dict:
    return {
        "has_pretrain": bool(pt) or "pretrain" in evidence.stages,
        "pt_teacher": public_name(pt.teacher, "model"),
        "pt_teacher_kind": fmt(pt.teacher_kind),
        "pt_corpus": corpus_text(pt),
        "pt_kd_mode": fmt(pt.kd_mode),
        "pt_loss": ", ".join(f"{k}={fmt(v)}" for k, v in pt.loss.items()) or NOT_MEASURED,
        "pt_init": fmt(pt.init),
        "pt_steps": fmt(pt.max_steps),
        "pt_before": fmt(pt.heldout_mlm_loss_before),
        "pt_after": fmt(pt.heldout_mlm_loss_after),
    }


def _compat_values(pt: PretrainReport, ft: FinetuneReport | None = None) -> dict:
    """The backward-compatible-embeddings paragraph (docs/methods/04-updates.md §4), only when the option was used
    (fine-tuning's `--compatible_with`, §4.4, when both were: the released model is the fine-tuned one)."""
    if ft and getattr(ft, "compatibility", None):
        return _compat_table(ft.compatibility, [
            f"Fine-tuned with `--compatible_with {public_name(ft.compatibility.old_model, 'model')}` (BCT's influence "
            "loss, Shen et al. 2020): its [CLS] embedding, through a learned "
            f"{' → '.join(map(str, ft.compatibility.projection or []))} projection, was trained to be classified "
            "correctly by that old classifier's frozen head, so that queries embedded by this model can search an "
            "index of the old model's [CLS] embeddings (by cosine) with no re-indexing. `SentenceTransformer(...)` "
            "loads this model with cls pooling and the projection from this folder." + _choice_text(ft.compatibility)])
    c = pt.compatibility if pt else None
    if not c:
        return {"compat_text": ""}
    lines = [
        f"Trained with `--compatible_with {public_name(c.old_model, 'model')}` (BCT, Shen et al. 2020): its "
        f"{c.pooling}-pooled embedding, through a learned {' → '.join(map(str, c.projection or []))} projection"
        f"{' and normalised' if c.normalized else ''}, was trained into that model's embedding space, so that "
        "queries embedded by this model can search an index built by the old one with no re-indexing. "
        "`SentenceTransformer(...)` loads "
        "that encoder (the pretrained student, before fine-tuning) with its projection from this folder.",
    ]
    return _compat_table(c, lines)


def _choice_text(c) -> str:
    """Which projection ships (fine-tuning's dev-split choice between the trained one and the ridge refit)."""
    choice = (c.extra or {}).get("projection_choice") or {}
    scores = choice.get("dev_new_old") or {}
    if choice.get("chosen") not in ("trained", "refit") or set(scores) != {"trained", "refit"}:
        return ""
    what = ("the projection trained with the model" if choice["chosen"] == "trained" else
            "the ridge-regression read-out of the old embeddings refitted on the final encoder")

    def pair(name):
        return f"{name} {scores[name].get('knn_accuracy', 0):.4f} / {scores[name].get('recall@1', 0):.4f}"
    return (f" The projection shipped is {what}, chosen on the dev split by new→old kNN accuracy + recall@1 "
            f"({pair('trained')}, {pair('refit')}).")


def _compat_table(c, lines: list[str]) -> dict:
    """BCT's compatibility test as a table under the paragraph `lines`."""
    def row(d: dict) -> str:
        return ", ".join(f"{k.replace('_', ' ')} {'not measurable' if v is None else format(v, '.4f')}"
                         for k, v in d.items()) or NOT_MEASURED
    base = (c.baseline or {}).get("new_old")
    if not c.eval_dataset:
        why = "(`--compat_eval_dataset none`)" if c.loss != "influence" else "(the test split was too small)"
        return {"compat_text": "\n".join(lines + ["", f"BCT's compatibility test: {NOT_MEASURED} {why}."])}
    lines += [
        "",
        f"BCT's compatibility test on {public_name(c.eval_dataset, 'dataset')} ({c.gallery} gallery texts embedded "
        f"by the old model, {c.queries} queries; kNN accuracy with k = {c.knn_k}):",
        "",
        "| queries → gallery | scores |",
        "|---|---|",
        f"| this model → old model (no re-indexing) | {row(c.new_old)} |",
        f"| old model → old model | {row(c.old_old)} |",
        f"| this model → this model (re-indexed) | {row(c.new_new)} |",
    ]
    if base:
        lines.append(f"| a student trained without the option → old model | {row(base)} |")
    lines += ["", f"BCT's criterion (kNN accuracy this → old ≥ old → old): "
              f"**{'met' if c.criterion_met else 'not met'}**."]
    return {"compat_text": "\n".join(lines)}


def _finetune_values(ft: FinetuneReport, evidence: CardEvidence, images: dict[str, str]) -> dict:
    task = task_name(ft)
    return {
        "has_finetune": bool(ft) or "finetune" in evidence.stages,
        "ft_base": base_model_text(ft, evidence.pretrain),
        "task_text": task_text(ft, evidence.labels),
        "ft_dataset": dataset_text(ft),
        "ft_task": task or NOT_MEASURED,
        "ft_use": f"{task} classification" if task else "text classification",
        "ft_metric": fmt(ft.metric),
        "ft_mode": fmt(ft.mode),
        "ft_splits": splits_text(ft.splits),
        "ft_labeler": _labeler_text(ft) if ft.labeler else NOT_MEASURED,
        "ft_best_round": fmt(ft.best_round),
        "ft_round_columns": round_columns(ft),
        "ft_rounds": [_round_row(r, ft.mode == "agora") for r in ft.rounds],
        "ft_agora_settings": _agora_text(ft),
        "ft_distill_settings": _distill_text(ft),
        "ft_examples_added": fmt(sum(r.examples_added or 0 for r in ft.rounds)) if ft.rounds else NOT_MEASURED,
        "rounds_png": images.get("rounds"),
    }


def round_columns(ft: FinetuneReport) -> list[str]:
    """The fine-tuning table's header: dev mistakes only where they are counted (Agora repairs them)."""
    if ft.mode == "agora":
        return ["Agora round", "best θ", "dev score", "dev mistakes", "examples added", "train size"]
    added = "transfer-set rows added" if ft.mode == "distill" else "examples added"
    return ["round", "best θ", "dev score", added, "train size"]


def _round_row(r: Round, mistakes: bool = True) -> list[str]:
    """round | best θ | dev score | [dev mistakes (how many were expanded)] | examples added | train size"""
    expanded = f" ({r.mistakes_expanded} expanded)" if r.mistakes_expanded is not None and r.examples_added else ""
    row = [fmt(r.round), fmt(r.best_theta), fmt(r.dev_score)]
    if mistakes:
        row.append(fmt(r.mistakes) + expanded)
    return row + [fmt(r.examples_added), fmt(r.train_size)]


def _agora_text(ft: FinetuneReport) -> str:
    """One sentence on the Agora options that shaped the added data (empty for plain fine-tuning)."""
    gen, ag = ft.generator or {}, ft.agora or {}
    if not gen and not ag:
        return ""
    parts = [f"generator {gen.get('name', NOT_MEASURED)} (k={fmt(gen.get('k'))} per mistake)"]
    if gen.get("verify_mistakes"):
        parts.append("only mistakes the labeler labels correctly are expanded")
    parts.append("soft labels (the labeler's class distribution)" if ag.get("soft_labels") else "hard labels")
    if isinstance(ag.get("repair_fraction"), (int, float)) and ag["repair_fraction"] < 1:
        parts.append(f"dev split into {fmt(ag.get('dev_repair_rows'))} repair and {fmt(ag.get('dev_selection_rows'))} "
                     "selection rows (the selection rows alone pick θ and the round)")
    return "Agora settings: " + "; ".join(parts) + "."


def _distill_text(ft: FinetuneReport) -> str:
    """One sentence on the task-distillation transfer set and loss (empty for the other modes)."""
    if not ft.distill:
        return ""
    counts, st = ft.transfer_set(), ft.distill.get("settings") or {}
    teacher_test = next(iter(ft.labeler_scores("test").values()), None)
    return (f"Transfer set: {fmt(counts.get('gold'))} labelled train rows, {fmt(counts.get('augmented'))} generated "
            f"variants and {fmt(counts.get('unlabeled'))} unlabelled in-domain texts; loss α·CE(gold) + "
            f"(1−α)·T²·KL(teacher ‖ student) with α = {fmt(st.get('distill_alpha'))}, T = "
            f"{fmt(st.get('distill_temperature'))}, {fmt(st.get('distill_epochs'))} epochs{_best_epoch_text(ft)}. "
            f"The teacher's own test score: {fmt(teacher_test)}." + _teacher_selection_text(ft))


def _best_epoch_text(ft: FinetuneReport) -> str:
    """' (the student's best dev epoch kept: 2 of 3)' with distill_best_epoch, else empty."""
    scores = ft.distill.get("dev_by_epoch")
    if not scores:
        return ""
    return f" (the student's best dev epoch kept: {fmt(ft.distill.get('best_epoch'))} of {len(scores)})"


def _teacher_selection_text(ft: FinetuneReport) -> str:
    """' Teacher chosen on dev: probe 0.55, finetune 0.71 (chosen), lp-ft 0.64 (dev accuracy).' or empty when the
    teacher was given or built by the stock recipe alone (finetuning/teachers.py)."""
    sel = (ft.labeler or {}).get("selection")
    if not sel or not sel.get("candidates"):
        return ""
    parts = [f"{c['name']} {fmt(c.get('dev_score'))}" + (" (chosen)" if c["name"] == sel.get("chosen") else "")
             for c in sel["candidates"]]
    return (f" The teacher was chosen on dev from {len(parts)} candidates built from the same encoder "
            f"(dev {sel.get('metric', 'score')}): " + ", ".join(parts) + ".")


def _labeler_text(ft: FinetuneReport) -> str:
    """'name (dev accuracy 0.81)': the labeler (Agora) or teacher (distill) and its dev score(s)."""
    measured = ", ".join(f"dev {k} {fmt(v)}" for k, v in ft.labeler_scores("dev").items()) or f"dev score {NOT_MEASURED}"
    name = re.sub(r"embedded:[\w.\-]+", lambda m: public_name(m.group(0), "model"),
                  str((ft.labeler or {}).get("name", NOT_MEASURED)))
    return f"{name} ({measured})"


def _evaluation_values(evidence: CardEvidence) -> dict:
    ft, pt, nfr = evidence.finetune, evidence.pretrain, evidence.nfr
    labels = split_labels(ft)
    splits = {"dev": ft.dev, "dev_repair": ft.dev_repair or {}, "test": ft.test}
    return {
        "eval_rows": [(labels[split], metric, f"{value:.4f}") for split, metrics in splits.items()
                      for metric, value in metrics.items()],
        "eval_notes": evaluation_notes(ft) + ([line] if (line := baseline_line(ft)) else []),
        "overlap_lines": overlap_lines(ft),
        "eval_not_in_metadata": bool(ft) and evidence.is_task and not finetune_dataset_id(ft)
                                and bool(ft.dev or ft.test),
        "mlm_rows": [("held-out MLM loss", fmt(pt.heldout_mlm_loss_before), fmt(pt.heldout_mlm_loss_after))]
        if pt else [],
        "nfr": nfr_text(evidence.compare) or (NOT_MEASURED if nfr is None else fmt(nfr)),
    }


def compress_lines(compress) -> list[str]:
    """The card's "Smaller and offline" bullets from a compress report (docs/methods/05-compression.md §5); [] without one."""
    from bortify.reports import CompressReport

    if not compress:
        return []
    c = compress if isinstance(compress, CompressReport) else CompressReport.from_dict(compress)
    s, mib, metric = c.sizes, 2 ** 20, c.metric
    if not s.get("fp32_file") or not s.get("q8_file"):
        return []

    def scored(form: str) -> str:
        f = c.forms.get(form) or {}
        agree = f" (same prediction as fp32 on {f['agreement']:.1%})" if f.get("agreement") is not None else ""
        return f"test {metric} {fmt(c.score(form))}{agree}"

    lines = [f"8-bit weights (the linear 256-interval quantisation of Strimel et al. 2018, "
             f"{'per output channel' if c.quantization.get('per_channel') else 'per tensor'}): "
             f"{s['q8_file'] / mib:.2f} MiB vs {s['fp32_file'] / mib:.2f} MiB in float32 ({fmt(c.ratio('q8'), 3)}x "
             f"smaller; {fmt(c.ratio('q8_lzma'), 3)}x with lzma), {scored('q8')} vs {fmt(c.score('fp32'))} in float32."]
    if "onnx_int8" in c.forms:
        lines.append(f"ONNX: `onnx/model.onnx` (float32, {scored('onnx_fp32')}) and `onnx/model_quantized.onnx` "
                     f"(ONNX Runtime dynamic int8, {s['onnx_int8'] / mib:.2f} MiB, {scored('onnx_int8')}), the layout "
                     "optimum (`subfolder=\"onnx\"`) and transformers.js load.")
    sec = (c.latency or {}).get("seconds") or {}
    if sec.get("onnx_int8") and sec.get("torch_fp32"):
        lines.append(f"int8 on ONNX Runtime: {sec['onnx_int8'] * 1e3:.1f} ms vs {sec['torch_fp32'] * 1e3:.1f} ms in "
                     f"float32 PyTorch ({fmt(c.speedup(), 2)}x), batch {c.latency['batch_size']} x "
                     f"{c.latency['seq_len']} tokens, {c.latency['threads']} thread(s) of "
                     f"{c.latency.get('cpu') or 'a CPU the report does not name'}.")
    if "bundle" in c.forms and s.get("bundle"):
        b = s["bundle"]
        lines.append(f"An offline bundle (`bortify compress`, not in this repository) holds the 8-bit weights and a "
                     f"perfect-hashed vocabulary in {b['total'] / mib:.2f} MiB (vocabulary {b['vocab'] / 1024:.0f} KiB "
                     f"vs {s['fp32_parts']['tokenizer'] / 1024:.0f} KiB of tokenizer files); {scored('bundle')}.")
    return lines


def nfr_text(compare) -> str | None:
    """The card's negative-flip sentence from a compare report (docs/methods/04-updates.md §4); None without one."""
    from bortify.reports import CompareReport

    if not compare:
        return None
    c = compare if isinstance(compare, CompareReport) else CompareReport.from_dict(compare)
    if c.nfr is None:
        return None
    old, new = c.old.get(c.metric or "", None), c.new.get(c.metric or "", None)
    gate = f"; {c.gate_text()}" if c.max_nfr is not None else ""
    return (f"**{c.nfr:.4f}** against {public_code(c.old_model, 'model')} on the {c.split} split ({c.negative_flips} "
            f"of {c.rows} examples the old model got right are now wrong; relative NFR {fmt(c.relative_nfr, 3)}, "
            f"positive flip rate {fmt(c.pfr)}; {c.metric} old {fmt(old)} vs this model {fmt(new)}{gate})")


def _latency_values(evidence: CardEvidence) -> dict:
    lat = evidence.latency
    return {
        "latency": None if not lat else {
            "model_ms": f"{lat['model_seconds'] * 1e3:.1f}", "source_ms": f"{lat['source_seconds'] * 1e3:.1f}",
            "speedup": speed_text(lat["speedup"]), "source": public_code(lat["source"], "model"),
            "batch_size": lat["batch_size"],
            "seq_len": lat["seq_len"], "repeats": lat.get("repeats", lat.get("rounds")), "threads": lat["threads"],
            "how": latency_how(lat), "extra": latency_extra(lat),
            "cpu": lat.get("cpu") or "a CPU the measurement did not record",
            "what": "the model (as released, head included)" if lat.get("timer") == "bench" else "the encoder"},
        "latency_note": f" ({evidence.latency_error})" if evidence.latency_error else "",
    }


def latency_how(lat: dict) -> str:
    """How the latency was timed (bortify's one timer: medians of rounds in alternation, docs/methods/05-compression.md §5)."""
    rounds = lat.get("rounds", lat.get("repeats"))
    by = " by `bortify bench`" if lat.get("timer") == "bench" else ""
    return f"median of {rounds} rounds timed in alternation with the source{by} (torch.utils.benchmark)"


def latency_extra(lat: dict) -> str:
    """The multiply-add ratio (the speedup's limit on the same kernels) and the int8 figure, when bench gave them."""
    parts = []
    if lat.get("macs_ratio"):
        parts.append(f"multiply-add ratio {lat['macs_ratio']:.1f}×")
    if lat.get("int8_model_seconds") and lat.get("int8_speedup_vs_source_fp32"):
        file = f", {lat['int8_file']}" if lat.get("int8_file") else ""
        parts.append(f"int8 ({lat['int8_path']}{file}): {lat['int8_model_seconds'] * 1e3:.1f} ms, "
                     f"{speed_text(lat['int8_speedup_vs_source_fp32'])} than the source in fp32")
    return f" ({'; '.join(parts)})" if parts else ""


def _accuracy_speed_values(evidence: CardEvidence, images: dict[str, str]) -> dict:
    """The accuracy vs sentences/s plot (bortify.hub.card_plots) and the sentence saying where its numbers come
    from; nothing when the release has no such plot (fewer than two points, or no bench report)."""
    plot, png = evidence.accuracy_speed, images.get("accuracy_speed")
    if not plot or not png:
        return {"accuracy_speed_png": None, "accuracy_speed_text": ""}
    texts = f"{plot['texts']} " if plot.get("texts") else ""
    batch = f", batches of {plot['batch_size']}" if plot.get("batch_size") else ""
    teacher = any(p.get("label", "").startswith("teacher") for p in plot.get("points") or [])
    text = (f"Test {plot['metric']} against CPU throughput for this model in fp32 and in int8 (ONNX Runtime) and for "
            f"its teacher, as far as the run measured them: scores from the run's finetune and compress reports, "
            f"sentences/s from its bench report on {texts}real texts ({public_name(plot.get('dataset'), 'dataset')}"
            f"{batch}) at {plot.get('threads')} CPU thread(s)."
            + (f" The teacher's speed is the source model's ({public_code(plot.get('source'), 'model')}, the "
               "teacher's shape with random weights: speed depends on the shape only), timed in alternation with "
               "this model's fp32 pass." if teacher else "")
            + " A star marks the Pareto frontier: no other point is at least as fast and at least as accurate "
            "and better in one.")
    return {"accuracy_speed_png": png, "accuracy_speed_text": text}
