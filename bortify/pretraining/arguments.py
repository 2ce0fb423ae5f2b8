"""The pretraining stage's options: model / data dataclasses and `DistillationArguments(TrainingArguments)`.

`DistillationArguments` documents only the knowledge-distillation fields; every other field is a standard
`transformers.TrainingArguments` option (see its docs). Defaults follow Bort's released pretraining script
where it has one (docs/methods/02-pretraining.md §2: AdamW lr 1e-4, weight decay 0.01, warm-up 1%, linear decay, clip 1.0,
T = 2, w_mlm = 0.1, w_kd = 0.5) and are sized for short runs otherwise.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from transformers import TrainingArguments

from bortify.utils import check_torch_threads, overwrite_field, torch_threads_field

KD_MODES = ("auto", "logit", "representation")
INIT_MODES = ("random", "teacher")
MASKING_MODES = ("dynamic", "static")


@dataclass
class ModelArguments:
    student_config: str = field(
        metadata={"help": "The student architecture: a directory holding config.json (e.g. `bortify extract`'s "
                  "output), a config.json path, or a Hub/embedded model name (only its config is used). Must be a "
                  "BERT config (model_type 'bert'); the output is a BertForMaskedLM."},
    )
    teacher: str = field(
        default="embedded:all-MiniLM-L6-v2",
        metadata={"help": "Teacher: any AutoModelForMaskedLM (logit KD, e.g. roberta-large, embedded:splade-tiny) or "
                  "any AutoModel encoder (representation KD, e.g. embedded:all-MiniLM-L6-v2). Hub name, local "
                  "directory or embedded name. Its tokenizer tokenises the corpus and is saved with the student."},
    )
    kd_mode: str = field(
        default="auto",
        metadata={"help": "'logit' (Bort: CE + T²·KL on the teacher's MLM logits), 'representation' (hidden-state "
                  "MSE + attention-relation KD + the student's own MLM loss; for teachers without an MLM head), or "
                  "'auto' (logit when the teacher has an MLM head, representation otherwise)."},
    )
    init: str = field(
        default="random",
        metadata={"help": "Student initialisation: 'random' (N(0, 0.02), as Bort) or 'teacher' (inherit the teacher's "
                  "weights where shapes allow: chosen layers, width slices by weight magnitude; our addition, "
                  "needs bortify.slicing)."},
    )
    compatible_with: str | None = field(
        default=None,
        metadata={"help": "Backward-compatible embeddings (BCT, docs/methods/04-updates.md §4): an OLD sentence encoder (Hub "
                  "name, local directory or embedded name; e.g. embedded:all-MiniLM-L6-v2) whose index the student "
                  "must be able to query with no re-indexing. The student also learns a projection (Dense) from its "
                  "mean-pooled embedding to the old model's space, trained on the old model's embeddings of the "
                  "corpus texts (computed once, before training); the output loads with sentence-transformers and "
                  "report.json holds BCT's compatibility test. Default: unset (off)."},
    )

    torch_threads: int | None = torch_threads_field()
    overwrite: bool = overwrite_field()  # an unfinished run resumes from its newest complete checkpoint

    def __post_init__(self):
        if self.kd_mode not in KD_MODES:
            raise ValueError(f"kd_mode must be one of {KD_MODES}, got {self.kd_mode!r}.")
        if self.init not in INIT_MODES:
            raise ValueError(f"init must be one of {INIT_MODES}, got {self.init!r}.")
        check_torch_threads(self.torch_threads)


@dataclass
class DataArguments:
    corpus: str = field(
        default="embedded:corpus",
        metadata={"help": "Raw-text corpus: a Hub dataset name, local text/json/csv/parquet file(s) or directory, or "
                  "embedded:corpus."},
    )
    corpus_config: str | None = field(default=None, metadata={"help": "Hub dataset configuration name, if any."})
    text_column: str = field(default="text", metadata={"help": "Column holding the raw text."})
    corpus_split: str = field(default="train", metadata={"help": "Split of the corpus to pretrain on."})
    seq_len: int = field(
        default=128,
        metadata={"help": "Length of the packed blocks, special tokens included (Bort: 512). Texts are tokenised, "
                  "concatenated with [SEP] between them and cut into blocks of this length."},
    )
    heldout_fraction: float = field(
        default=0.05,
        metadata={"help": "Fraction of the corpus's texts (split before packing) kept out of training to measure the "
                  "held-out MLM loss before and after."},
    )
    max_heldout_blocks: int = field(default=128, metadata={"help": "At most this many held-out blocks are scored."})
    max_train_texts: int | None = field(
        default=None, metadata={"help": "Use at most this many corpus texts for training (quick runs); all if unset."}
    )
    mlm_probability: float = field(
        default=0.15, metadata={"help": "Fraction of tokens selected for prediction; of those 80%% become [MASK], "
                                "10%% a random token, 10%% stay (BERT/Bort)."},
    )
    masking: str = field(
        default="dynamic",
        metadata={"help": "'dynamic' (a new random mask every time a block is seen, RoBERTa/Bort) or 'static' (each "
                  "block's mask is a function of its tokens and --seed: reproducible across world sizes)."},
    )
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenisation."})
    compat_eval_dataset: str = field(
        default="embedded:rotten-tomatoes",
        metadata={"help": "With --compatible_with: labelled dataset (text and label columns) for BCT's compatibility "
                  "test after training (gallery embedded by the old model, queries by the student); 'none' skips it."},
    )
    compat_eval_gallery: int = field(default=2000, metadata={"help": "Compatibility test: gallery size (old model)."})
    compat_eval_queries: int = field(default=500, metadata={"help": "Compatibility test: queries (the student)."})
    compat_eval_k: int = field(default=10, metadata={"help": "Compatibility test: k of the kNN classification."})
    heldout: str | None = field(default=None, metadata={
        "help": "A run's heldout.json (docs/methods/09-heldout.md §9; `bortify run` sets it): the run's final test texts, dropped "
                "from the corpus before anything else and counted in report.json (not the MLM split of "
                "--heldout_fraction)."})

    def __post_init__(self):
        if self.seq_len < 8:
            raise ValueError(f"seq_len must be at least 8, got {self.seq_len}.")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ValueError(f"heldout_fraction must be in (0, 1), got {self.heldout_fraction}.")
        if not 0.0 < self.mlm_probability < 1.0:
            raise ValueError(f"mlm_probability must be in (0, 1), got {self.mlm_probability}.")
        if self.masking not in MASKING_MODES:
            raise ValueError(f"masking must be one of {MASKING_MODES}, got {self.masking!r}.")
        for name in ("compat_eval_gallery", "compat_eval_queries", "compat_eval_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")


@dataclass
class DistillationArguments(TrainingArguments):
    """TrainingArguments plus the knowledge-distillation fields below (docs/methods/02-pretraining.md §2)."""

    temperature: float = field(default=2.0, metadata={"help": "KD softmax temperature T (Bort: 2.0); the KL is scaled by T²."})
    w_mlm: float | None = field(
        default=None,
        metadata={"help": "Weight of the student's own MLM cross-entropy on the gold tokens. Default: 0.1 in logit "
                  "mode (Bort), 1.0 in representation mode (the teacher gives no token targets there)."},
    )
    w_kd: float = field(default=0.5, metadata={"help": "Logit mode: weight of T²·KL(teacher ‖ student) on masked tokens (Bort: 0.5)."})
    kd_reduction: str = field(
        default="textbook",
        metadata={"help": "Logit mode: 'textbook' (KL summed over the vocabulary) or 'bort_quirk' (Bort's released "
                  "code: softmax applied twice, KL averaged over the vocabulary, ~1/V as strong)."},
    )
    w_hidden: float = field(
        default=1.0,
        metadata={"help": "Representation mode: weight of the hidden-state MSE (through a learned projection when "
                  "widths differ; TinyBERT)."},
    )
    w_attn: float = field(
        default=1.0,
        metadata={"help": "Representation mode: weight of the self-attention relation KD (MiniLMv2 Q-Q/K-K/V-V) "
                  "between the student's last layer and --relation_teacher_layer."},
    )
    layer_map: str | None = field(
        default=None,
        metadata={"help": "Representation mode: comma-separated teacher layer (1-based) for each student layer, e.g. "
                  "'2,4,6' for a 3-layer student of a 6-layer teacher. Default: uniform (m·N/M)."},
    )
    relation_heads: int | None = field(
        default=None,
        metadata={"help": "Representation mode: relation heads for attention-relation KD; must divide both models' "
                  "widths. Default: the largest divisor of both widths not above the larger head count."},
    )
    relation_teacher_layer: int = field(
        default=-1, metadata={"help": "Representation mode: teacher layer (1-based; -1 = last) for relation KD."}
    )
    w_compat: float = field(
        default=1.0, metadata={"help": "With --compatible_with: weight of the compatibility loss between the student's "
                               "projected sentence embedding and the old model's (docs/methods/04-updates.md §4)."})
    compat_loss: str = field(
        default="cosine", metadata={"help": "With --compatible_with: 'cosine' (1 - cos, for cosine indexes; the "
                                    "default) or 'mse' (squared error, for Euclidean / dot-product indexes)."})
    compat_batch_size: int = field(
        default=32, metadata={"help": "With --compatible_with: corpus sentences per step for the compatibility loss."})
    compat_init: str = field(
        default="lstsq", metadata={"help": "With --compatible_with: the projection's start, 'lstsq' (ridge regression "
                                   "of the old embeddings on the initial student's pooled embeddings, one solve; ours) "
                                   "or 'random' (nn.Linear's default)."})
    compat_texts: int | None = field(
        default=None, metadata={"help": "With --compatible_with: corpus texts whose old-model embeddings are computed "
                                "(once, before training). Default: max_steps x compat_batch_size (each seen once)."})
    # Bort's optimisation defaults (docs/methods/02-pretraining.md §2) in place of Trainer's.
    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW peak learning rate (Bort: 1e-4)."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay, none on LayerNorm/bias (Bort: 0.01)."})
    warmup_steps: float = field(default=0.01, metadata={"help": "Warm-up steps; a value < 1 is a fraction of the run (Bort: 1%%)."})
    max_steps: int = field(default=1000, metadata={"help": "Optimiser steps to train."})
    logging_steps: float = field(default=10, metadata={"help": "Log the loss (and its parts) every N steps."})
    save_steps: float = field(default=200, metadata={"help": "Save a resumable checkpoint every N steps."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Keep at most this many checkpoints."})
    ddp_find_unused_parameters: bool | None = field(
        default=False, metadata={"help": "Keep False: every student parameter is used in each step."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep False: the collator needs every column."})

    def __post_init__(self):
        from bortify.hygiene import refuse_hub_training_args, training_arguments_defaults
        from bortify.pretraining.losses import KD_REDUCTIONS

        # No Trainer-side publishing: push_to_hub / hub_* / a networked report_to would upload behind `bortify
        # push`'s checks, and hub_token would be pickled into training_args.bin (bortify.hygiene).
        refuse_hub_training_args({f.name: getattr(self, f.name) for f in dataclasses.fields(TrainingArguments)},
                                 "pretrain", defaults=training_arguments_defaults(TrainingArguments))
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}.")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}.")
        if self.kd_reduction not in KD_REDUCTIONS:
            raise ValueError(f"kd_reduction must be one of {KD_REDUCTIONS}, got {self.kd_reduction!r}.")
        from bortify.compatible_embeddings.losses import COMPAT_LOSSES

        if self.compat_loss not in COMPAT_LOSSES:
            raise ValueError(f"compat_loss must be one of {COMPAT_LOSSES}, got {self.compat_loss!r}.")
        if self.compat_init not in ("lstsq", "random"):
            raise ValueError(f"compat_init must be 'lstsq' or 'random', got {self.compat_init!r}.")
        if self.compat_batch_size < 1 or (self.compat_texts is not None and self.compat_texts < 1):
            raise ValueError("compat_batch_size and compat_texts must be >= 1.")
        for name in ("w_kd", "w_hidden", "w_attn", "w_compat"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if self.w_mlm is not None and self.w_mlm < 0:
            raise ValueError("w_mlm must be >= 0.")
        if self.layer_map:
            try:
                [int(x) for x in str(self.layer_map).split(",")]
            except ValueError as exc:
                raise ValueError(f"layer_map must be comma-separated integers, got {self.layer_map!r}.") from exc
        super().__post_init__()

    def mlm_weight(self, kd_mode: str) -> float:
        return self.w_mlm if self.w_mlm is not None else (0.1 if kd_mode == "logit" else 1.0)

    def parsed_layer_map(self) -> list[int] | None:
        return [int(x) for x in str(self.layer_map).split(",")] if self.layer_map else None
