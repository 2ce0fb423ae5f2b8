"""The stage contract, and the one table of bortify's stages.

Every stage is the same three things:

- a config: its arguments dataclasses (`arguments`), filled from flags (`bortify <stage> --flag ...`), from a
  recipe section (`--config recipe.yaml`, or `bortify run recipe.yaml`), or both. The options every stage has
  mean the same everywhere: `output_dir`, `overwrite: bool` and `torch_threads: int | None`
  (bortify.utils.overwrite_field / torch_threads_field; the threads are restored when the stage returns);
- one library function (`run`) that takes those dataclasses, in order, and returns a typed report
  (bortify.reports), which knows its own `summary_lines()`;
- its place in a run: `inputs` names, per config key, the earlier stage whose output directory fills it
  (when the recipe leaves the key unset), so `bortify run` wires stages from this table alone.

`bortify.pipeline` runs a stage from this table, for `bortify <stage>` (flags, --config, summary, user errors
as one line with exit code 2) and for `bortify run` (a recipe section plus the wiring). This module only
declares: it imports nothing of bortify, so `bortify --help` and bortify.recipes can read it cheaply.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable


def _has_namespace(repo_id: Any) -> bool:
    return isinstance(repo_id, str) and "/" in repo_id


@dataclass(frozen=True)
class Borrow:
    """A config key filled from another stage's recipe section (when the recipe leaves it unset)."""

    section: str
    key: str
    when: Callable[[Any], bool] = lambda value: value is not None


@dataclass(frozen=True)
class StageSpec:
    name: str
    help: str  # one line for `bortify --help`
    description: str  # `bortify <name> --help`
    arguments: tuple[str, ...]  # "module:Class" of the dataclasses, in the order `run` takes them (a tuple is flattened)
    run: str  # "module:function": the library function, (*dataclasses, **run_options) -> a report (or None)
    # config key -> the earlier stage whose output directory fills it (required unless in optional_inputs)
    inputs: dict[str, str] = field(default_factory=dict)
    optional_inputs: tuple[str, ...] = ()
    borrow: dict[str, Borrow] = field(default_factory=dict)  # config key -> another section's value
    # False: the stage's output directory is a release folder, so `bortify run` keeps its record beside it
    record_inside: bool = True
    # True: `bortify run` redoes an unfinished stage by replacing its output (the card: cheap, and it only
    # ever replaces a release folder made by bortify)
    redo_replaces: bool = False
    run_options: dict[str, Any] = field(default_factory=dict)  # keywords `bortify run` passes to `run`
    # True: `bortify run` sets the stage's `heldout` option to <run>/heldout.json, the run's test texts, which the
    # stage keeps out of its data (docs/methods/09-heldout.md §9)
    reads_heldout: bool = False
    # `bortify <name> VALUE ...` means `--<positional> VALUE ...` (a tuple: several leading values, in order)
    positional: str | tuple[str, ...] | None = None

    def argument_classes(self) -> tuple[type, ...]:
        classes: list[type] = []
        for spec in self.arguments:
            value = load(spec)
            classes += list(value) if isinstance(value, (tuple, list)) else [value]
        return tuple(classes)

    def function(self) -> Callable:
        return load(self.run)


def load(spec: str) -> Any:
    """The attribute named by "module:attribute" (imported now: the table itself stays import-free)."""
    module_name, attr = spec.split(":")
    return getattr(importlib.import_module(module_name), attr)


