"""`bortify extract` arguments: one dataclass for the search, one for the error estimator ê.

Both are parsed by HfArgumentParser from `--config recipe.yaml` (its `extract:` section) plus flags, or built
from a dict by `bortify run` (bortify.recipes.args_from_dict). Validation happens here, before any work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from bortify.extraction.constraints import OBJECTIVES
from bortify.extraction.estimators import ESTIMATORS, TrainingBudget
from bortify.slicing import IMPORTANCE_KINDS
from bortify.utils import check_torch_threads, overwrite_field, torch_threads_field
from bortify.utils import help_field


@dataclass
class ExtractionArguments:
    output_dir: str = help_field("Directory for config.json (the winner), report.json, pareto.png and partial results.")
    source: str = help_field(
        "Source model: a Hub name (bert-large-uncased), a local checkpoint dir or config.json, or an embedded default "
        "(embedded:all-MiniLM-L6-v2). Only its config is read (AutoConfig), except by error=sliced-task, which slices "
        "its weights. Vocabulary, positions, token types, LayerNorm eps and the maximum point T come from it.",
        default="embedded:all-MiniLM-L6-v2")
    depths: list[int] = help_field("Candidate depths D (num_hidden_layers).", default_factory=lambda: [2, 4])
    heads: list[int] = help_field("Candidate attention head counts A; combinations with H %% A != 0 are dropped and counted.",
                             default_factory=lambda: [4, 8])
    hidden_sizes: list[int] = help_field("Candidate hidden sizes H.", default_factory=lambda: [128, 256])
    intermediate_sizes: list[int] = help_field("Candidate intermediate (feed-forward) sizes I.", default_factory=lambda: [512, 1024])
    epsilon: float = help_field("FPTAS approximation parameter ε in [0, 1): the winner's W is >= (1-ε) x the exhaustive best "
                           "on instances that satisfy the ABnC ordering; larger ε trains fewer candidates. 0 = exhaustive. "
                           "--max_error_increase / --latency_budget_ms state their own ε-guarantee.",
                           default=0.1)
    error: str = help_field(f"Error estimator ê: one of {', '.join(ESTIMATORS)}. none = rank by p and i only (seconds); "
                       "mlm = the paper's from-scratch masked-LM loss (needs a GPU budget to separate candidates); "
                       "sliced-task = teacher-sliced init + short task fine-tune, ê = dev error rate (separates on CPU).",
                       default="none")
    seq_len: int = help_field("Sequence length L at which the operation count i(ξ) (and measured latency) is taken.", default=128)
    cost: str = help_field("Inference cost i(ξ): 'ops' (multiply-add count, hardware-independent; the paper) or 'latency' "
                      "(measured median CPU forward time of a random-weight model on this machine; our addition). "
                      "--latency_budget_ms sets latency.",
                      default="ops")
    latency_batch_size: int = help_field("Batch size for cost=latency measurements.", default=8)
    latency_repeats: int = help_field("Timed forward passes per candidate for cost=latency (the median is kept).", default=3)
    latency_threads: int = help_field("CPU threads torch uses while measuring latency (cost=latency, latency_budget_ms); "
                                 "a latency budget holds at this thread count.", default=1)
    objective: Optional[str] = help_field(
        "What the search optimises: W (the paper's trade-off; ε-guarantee: W >= (1-ε) x the exhaustive best under "
        "the ABnC ordering), max_error_increase (set by --max_error_increase) or latency_budget (set by "
        "--latency_budget_ms or --min_speedup). Default: the mode of the bound given, else W.", default=None)
    max_error_increase: Optional[float] = help_field(
        "δ: pick the cheapest candidate (fewest multiply-adds; lowest measured latency with cost=latency) whose ê is "
        "<= ê(source) + δ (absolute). The source's own shape is estimated too, with the same estimator (with "
        "sliced-task: the source sliced to itself), so --error none is refused. Candidates are trained from the "
        "cheapest until one is within δ. Guarantee: the winner is within δ (measured); ε = 0 gives exactly the "
        "cheapest within δ; ε > 0 trains one candidate per ε-bucket of cost and the winner costs <= 1/(1-ε) x the "
        "cheapest within δ when ê does not increase with cost (ABnC ordering), with no bound otherwise.",
        default=None)
    latency_budget_ms: Optional[float] = help_field(
        "B: pick the lowest-ê candidate whose measured CPU latency (latency_batch_size x seq_len, latency_threads "
        "threads, median of latency_repeats) is <= B ms; implies cost=latency. Over-budget candidates are never "
        "trained; a budget below the fastest candidate is an error before any training. Guarantee: ε = 0 trains "
        "every candidate within budget (exact lowest ê); ε > 0 trains the slowest per ε-bucket of latency: exact "
        "when ê does not increase with latency (ABnC ordering), no bound on ê otherwise.", default=None)
    min_speedup: Optional[float] = help_field(
        "S: the latency budget as a speed-up over the source, measured here in the same run: B = latency(source) / "
        "S (the source's own shape, random weights, the same batch, length and threads). Portable across machines "
        "where --latency_budget_ms is not; same mode, search and guarantee. Give one of the two.", default=None)
    source_layers: Optional[int] = help_field("Inline source depth (overrides the loaded config). With source_heads, "
                                         "source_hidden, source_intermediate and source_vocab_size all set, the source "
                                         "config is not loaded at all (offline).", default=None)
    source_heads: Optional[int] = help_field("Inline source attention heads.", default=None)
    source_hidden: Optional[int] = help_field("Inline source hidden size.", default=None)
    source_intermediate: Optional[int] = help_field("Inline source intermediate size.", default=None)
    source_vocab_size: Optional[int] = help_field("Inline source vocabulary size (Bort: 50265, RoBERTa's BPE).", default=None)
    source_max_position_embeddings: Optional[int] = help_field("Inline source position table size (default 512).", default=None)
    source_type_vocab_size: Optional[int] = help_field("Inline source token-type table size (default 2).", default=None)
    source_layer_norm_eps: Optional[float] = help_field("Inline source LayerNorm epsilon (default 1e-12).", default=None)
    overwrite: bool = overwrite_field()
    progress: bool = help_field("Show a progress bar over candidates.", default=True)
    torch_threads: Optional[int] = torch_threads_field()  # 1 thread was ~10x faster per candidate on a shared CPU

    def __post_init__(self):
        if not self.output_dir:
            raise ValueError("--output_dir is required (where config.json and report.json go).")
        if not 0 <= self.epsilon < 1:
            raise ValueError(f"--epsilon must be in [0, 1); got {self.epsilon}.")
        if self.error not in ESTIMATORS:
            raise ValueError(f"--error must be one of {ESTIMATORS}; got {self.error!r}.")
        if self.cost not in ("ops", "latency"):
            raise ValueError(f"--cost must be 'ops' or 'latency'; got {self.cost!r}.")
        check_torch_threads(self.torch_threads)
        for name in ("seq_len", "latency_batch_size", "latency_repeats", "latency_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1; got {getattr(self, name)}.")
        self._resolve_objective()

    def _resolve_objective(self) -> None:
        """objective from the bound given (docs/methods/08-constraints.md §8); the bound's range; latency_budget implies cost=latency."""
        if self.latency_budget_ms is not None and self.min_speedup is not None:
            raise ValueError("--latency_budget_ms and --min_speedup are two ways to set one latency budget; give one.")
        budget = self.latency_budget_ms if self.min_speedup is None else self.min_speedup
        bounds = {"max_error_increase": self.max_error_increase, "latency_budget": budget}
        given = [mode for mode, bound in bounds.items() if bound is not None]
        if len(given) > 1:
            raise ValueError("--max_error_increase and --latency_budget_ms/--min_speedup are two different "
                             "objectives; give one.")
        if self.objective is None:
            self.objective = given[0] if given else "W"
        if self.objective not in OBJECTIVES:
            raise ValueError(f"--objective must be one of {OBJECTIVES}; got {self.objective!r}.")
        flag = {"max_error_increase": "--max_error_increase δ",
                "latency_budget": "--min_speedup S" if self.min_speedup is not None
                else "--latency_budget_ms B (or --min_speedup S)"}
        if self.objective != "W" and bounds[self.objective] is None:
            raise ValueError(f"--objective {self.objective} needs its bound: {flag[self.objective]}.")
        if given and given[0] != self.objective:
            raise ValueError(f"{flag[given[0]].split()[0]} is the bound of objective {given[0]}, not "
                             f"{self.objective}; drop it or set --objective {given[0]}.")
        if self.max_error_increase is not None and not self.max_error_increase >= 0:
            raise ValueError(f"--max_error_increase (δ, absolute ê) must be >= 0; got {self.max_error_increase}.")
        if self.min_speedup is not None and not self.min_speedup > 0:
            raise ValueError(f"--min_speedup must be > 0 (a speed-up over the source, e.g. 4); got {self.min_speedup}.")
        if self.latency_budget_ms is not None and not self.latency_budget_ms > 0:
            raise ValueError(f"--latency_budget_ms must be > 0; got {self.latency_budget_ms}.")
        if budget is not None:
            self.cost = "latency"


