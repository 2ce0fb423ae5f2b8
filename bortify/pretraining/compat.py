"""`bortify pretrain --compatible_with OLD`: backward-compatible embeddings in pretraining (BCT; docs/methods/04-updates.md §4).

Besides the KD loss, each step embeds a batch of clean corpus sentences with the student — Dense(mean_pool(student))
through a learned projection to the old model's width, normalised like the old model — and pulls it onto the OLD
model's sentence embedding of the same text (`bortify.compatible_embeddings.losses.compatibility_loss`, weight `w_compat`).

- The old embeddings are computed ONCE, before training, for the sentences the run will use (`CompatData`), and
  travel with each batch as `compat_target`: the old model is never run inside the training loop.
- The sentences are the corpus's training texts (the held-out texts stay out), one text per example, truncated to
  --seq_len: the index the student must join holds single texts, not the packed blocks the MLM loss sees.
- `CompatCollator` wraps the MLM collator and adds `compat_input_ids` / `compat_attention_mask` / `compat_target`,
  cycling through the sentences in a seeded order (offset by the process index, so DDP ranks differ).
- At the end the run writes the sentence-transformers files (`bortify.compatible_embeddings.sentence`) next to the checkpoint and
  runs BCT's compatibility test on a labelled set (`compat_eval_dataset`, default embedded:rotten-tomatoes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn
from transformers import TrainerCallback

from bortify.compatible_embeddings.losses import POOLINGS, least_squares_projection
from bortify.compatible_embeddings.metric import run_compatibility_test, split_gallery_queries
from bortify.utils import BortifyError
from bortify.compatible_embeddings.sentence import (SentenceEncoder, SentenceSpec, load_sentence_encoder, read_sentence_folder,
                                     sentence_embedding, write_sentence_folder)


@dataclass
class CompatData:
    """The compatibility training set: the student's token ids of each text and the old model's embedding of it."""

    input_ids: list[list[int]]
    targets: torch.Tensor  # (N, D_old), computed once
    spec: SentenceSpec  # the old model's pooling / normalisation (the student's embedding follows it)
    seconds: float = 0.0  # time spent computing the targets


def old_spec(path: str) -> SentenceSpec:
    """The old model's sentence pipeline: its sentence-transformers modules when the folder has them; otherwise
    mean pooling + normalisation (what sentence-transformers' own models such as all-MiniLM-L6-v2 do; the packaged
    copy of that model ships without modules.json)."""
    read = read_sentence_folder(path)
    return read[1] if read else SentenceSpec("mean", True)


def load_old_encoder(path: str, batch_size: int = 64) -> SentenceEncoder:
    """The old model as a SentenceEncoder (its own tokenizer, pooling, Dense and Normalize)."""
    return load_sentence_encoder(path, default_spec=old_spec(path), batch_size=batch_size)


def build_compat_data(texts: Sequence[str], old: SentenceEncoder, tokenizer, max_length: int) -> CompatData:
    """Tokenise `texts` for the student and embed them once with the old model."""
    import time

    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise ValueError("no non-empty text to train compatibility on.")
    start = time.perf_counter()
    targets = old(texts)
    seconds = time.perf_counter() - start
    ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    return CompatData(ids, targets, old.spec, round(seconds, 2))


@dataclass
class CompatCollator:
    """`base`'s batch plus a batch of compatibility sentences (see the module docstring)."""

    base: Callable[[list], dict]
    data: CompatData
    batch_size: int
    pad_token_id: int
    seed: int = 0
    _order: list[int] = field(default_factory=list, repr=False)
    _generator: Any = field(default=None, repr=False)

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"compat_batch_size must be >= 1, got {self.batch_size}.")
        self._generator = torch.Generator().manual_seed(int(self.seed))

    def _next_indices(self) -> list[int]:
        out = []
        while len(out) < self.batch_size:
            if not self._order:
                self._order = torch.randperm(len(self.data.input_ids), generator=self._generator).tolist()
            out.append(self._order.pop())
        return out

    def fast_forward(self, batches: int) -> None:
        """Restart the seeded draw and skip the compat batches of the first `batches` training batches, so that a
        run resumed at step s (batches = s × gradient accumulation steps) sees the compat batches the uninterrupted
        run saw: the Trainer skips the MLM batches it already trained on without calling the collator."""
        self._generator = torch.Generator().manual_seed(int(self.seed))
        self._order = []
        for _ in range(batches):
            self._next_indices()

    def __call__(self, examples: list) -> dict:
        batch = dict(self.base(examples))
        idx = self._next_indices()
        rows = [self.data.input_ids[i] for i in idx]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.as_tensor(r, dtype=torch.long)
            mask[i, :len(r)] = 1
        batch.update(compat_input_ids=ids, compat_attention_mask=mask, compat_target=self.data.targets[idx])
        return batch