STAGES: tuple[StageSpec, ...] = (
    StageSpec(
        "extract",
        help="Pick a small BERT architecture out of a big one (Bort FPTAS); writes config.json + report.",
        description=(
            "Optimal subarchitecture extraction (Bort FPTAS, de Wynter 2020): search depth D, heads A, hidden size "
            "H and intermediate size I around a source BERT for the largest W = ((p(T)-p)/p(T))·((i(T)-i)/i(T))/ê, "
            "with approximation parameter ε. Or choose the size yourself: --max_error_increase δ (the cheapest "
            "candidate whose ê is within δ of the source's) or "
            "--latency_budget_ms B (the lowest-ê candidate measured at <= B ms on this CPU); each option's help "
            "states its ε-guarantee. Writes the winner's config.json (a plain BertConfig), report.json with every "
            "candidate, and pareto.png. Re-running with the same --output_dir resumes."),
        arguments=("bortify.extraction.arguments:ExtractionArguments", "bortify.extraction.arguments:EstimatorArguments"),
        run="bortify.extraction.extract:extract",
        reads_heldout=True,
    ),
    StageSpec(
        "pretrain",
        help="Pretrain a student by knowledge distillation (logit or representation KD) with the Trainer.",
        description=(
            "Pretrain a BERT student by knowledge distillation (Bort, docs/methods/02-pretraining.md §2): logit KD from a "
            "masked-LM teacher (w_mlm·CE + w_kd·T²·KL on masked tokens) or representation KD from an encoder "
            "teacher (hidden-state MSE through a learned projection + MiniLMv2 attention relations + the student's "
            "own MLM loss). Writes a standard BertForMaskedLM checkpoint, the training log and report.json. "
            "--compatible_with OLD also trains the student's sentence embedding into OLD's space (BCT, "
            "docs/methods/04-updates.md §4.4): the output then loads with sentence-transformers and report.json holds BCT's "
            "compatibility test. An "
            "unfinished run in --output_dir resumes from its newest complete checkpoint (--overwrite starts "
            "again). All Trainer options (TrainingArguments) apply as well."),
        arguments=("bortify.pretraining.arguments:ModelArguments", "bortify.pretraining.arguments:DataArguments",
                   "bortify.pretraining.arguments:DistillationArguments"),
        run="bortify.pretraining.pretrain:pretrain",
        inputs={"student_config": "extract"},
        reads_heldout=True,
    ),
    StageSpec(
        "finetune",
        help="Fine-tune a student on a classification task, plain or with Agora.",
        description=(
            "Fine-tune a student on a sequence classification task (single sentences or pairs; binary, "
            "multi-class or regression), plain (each θ of the grid once, best on dev) or with Agora "
            "(docs/methods/03-agora.md §3: repair the training set from the dev mistakes with texts generated by "
            "nearest-neighbour token substitution and labelled by a second model), or by task distillation "
            "(--mode distill, docs/methods/07-task-distillation.md §7: a teacher fine-tuned on the task labels the train texts and "
            "unlabelled in-domain text with soft labels the student learns). --old_model OLD adds focal "
            "distillation against the model being replaced (docs/methods/04-updates.md §4.3: fewer negative flips); "
            "--compatible_with OLD adds BCT's influence loss through OLD's frozen head (docs/methods/04-updates.md §4.4: "
            "embeddings that search OLD's index, sentence-transformers files beside the checkpoint). Writes a "
            "standard AutoModelForSequenceClassification checkpoint, report.json and rounds.png."),
        arguments=("bortify.finetuning.arguments:ARGUMENT_CLASSES",),
        run="bortify.finetuning.finetune:finetune",
        inputs={"model": "pretrain"},
        reads_heldout=True,
    ),
    StageSpec(
        "compress",
        help="Shrink a task model for offline use: 8-bit weights, ONNX fp32/int8, an offline bundle; scored and timed.",
        description=(
            "Statistical compression for offline use (docs/methods/05-compression.md §5, Strimel et al. 2018): the paper's linear "
            "8-bit quantisation (256 intervals over [min, max], per tensor or per output channel, small weights "
            "rounded to zero and dropped) stored as safetensors with a loader that rebuilds the transformers model; "
            "onnx/model.onnx and onnx/model_quantized.onnx (ONNX Runtime dynamic int8), which the card ships; and an "
            "offline bundle (8-bit weights + the perfect-hashed vocabulary, no tokenizer files, no Hub). Every form "
            "is scored on the fine-tuning run's test split (agreement with the fp32 model) and timed on the CPU; "
            "report.json has the bytes per part (embeddings, encoder, head, tokenizer). Usage: bortify compress DIR "
            "--output_dir OUT (DIR: the output of `bortify finetune`)."),
        arguments=("bortify.compression.arguments:CompressArguments",),
        run="bortify.compression.compress:compress",
        inputs={"model_dir": "finetune"},
        positional="model_dir",
    ),
    StageSpec(
        "bench",
        help="Measure CPU latency and throughput of a model against its source, fp32 and int8, side by side.",
        description=(
            "CPU speed of MODEL against --source (docs/methods/05-compression.md §5 \"Measuring speed\"): a grid of batch sizes x "
            "sequence lengths, fp32 and each int8 CPU path (torch dynamic quantisation, torchao, ONNX Runtime, "
            "OpenVINO; the ones installed), model and source timed in alternation with torch.utils.benchmark at a "
            "fixed thread count, medians and speedups next to the multiply-add ratio; plus sentences/s on real "
            "texts of --dataset. Writes report.json and bench.png; the card's latency line comes from it."),
        arguments=("bortify.bench:BenchArguments",),
        run="bortify.bench:bench",
        # the int8 ONNX paths time the file that ships: compress's onnx/model_quantized.onnx, when compress ran
        inputs={"model": "finetune", "onnx_dir": "compress"},
        optional_inputs=("onnx_dir",),
        borrow={"source": Borrow("extract", "source")},
        positional="model",
    ),
    StageSpec(
        "compare",
        help="Compare an old and a new classifier: scores, negative flips (NFR), a release gate.",
        description=(
            "What replacing OLD by NEW breaks (docs/methods/04-updates.md §4, positive-congruent training): both classifiers "
            "predict the test split (--split dev: the dev split) of a task loaded with `bortify finetune`'s data "
            "options; reports both models' scores, the negative flip rate NFR (old right, new wrong), relative NFR, "
            "positive flip rate and disagreement, and writes the negative flips (texts, gold, old, new, both "
            "confidences) to negative_flips.jsonl. Label sets must match by name (config.id2label); the same names "
            "in another order are re-mapped. --max_nfr R is a release gate: exit code 3 when NFR > R (in `bortify "
            "run`: the run stops before card/push). Usage: bortify compare OLD NEW --output_dir DIR."),
        arguments=("bortify.compare:CompareArguments", "bortify.finetuning.arguments:FinetuneDataArguments"),
        run="bortify.compare:compare",
        inputs={"new_model": "finetune"},
        # the same data and split as the fine-tuning stage (unless the compare section says otherwise)
        borrow={k: Borrow("finetune", k) for k in (
            "dataset", "dataset_config", "task", "train_file", "dev_file", "test_file", "text_columns", "label_column",
            "train_split", "dev_split", "test_split", "dev_fraction", "test_fraction", "split_seed",
            "max_train_samples", "max_dev_samples", "max_test_samples", "max_length", "torch_threads")},
        redo_replaces=True,  # cheap; a failed gate leaves its report for inspection, and a re-run redoes it
        positional=("old_model", "new_model"),
    ),
    StageSpec(
        "card",
        help="Render a model card with measured evidence from a run's reports.",
        description=(
            "Assemble a release folder: the final checkpoint (fine-tuned model if given, else the pretrained "
            "student), its tokenizer, the Pareto/Agora plots and a README.md model card filled from the run's "
            "reports and a CPU latency measurement. `bortify push OUTPUT_DIR --repo-id NS/NAME` uploads it."),
        arguments=("bortify.hub.card_stage:CardArguments", "bortify.hub.card:CardOptions"),
        run="bortify.hub.card_stage:build_release",
        inputs={"extract_dir": "extract", "pretrain_dir": "pretrain", "finetune_dir": "finetune",
                "compare_dir": "compare", "bench_dir": "bench", "compress_dir": "compress"},
        optional_inputs=("extract_dir", "pretrain_dir", "finetune_dir", "compare_dir", "bench_dir", "compress_dir"),
        # the card's how-to-load names the pushed repository (NS/NAME; a bare NAME is known only at push time)
        borrow={"repo_id": Borrow("push", "repo_id", when=_has_namespace)},
        record_inside=False,
        redo_replaces=True,
    ),
    StageSpec(
        "push",
        help="Push a checkpoint with its card to the Hugging Face Hub.",
        description=(
            "Push a release folder (checkpoint + README.md card) to the Hugging Face Hub: bortify push DIR "
            "--repo-id NS/NAME. The repository is created if missing; the upload is one atomic commit, retried on "
            "transient errors."),
        arguments=("bortify.hub.push:PushArguments",),
        run="bortify.hub.push:push_release",
        inputs={"model_dir": "card"},
        run_options={"skip_without_hub": True},  # `bortify run` stays offline-friendly: no Hub, no push
        positional="model_dir",
    ),
)
# Sections a recipe may hold for stages this bortify does not have yet (with where the method is described).
PLANNED_STAGES: dict[str, str] = {}

STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)
SECTION_NAMES: tuple[str, ...] = STAGE_NAMES + tuple(PLANNED_STAGES)  # every section name a recipe may use
BY_NAME: dict[str, StageSpec] = {s.name: s for s in STAGES}