@dataclass
class EstimatorArguments:
    train_steps: int = help_field("Optimiser steps of each candidate's truncated training run (mlm, sliced-task).", default=40)
    train_batch_size: int = help_field("Batch size of those runs.", default=16)
    learning_rates: list[float] = help_field("Θ: learning rates tried per candidate; ê is the best over them.",
                                        default_factory=lambda: [6e-4, 1e-3])
    max_seq_length: int = help_field("Token length of training/dev examples.", default=48)
    clip_value: float = help_field("Weight clipping: weight matrices clamped to [-c, c] after each step (OSE's ABnC "
                              "conditions); 0 disables. Default above any MiniLM/BERT weight so sliced inits are kept.",
                              default=10.0)
    train_samples: int = help_field("Training examples drawn (sliced-task: from the task's train split; mlm: corpus lines).",
                               default=1000)
    eval_samples: int = help_field("Held-out examples for ê (taken from the train split; the test split is never used).",
                              default=400)
    task: str = help_field("sliced-task: labelled classification data (embedded name, local csv/json, or Hub name).",
                      default="embedded:rotten-tomatoes")
    text_column: str = help_field("Text column of the task / corpus.", default="text")
    label_column: str = help_field("Label column of the task.", default="label")
    corpus: str = help_field("mlm: raw-text corpus (embedded:corpus, a text file, or a Hub dataset).", default="embedded:corpus")
    corpus_config: Optional[str] = help_field("mlm: dataset config name of a Hub corpus (e.g. wikitext-103-raw-v1).", default=None)
    tokenizer: Optional[str] = help_field("mlm: tokenizer to use (default: the source).", default=None)
    importance: str = help_field("sliced-task: how bortify.slicing ranks what to keep: activation (Minitron, on a calibration "
                            "batch of task text), magnitude (weight norms) or first (naive truncation).",
                            default="activation")
    train_embeddings: bool = help_field("sliced-task: also train the (sliced) word embeddings; off = faster, they come "
                                   "from the teacher already.", default=False)
    seed: int = help_field("Seed for data order, masking and initialisation (same for every candidate).", default=0)
    heldout: Optional[str] = help_field("A run's heldout.json (docs/methods/09-heldout.md §9; `bortify run` sets it): its test texts "
                                   "are dropped from the estimator's data and counted in report.json.", default=None)

    def __post_init__(self):
        TrainingBudget.from_settings(self).check()  # the estimators' own validation (EstimatorError: a ValueError)
        if self.importance not in IMPORTANCE_KINDS:
            raise ValueError(f"--importance must be one of {', '.join(IMPORTANCE_KINDS)}; got {self.importance!r}.")
