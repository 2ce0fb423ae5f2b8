"""`bortify finetune --compatible_with OLD`: BCT's influence loss in fine-tuning (Shen et al. 2020; docs/methods/04-updates.md
§4.4).

OLD is a fine-tuned sequence classifier of the same task (labels matched by name, bortify.finetuning.old_model).
What "embedding" means here, for both models: the final-layer hidden state of the first token ([CLS]) — what
sentence-transformers' `cls` pooling returns and what a BERT classifier's head reads. The old model's *classifier*
w_old is everything its forward applies after that vector, frozen: for BertForSequenceClassification the pooler
(dense + tanh) then the classifier layer (dropout is off: eval mode). `OldHead` finds that split on the loaded old
model and checks it numerically (w_old(e_old(x)) must reproduce the old model's logits) before any training.

Each fine-tuning run (every θ of plain search, every Agora round) trains the student together with a projection
φ: H_new -> H_old (a Linear layer, started at the ridge-regression read-out of the old model's embeddings of the
train texts from the initial student's, as pretraining does), with

    L = CE(new head(e_new), y) + w_compat · CE(w_old(φ(e_new)), y)      (bortify.compatible_embeddings.losses.bct_finetune_loss)

In task distillation (`--mode distill`) the influence term is added to the distillation loss instead
(`InfluenceTerm`, inside bortify.finetuning.distill.DistillTrainer; rows without a gold label take the teacher's
distribution as the target: bortify.compatible_embeddings.losses.distill_influence_loss).

The old model's embeddings of the train texts are computed once (they serve the ridge start); the old head runs
inside the loss, frozen. The output folder gets the sentence-transformers files (Pooling cls, Dense φ) beside the
classifier checkpoint, and the report BCT's compatibility test on the task's test split (gallery embedded by the
old model, queries by the new one through φ).
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from transformers import Trainer

from bortify.compatible_embeddings.losses import bct_finetune_loss, distill_influence_loss, least_squares_projection
from bortify.compatible_embeddings.metric import run_compatibility_test, split_gallery_queries
from bortify.compatible_embeddings.sentence import SentenceEncoder, SentenceSpec, write_sentence_folder
from bortify.utils import BortifyError

EMBEDDING = "cls"  # the [CLS] final hidden state (module docstring)


class CompatFinetuneError(BortifyError):
    """Bad --compatible_with input for fine-tuning, reported before any training."""


class OldHead(nn.Module):
    """The old classifier's head as a frozen function of its [CLS] embedding, logits in the TASK's class order
    (`id_map[i]` = the task's index of old class i). `kind`: 'pooler+classifier' (BERT: pooler then a linear
    classifier), 'classifier' (a head that reads the first token of the sequence itself: RoBERTa/ELECTRA) or
    'linear' (a linear classifier on the vector)."""

    KINDS = ("pooler+classifier", "classifier", "linear")

    def __init__(self, model: nn.Module, id_map: Sequence[int], kind: str):
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"unknown old head kind {kind!r}; one of {self.KINDS}.")
        self.kind = kind
        self.pooler = getattr(model.base_model, "pooler", None) if kind == "pooler+classifier" else None
        self.classifier = model.classifier
        order = torch.empty(len(id_map), dtype=torch.long)
        order[torch.as_tensor(list(id_map))] = torch.arange(len(id_map))  # task class j <- old class order[j]
        self.register_buffer("order", order, persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):  # frozen: dropout stays off whatever the caller asks
        return super().train(False)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        seq = embedding.unsqueeze(1)  # (B, 1, H): heads that read the first token of a sequence
        if self.kind == "pooler+classifier":
            logits = self.classifier(self.pooler(seq))
        elif self.kind == "classifier":
            logits = self.classifier(seq)
        else:
            logits = self.classifier(embedding)
        return logits[:, self.order]


def _candidate_kinds(model: nn.Module) -> list[str]:
    classifier = getattr(model, "classifier", None)
    if not isinstance(classifier, nn.Module):
        return []
    if isinstance(classifier, nn.Linear):
        has_pooler = getattr(model.base_model, "pooler", None) is not None
        return ["pooler+classifier", "linear"] if has_pooler else ["linear"]
    return ["classifier"]


@torch.no_grad()
def find_old_head(model: nn.Module, tokenizer, id_map: Sequence[int], texts: Sequence[str], name: str,
                  max_length: int = 128) -> OldHead:
    """The OldHead whose output on the old model's [CLS] embeddings reproduces the old model's own logits (in task
    order) on `texts`; a CompatFinetuneError naming the fix when no split does."""
    model.eval()
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    batch = batch.to(next(model.parameters()).device)
    want = model(**batch).logits
    emb = model.base_model(**batch, return_dict=True).last_hidden_state[:, 0]
    for kind in _candidate_kinds(model):
        head = OldHead(model, id_map, kind).to(emb.device)
        try:
            got = head(emb)
        except (RuntimeError, TypeError, ValueError, IndexError):
            continue
        if got.shape == want.shape and torch.allclose(got, want[:, head.order], atol=1e-4, rtol=1e-3):
            return head
    raise CompatFinetuneError(
        f"--compatible_with {name!r} ({type(model).__name__}): bortify cannot split it into an encoder whose [CLS] "
        "state feeds a classifier head (a `classifier` module, with the encoder's pooler when it has one, must "
        "reproduce its logits). Give a BERT-family sequence classifier, e.g. a `bortify finetune` output.")


def cls_encoder(model: nn.Module, tokenizer, max_length: int, projection: nn.Module | None = None) -> SentenceEncoder:
    """The [CLS] embedding (optionally through φ) of a classifier's encoder, as a SentenceEncoder."""
    return SentenceEncoder(model.base_model, tokenizer, SentenceSpec(EMBEDDING, False, max_length), projection)