def labelled_texts(spec: str, text_column: str = "text", label_column: str = "label") -> tuple[list[str], list[int]]:
    """Texts and integer labels of a labelled dataset (first split; string labels numbered in sorted order)."""
    from bortify.data import DataError, load_any_dataset

    dsd = load_any_dataset(spec)
    ds = dsd["train"] if "train" in dsd else dsd[next(iter(dsd))]
    for col in (text_column, label_column):
        if col not in ds.column_names:
            raise DataError(f"compat_eval_dataset {spec!r} has no column {col!r} (it has {ds.column_names}).")
    labels = list(ds[label_column])
    if labels and not isinstance(labels[0], int):
        names = {name: i for i, name in enumerate(sorted({str(x) for x in labels}))}
        labels = [names[str(x)] for x in labels]
    return list(ds[text_column]), labels


def compatibility_evaluation(old: SentenceEncoder, new: SentenceEncoder, texts: Sequence[str], labels: Sequence[int],
                             *, gallery_size: int, query_size: int, knn_k: int, seed: int,
                             baseline: SentenceEncoder | None = None) -> dict:
    """BCT's empirical compatibility test (bortify.compatible_embeddings.metric) on a seeded gallery/query split."""
    split = split_gallery_queries(texts, labels, gallery_size, query_size, seed)
    return run_compatibility_test(old, new, split, knn_k=knn_k, recall_ks=(1, 5), baseline=baseline)


class CompatHead(nn.Module):
    """The learned projection (sentence-transformers' Dense) from the student's pooled embedding to the old model's
    width, with the old model's pooling / normalisation: embedding = normalize(W·pool(student(x)) + b)."""

    def __init__(self, student_width: int, old_width: int, spec: SentenceSpec):
        super().__init__()
        self.projection = nn.Linear(student_width, old_width)
        self.spec = spec

    def forward(self, encoder: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = encoder(input_ids=input_ids, attention_mask=attention_mask, return_dict=True).last_hidden_state
        return sentence_embedding(hidden, attention_mask, self.spec, self.projection)

    def save(self, folder: str | Path, state: dict | None = None) -> list[str]:
        """The sentence-transformers files of `folder` (whose root holds the student checkpoint); `state` is this
        module's state dict when the caller has it gathered (FSDP / ZeRO-3)."""
        projection = self.projection
        if state:
            projection = nn.Linear(self.projection.in_features, self.projection.out_features)
            projection.load_state_dict({k.split("projection.", 1)[-1]: v for k, v in state.items()})
        return write_sentence_folder(folder, hidden_size=self.projection.in_features, spec=self.spec,
                                     projection=projection)

    def load(self, folder: str | Path) -> None:
        """Load the projection back from a checkpoint's 2_Dense (resuming)."""
        read = read_sentence_folder(folder)
        if read is None or read[2] is None:
            raise ValueError(f"Checkpoint {folder} has no sentence-transformers Dense layer (2_Dense) but this run "
                             "trains one (--compatible_with): it was made by a different configuration.")
        self.projection.load_state_dict(read[2].state_dict())


@torch.no_grad()
def init_projection(head: CompatHead, encoder: nn.Module, data: CompatData, pad_token_id: int,
                    batch_size: int = 64) -> None:
    """Start the projection at the ridge-regression read-out of the old embeddings from the initial student's pooled
    embeddings of the same texts (bortify.compatible_embeddings.losses.least_squares_projection; docs/methods/04-updates.md §4)."""
    was_training = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    pooled = []
    for start in range(0, len(data.input_ids), batch_size):
        rows = data.input_ids[start:start + batch_size]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, :len(r)], mask[i, :len(r)] = torch.as_tensor(r), 1
        hidden = encoder(input_ids=ids.to(device), attention_mask=mask.to(device), return_dict=True).last_hidden_state
        pooled.append(POOLINGS[head.spec.pooling](hidden, mask.to(device)).float().cpu())
    encoder.train(was_training)
    weight, bias = least_squares_projection(torch.cat(pooled), data.targets.float())
    head.projection.weight.copy_(weight.to(head.projection.weight.device))
    head.projection.bias.copy_(bias.to(head.projection.bias.device))


