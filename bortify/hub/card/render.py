"""The card itself: its YAML metadata (ModelCardData with the model-index results the Hub parses) and the
Jinja template (model_cards/*.md) filled with the sections' values (bortify.hub.card.sections).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from bortify.hub.card.evidence import CardError, CardEvidence, CardOptions, as_evidence
from bortify.hub.card.data_notes import split_labels
from bortify.hub.card.naming import REPO_PLACEHOLDER, finetune_dataset_id, hub_id, model_name, task_name
from bortify.hub.card.sections import template_values


TEMPLATES = {"task": "task_model.md", "student": "student.md"}


def _template_dir() -> Path:
    for base in (Path(__file__).resolve().parents[3], Path.cwd()):
        if (base / "model_cards" / TEMPLATES["task"]).is_file():
            return base / "model_cards"
    raise CardError("Card templates not found: model_cards/ ships with the bortify source tree; install bortify "
                    "from a checkout (pip install -e .) or run from the repository root.")


def card_metadata(evidence: CardEvidence, options: CardOptions):
    """ModelCardData (YAML front matter) incl. the model-index results that the Hub parses."""
    from huggingface_hub import EvalResult, ModelCardData

    ft, pt = evidence.finetune, evidence.pretrain
    name = model_name(evidence.kind, options)
    eval_results = []
    # model-index results name a Hub dataset (type and name = its id); a local or packaged dataset has none,
    # so its scores stay in the card's text only.
    dataset = finetune_dataset_id(ft) if evidence.is_task else None
    if dataset:
        labels = split_labels(ft)
        for split, metrics in (("test", ft.test), ("dev", ft.dev)):
            for metric, value in metrics.items():
                eval_results.append(EvalResult(
                    task_type="text-classification", task_name=task_name(ft) or "Text Classification",
                    dataset_type=dataset, dataset_name=dataset, dataset_split=labels[split],
                    metric_type=metric, metric_name=f"{metric}, {labels[split]}", metric_value=round(value, 4)))
    elif not evidence.is_task and pt.heldout_mlm_loss_after is not None and hub_id(pt.corpus):
        corpus = hub_id(pt.corpus)
        eval_results.append(EvalResult(
            task_type="fill-mask", task_name="Masked language modelling", dataset_type=corpus, dataset_name=corpus,
            dataset_split="heldout", metric_type="loss", metric_name="held-out MLM loss",
            metric_value=round(float(pt.heldout_mlm_loss_after), 4)))
    tags = ["bort", "bortify", "knowledge-distillation"]
    if ft.mode == "agora":
        tags.append("agora")
    tags += [t.strip() for t in (options.tags or "").split(",") if t.strip() and t.strip() not in tags]
    datasets = [d for d in (finetune_dataset_id(ft), hub_id(pt.corpus)) if d]
    base = hub_id(evidence.source["name"])
    pipeline_tag = "text-classification" if evidence.is_task else (
        "fill-mask" if "MaskedLM" in str(evidence.architecture) else "feature-extraction")
    return ModelCardData(
        model_name=name, language=[s.strip() for s in options.language.split(",") if s.strip()],
        license=options.license, library_name="transformers", pipeline_tag=pipeline_tag, tags=tags,
        datasets=datasets or None, metrics=sorted({r.metric_type for r in eval_results}) or None,
        base_model=base, eval_results=eval_results or None,
    )


def render_card(evidence: Mapping, options: CardOptions | None = None, *, load_from: str | None = None,
                images: dict[str, str] | None = None, template_path: str | Path | None = None):
    """Render the card (a huggingface_hub ModelCard) from collected evidence."""
    from huggingface_hub import ModelCard

    options = options or CardOptions()
    evidence = as_evidence(evidence)
    template = Path(template_path) if template_path else _template_dir() / TEMPLATES[evidence.kind]
    values = template_values(evidence, options, load_from=load_from or options.repo_id or REPO_PLACEHOLDER,
                             images=images or {})
    return ModelCard.from_template(card_metadata(evidence, options), template_path=str(template), **values)