def add_projection_group(optimizer, projection: nn.Module):
    """`optimizer` with φ's parameters as one more group (no weight decay: φ starts at a ridge solution), added
    once: a Trainer subclass that trains φ with the model calls this from create_optimizer."""
    params = list(projection.parameters())
    if not any(p is q for g in optimizer.param_groups for p in g["params"] for q in params):
        optimizer.add_param_group({"params": params, "weight_decay": 0.0})
    return optimizer


@dataclass
class InfluenceTerm:
    """BCT's influence term inside task distillation (`--mode distill --compatible_with`, docs/methods/04-updates.md §4.4):
    φ (trained with the student: the trainer adds its group with `add_projection_group`), the frozen old head and
    the weight. `loss` takes the student's last hidden states, the batch's labels and the teacher's logits."""

    projection: nn.Module
    old_head: "OldHead"
    w_compat: float = 1.0

    def to(self, device) -> "InfluenceTerm":
        self.projection.to(device)
        self.old_head.to(device)
        return self

    def loss(self, last_hidden: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor,
             ignore_index: int = -100) -> torch.Tensor:
        return self.w_compat * distill_influence_loss(self.projection(last_hidden[:, 0]), self.old_head, labels,
                                                      teacher_logits, ignore_index=ignore_index)


class InfluenceTrainer(Trainer):
    """Trainer whose loss is `bct_finetune_loss`: the student's [CLS] embedding (its last hidden state) goes
    through the projection φ (trained with the model: one more optimizer group) into the frozen old head. Batches
    carry `labels` (or Agora's `soft_labels`); keep the columns (run_arguments(keep_columns=True))."""

    def __init__(self, *args, projection: nn.Module, old_head: OldHead, w_compat: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.projection, self.old_head, self.w_compat = projection, old_head, w_compat
        self.projection.to(self.args.device)
        self.old_head.to(self.args.device)

    def create_optimizer(self, model=None):
        return add_projection_group(super().create_optimizer(model), self.projection)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "labels" not in inputs and "soft_labels" not in inputs:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        soft = inputs.pop("soft_labels", None)
        labels = inputs.pop("labels", None)
        outputs = model(**inputs, output_hidden_states=True)
        embedding = outputs.hidden_states[-1][:, 0]
        parts = bct_finetune_loss(outputs.logits, self.projection(embedding), self.old_head,
                                  labels=None if soft is not None else labels, soft_targets=soft,
                                  w_compat=self.w_compat)
        return (parts.loss, outputs) if return_outputs else parts.loss


@dataclass
class CompatSettings:
    """What `--compatible_with` sets (from bortify.finetuning.arguments.CompatibleArguments)."""

    old_model: str
    w_compat: float = 1.0
    init: str = "lstsq"
    gallery: int = 2000
    queries: int = 500
    knn_k: int = 10


class CompatFinetune:
    """What `bortify finetune --compatible_with` adds to every fine-tuning run: the old classifier (labels by name),
    its frozen head, the old embeddings of the train texts (once) and φ's start; after training, the projection of
    each trained model (`projection_of`), the sentence-transformers files and BCT's test."""

    def __init__(self, settings: CompatSettings, task, student0: nn.Module, tokenizer, *, max_length: int = 128,
                 batch_size: int = 64):
        from bortify.finetuning.old_model import load_task_classifier

        self.settings, self.task, self.max_length = settings, task, max_length
        self.old = load_task_classifier(settings.old_model, task.label_names, "old model (--compatible_with)")
        if torch.cuda.is_available():
            self.old.model.to("cuda")
        col = task.text_columns[0]
        texts = [t for t in task.train[col] if t and t.strip()]
        self.head = find_old_head(self.old.model, self.old.tokenizer, self.old.id_map, texts[:8], settings.old_model,
                                  max_length)
        start = time.perf_counter()
        self.old_encoder = cls_encoder(self.old.model, self.old.tokenizer, max_length)
        old_train = self.old_encoder(texts)  # once: the ridge start's targets (and the refit's, choose_projection)
        self.targets_seconds = round(time.perf_counter() - start, 2)
        self.train_texts = len(texts)
        self._texts, self._old_train = texts, old_train
        self.projection0 = (self.ridge_projection(student0, tokenizer) if settings.init == "lstsq" else
                            nn.Linear(student0.config.hidden_size, int(old_train.shape[1])))
        self._projections: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.batch_size = batch_size

    def fit(self, model0, tokenizer, train_tok, theta: dict, *, epochs: float, max_steps: int = -1, seed: int = 42,
            desc: str | None = None, training: dict | None = None):
        """trainer.fit with BCT's loss: a copy of `model0` and of φ's start trained together on `train_tok`."""
        import copy
        import tempfile

        from transformers import DataCollatorWithPadding

        from bortify.finetuning.trainer import StepBar, run_arguments, theta_guard, theta_text

        model, projection = copy.deepcopy(model0), copy.deepcopy(self.projection0)
        with tempfile.TemporaryDirectory(prefix="bortify-bct-") as tmp:
            args = run_arguments(tmp, batch_size=int(theta["batch_size"]), learning_rate=float(theta["learning_rate"]),
                                 weight_decay=float(theta["weight_decay"]), warmup=float(theta["warmup_ratio"]),
                                 epochs=epochs, max_steps=max_steps, seed=seed,
                                 keep_columns=True,  # soft_labels is not a forward() argument
                                 extra=training)
            trainer = InfluenceTrainer(model=model, args=args, train_dataset=train_tok,
                                       data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer,
                                       callbacks=[StepBar(desc or f"BCT {theta_text(theta)}"),
                                                  theta_guard(theta, "the BCT fine-tuning run")],
                                       projection=projection, old_head=self.head, w_compat=self.settings.w_compat)
            trainer.train()
        model.eval()
        self.register(model, projection)
        return model

    def influence_term(self) -> InfluenceTerm:
        """A fresh copy of φ's start with the old head and weight, for one task-distillation run; hand the trained
        model and the term's φ to `register` afterwards."""
        import copy

        return InfluenceTerm(copy.deepcopy(self.projection0), self.head, self.settings.w_compat)

    def register(self, model: nn.Module, projection: nn.Module) -> None:
        """Record the φ trained with `model` (what projection_of, evaluate and write_sentence_files read)."""
        self._projections[model] = projection.cpu().eval()

    def projection_of(self, model: nn.Module) -> nn.Linear:
        if model not in self._projections:
            raise KeyError("this model was not trained by CompatFinetune.fit")
        return self._projections[model]

    def write_sentence_files(self, model: nn.Module, folder: Path) -> list[str]:
        """The sentence-transformers files of a fine-tuning output whose root holds `model`: Pooling cls -> Dense
        φ (no Normalize: the old [CLS] embeddings are not normalised; search them by cosine)."""
        spec = SentenceSpec(EMBEDDING, False, self.max_length)
        return write_sentence_folder(folder, hidden_size=model.config.hidden_size, spec=spec,
                                     projection=self.projection_of(model))

    def ridge_projection(self, model: nn.Module, tokenizer) -> nn.Linear:
        """The ridge read-out of the old [CLS] embeddings of the train texts from `model`'s own: φ's start (on the
        initial student) and its refit (on the trained one, choose_projection)."""
        weight, bias = least_squares_projection(cls_encoder(model, tokenizer, self.max_length)(self._texts),
                                                self._old_train)
        refit = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            refit.weight.copy_(weight)
            refit.bias.copy_(bias)
        return refit.eval()

    def choose_projection(self, model: nn.Module, tokenizer, seed: int) -> dict:
        """Ours (docs/methods/04-updates.md §4.4, "Which φ ships"): the influence loss pins φ(e_new) only to the old head's
        decision regions, not to the old space's geometry, and a trained φ can lose the kNN compatibility its ridge
        start had. So the φ trained with the model competes with the ridge refit on the final encoder, by BCT's
        test on the DEV split: new→old kNN accuracy + recall@1 (both: a φ whose queries land far from the gallery
        can keep a fair 10-NN vote while its nearest neighbour is below chance; a tie keeps the trained one); the
        winner is what `projection_of`, the test and the sentence files use. Returns the record of the choice."""
        col = self.task.text_columns[0]
        dev = self.task.dev
        texts, labels = list(dev[col]), [int(x) for x in dev["label"]]
        if len(texts) < 2:
            return {"chosen": "trained", "why": "dev has fewer than 2 rows"}
        device = next(model.parameters()).device
        split = split_gallery_queries(texts, labels, self.settings.gallery, self.settings.queries, seed)
        candidates = {"trained": self.projection_of(model), "refit": self.ridge_projection(model, tokenizer)}
        old_cache: dict[tuple, torch.Tensor] = {}  # the old model embeds dev's gallery and queries once

        def old(texts):
            key = tuple(texts)
            if key not in old_cache:
                old_cache[key] = self.old_encoder(texts)
            return old_cache[key]
        scores = {}
        for name, phi in candidates.items():
            table = run_compatibility_test(old, cls_encoder(model, tokenizer, self.max_length, phi.to(device)), split,
                                           knn_k=self.settings.knn_k, recall_ks=(1,))
            phi.cpu()
            scores[name] = {k: table["new_old"][k] for k in ("knn_accuracy", "recall@1")}
        total = {name: sc["knn_accuracy"] + sc["recall@1"] for name, sc in scores.items()}
        chosen = "refit" if total["refit"] > total["trained"] else "trained"
        self.register(model, candidates[chosen])
        return {"chosen": chosen, "dev_new_old": scores, "dev_queries": len(split.query_texts)}

    def evaluate(self, model: nn.Module, tokenizer, dataset: str, seed: int) -> dict:
        """The report's `compatibility` record: settings, which φ ships (choose_projection, on dev) and BCT's
        compatibility test on the task's test split."""
        choice = self.choose_projection(model, tokenizer, seed)
        col = self.task.text_columns[0]
        test = self.task.test
        texts, labels = list(test[col]), [int(x) for x in test["label"]]
        projection = self.projection_of(model)
        new = cls_encoder(model, tokenizer, self.max_length, projection.to(next(model.parameters()).device))
        evaluation = None
        if len(texts) >= 2:
            split = split_gallery_queries(texts, labels, self.settings.gallery, self.settings.queries, seed)
            evaluation = run_compatibility_test(self.old_encoder, new, split, knn_k=self.settings.knn_k,
                                                recall_ks=(1, 5))
        projection.cpu()
        ev = evaluation or {}
        return {"old_model": self.settings.old_model, "pooling": EMBEDDING, "normalized": False,
                "projection": [projection.in_features, projection.out_features], "loss": "influence",
                "w_compat": self.settings.w_compat, "init": self.settings.init, "train_texts": self.train_texts,
                "targets_seconds": self.targets_seconds, "old_head": self.head.kind, "projection_choice": choice,
                "old_labels_remapped": self.old.remapped,
                "eval_dataset": f"{dataset} (test split)" if evaluation else None,
                **{k: ev.get(k) for k in ("gallery", "queries", "knn_k", "criterion_met", "mean_cosine_new_old")},
                **{k: ev.get(k) or {} for k in ("new_old", "old_old", "new_new")}, "baseline": None}