def compat_record(old_model: str, head: CompatHead, data: CompatData, loss: str, w_compat: float,
                  evaluation: dict | None, eval_dataset: str | None, init: str | None = None) -> dict:
    """The pretrain report's `compatibility` part (bortify.reports.CompatibilityRecord)."""
    ev = evaluation or {}
    return {"old_model": old_model, "pooling": head.spec.pooling, "normalized": head.spec.normalize,
            "projection": [head.projection.in_features, head.projection.out_features], "loss": loss,
            "w_compat": w_compat, "init": init, "train_texts": len(data.input_ids), "targets_seconds": data.seconds,
            "eval_dataset": eval_dataset if evaluation else None,
            **{k: ev.get(k) for k in ("gallery", "queries", "knn_k", "criterion_met", "mean_cosine_new_old")},
            **{k: ev.get(k) or {} for k in ("new_old", "old_old", "new_new")}, "baseline": ev.get("baseline")}


# ---- the pretrain stage's steps (bortify.pretraining.pretrain calls these) -------------------------------------

class CompatError(BortifyError):
    """Bad --compatible_with input, reported before any training."""


@dataclass
class CompatPlan:
    """What `--compatible_with` needs, checked before any weight is loaded for training."""

    old_model: str  # as the user gave it
    old_path: str  # its local copy (or Hub name)
    spec: SentenceSpec
    eval_dataset: str | None = None
    eval_texts: list[str] | None = None
    eval_labels: list[int] | None = None


def plan_compat(compatible_with: str | None, eval_dataset: str) -> CompatPlan | None:
    """None without the option; otherwise the old model's pooling (from its sentence-transformers modules) and the
    labelled texts of the compatibility test, with a clear error for an old model or dataset that cannot be read."""
    if not compatible_with:
        return None
    from transformers import AutoConfig

    from bortify.data import DataError, resolve_model

    try:
        path = resolve_model(compatible_with)
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise CompatError(f"Cannot load --compatible_with {compatible_with!r}: {exc}. Give the old sentence encoder "
                          "as a local directory, a Hub name or an embedded model (bortify resources list).") from exc
    if not getattr(config, "hidden_size", None):
        raise CompatError(f"--compatible_with {compatible_with!r} ({config.model_type}) does not say its hidden_size; "
                          "give a transformers encoder (BERT-like) or a sentence-transformers folder around one.")
    plan = CompatPlan(compatible_with, str(path), old_spec(str(path)))
    if str(eval_dataset).lower() not in ("", "none"):
        try:
            plan.eval_texts, plan.eval_labels = labelled_texts(eval_dataset)
        except (DataError, OSError, ValueError) as exc:
            raise CompatError(f"Cannot load --compat_eval_dataset {eval_dataset!r}: {exc}. Give a labelled dataset "
                              "with text and label columns, or 'none' to skip the compatibility test.") from exc
        plan.eval_dataset = eval_dataset
    return plan


def old_encoder_for(plan: CompatPlan, teacher: nn.Module | None, teacher_path: str) -> SentenceEncoder:
    """The old model as a SentenceEncoder; the already loaded teacher is reused when the old model IS the teacher
    (an encoder loaded by AutoModel) and has no Dense of its own."""
    from transformers import AutoTokenizer

    read = read_sentence_folder(plan.old_path)
    same = Path(plan.old_path).resolve() == Path(teacher_path).resolve() if Path(plan.old_path).exists() else \
        plan.old_path == teacher_path
    if same and teacher is not None and hasattr(teacher, "encoder") and (read is None or read[0] == "") \
            and (read is None or read[2] is None):
        return SentenceEncoder(teacher, AutoTokenizer.from_pretrained(plan.old_path), plan.spec)
    return load_old_encoder(plan.old_path)


