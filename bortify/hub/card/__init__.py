"""Model cards with measured evidence, rendered from `model_cards/*.md` with huggingface_hub's ModelCard.

Every figure in a card comes from a run's own reports, from the checkpoint itself or from a measurement taken
while the card is made; a figure that no report provides renders as "not measured". The package reads, names,
writes and renders, one module each:

- `evidence`: the run's reports read into one typed `CardEvidence` (`collect_evidence`), with `CardOptions`;
- `naming`: Hub ids (the one source of them, `dataset_hub_id`) and how a card names datasets, models and corpora;
- `data_notes`: what a card says about the splits, test overlap, the baseline and the usage example;
- `sections`: each template section's pre-formatted values (numbers through bortify.formatting.fmt);
- `render`: the YAML metadata and the template (`render_card`).

What a card may say about data: a dataset is named by its Hub id (linked) or as a packaged `embedded:` name,
never by a local path ("a local dataset"); model-index results are written only for a Hub dataset. The test
split is named for what it is (the dataset's own split, or a seeded part carved from train), and the dev
score is the one that selected the model (the selection half under Agora). Without a repository id the
how-to-load snippet shows `YOUR_NAME/MODEL_NAME`, which `bortify push` fills in on the uploaded copy.

    >>> evidence = collect_evidence({"extract": "runs/demo/extract", "finetune": "runs/demo/finetune"},
    ...                             model_dir="runs/demo/finetune")
    >>> card = render_card(evidence, CardOptions(repo_id="me/bort-sentiment"))
    >>> card.save("README.md")

`bortify card` and the card stage of `bortify run` assemble a release folder (checkpoint + card + plots) with
this package: see `bortify.hub.card_stage` (its arguments, `build_release` and the command).
"""

from bortify.formatting import NOT_APPLICABLE, NOT_MEASURED, fmt, fmt_params, ratio
from bortify.hub.card.data_notes import (DEFAULT_EXAMPLE, STUDENT_EXAMPLE, baseline_line, evaluation_notes,
                                         example_literal, example_text, overlap_lines, split_facts, split_labels)
from bortify.hub.card.evidence import (STAGE_KINDS, CardError, CardEvidence, CardOptions, as_evidence,
                                       bench_latency, collect_evidence, compare_latency, count_parameters,
                                       read_bench, read_bench_report, read_compare, read_compress, read_reports,
                                       resolve_source, shape_of)
from bortify.hub.card.naming import (DATA_SUFFIXES, EMBEDDED_WHAT, REPO_PLACEHOLDER, RUN_FOLDERS, TASK_WHAT,
                                     base_model_text, corpus_text, dataset_hub_id, dataset_text, finetune_dataset_id,
                                     hub_id, looks_like_hub_id, model_name, public_code, public_name, task_name,
                                     task_text)
from bortify.hub.card.render import TEMPLATES, card_metadata, render_card
from bortify.hub.card.sections import (_agora_text, _compat_values, compress_lines, latency_extra,
                                       latency_how, nfr_text, round_columns, shape_text, speed_text, splits_text,
                                       template_values)

__all__ = [
    "NOT_MEASURED", "NOT_APPLICABLE", "REPO_PLACEHOLDER", "DEFAULT_EXAMPLE", "STUDENT_EXAMPLE", "DATA_SUFFIXES",
    "EMBEDDED_WHAT", "RUN_FOLDERS", "TASK_WHAT", "TEMPLATES", "STAGE_KINDS",
    "CardError", "CardEvidence", "CardOptions", "as_evidence", "collect_evidence", "read_reports", "read_bench",
    "read_bench_report", "read_compare", "read_compress", "bench_latency", "compare_latency", "count_parameters",
    "resolve_source", "shape_of",
    "hub_id", "looks_like_hub_id", "dataset_hub_id", "finetune_dataset_id", "dataset_text", "public_name",
    "public_code", "task_name", "task_text", "corpus_text", "base_model_text", "model_name",
    "split_facts", "split_labels", "evaluation_notes", "baseline_line", "overlap_lines", "example_text",
    "example_literal",
    "fmt", "fmt_params", "ratio", "shape_text", "speed_text", "splits_text", "latency_how", "latency_extra",
    "compress_lines", "nfr_text", "round_columns", "template_values", "_agora_text", "_compat_values",
    "card_metadata", "render_card",
]