def evaluate_compat(plan: CompatPlan, head: CompatHead, student_encoder: nn.Module, tokenizer, old: SentenceEncoder,
                    data: CompatData, *, loss: str, w_compat: float, gallery: int, queries: int, knn_k: int,
                    seed: int, init: str | None = None) -> dict:
    """The report's `compatibility` part: settings plus BCT's compatibility test (when an eval dataset is set)."""
    evaluation = None
    if plan.eval_texts is not None:
        new = SentenceEncoder(student_encoder, tokenizer, head.spec, head.projection)
        evaluation = compatibility_evaluation(old, new, plan.eval_texts, plan.eval_labels, gallery_size=gallery,
                                              query_size=queries, knn_k=knn_k, seed=seed)
    return compat_record(plan.old_model, head, data, loss, w_compat, evaluation, plan.eval_dataset, init)


class CompatResume(TrainerCallback):
    """On a resumed run, fast-forwards the compat collator to the checkpoint's step (CompatCollator.fast_forward)."""

    def __init__(self, collator: CompatCollator):
        self.collator = collator

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step:
            self.collator.fast_forward(state.global_step * args.gradient_accumulation_steps)


@dataclass
class CompatRun:
    """A run's compatibility state between setup and report."""

    plan: CompatPlan
    collator: CompatCollator
    data: CompatData
    old: SentenceEncoder
    tokenizer: Any


def setup_compat(plan: CompatPlan, wrapper: nn.Module, base_collator, tokenizer, teacher: nn.Module,
                 teacher_path: str, data_args, training_args) -> CompatRun:
    """Before training: the old model's embeddings of the corpus's training texts (once), the student's CompatHead
    and the collator that adds a compat batch to each MLM batch."""
    from bortify.heldout import load_heldout
    from bortify.pretraining.data import split_corpus_texts

    old = old_encoder_for(plan, teacher, teacher_path)
    train_texts, _ = split_corpus_texts(data_args.corpus, text_column=data_args.text_column,
                                        split=data_args.corpus_split, config=data_args.corpus_config,
                                        heldout_fraction=data_args.heldout_fraction,
                                        max_train_texts=data_args.max_train_texts, seed=training_args.seed,
                                        heldout=load_heldout(getattr(data_args, "heldout", None)))
    n = training_args.compat_texts or training_args.max_steps * training_args.compat_batch_size \
        * training_args.gradient_accumulation_steps
    texts = train_texts.shuffle(seed=training_args.seed).select(range(min(n, len(train_texts))))[data_args.text_column]
    print(f"[bortify pretrain] --compatible_with {plan.old_model}: embedding {len(texts)} corpus texts with the old "
          "model (once)", flush=True)
    data = build_compat_data(texts, old, tokenizer, max_length=data_args.seq_len)
    student_cfg = wrapper.student.config
    spec = SentenceSpec(plan.spec.pooling, plan.spec.normalize,
                        min(plan.spec.max_seq_length, student_cfg.max_position_embeddings))
    wrapper.compat = CompatHead(student_cfg.hidden_size, int(data.targets.shape[1]), spec)
    if training_args.compat_init == "lstsq":
        init_projection(wrapper.compat, wrapper.student.bert, data, tokenizer.pad_token_id or 0)
    collator = CompatCollator(base_collator, data, training_args.compat_batch_size, tokenizer.pad_token_id or 0,
                              training_args.seed + training_args.process_index)
    return CompatRun(plan, collator, data, old, tokenizer)


def finish_compat(run: CompatRun, wrapper: nn.Module, data_args, training_args) -> dict:
    """After training (main process): the report's `compatibility` part, BCT's test included."""
    return evaluate_compat(run.plan, wrapper.compat, wrapper.student.bert, run.tokenizer, run.old, run.data,
                           loss=training_args.compat_loss, w_compat=training_args.w_compat,
                           gallery=data_args.compat_eval_gallery, queries=data_args.compat_eval_queries,
                           knn_k=data_args.compat_eval_k, seed=training_args.seed, init=training_args.compat_init)
